"""`make up`: the whole system, each service its own process, until Ctrl-C.

Order: tokens (generated on first start, hashes only in the store) → the demo policy (trained,
registered and exported on a fresh clone; routed) → Redis check → paper exchange → local
Alpaca-compatible market-data server (the synthetic market replayed at a visible pace) → Triton
→ gateway (auth on, subscribed to Redis) → monitoring (`_start_monitoring`: the alert context webhook,
Alertmanager, Prometheus on a prometheus.yml rendered for these ports; skipped with one warning when the
Debian binaries are missing, or with --no-monitoring) → master agent service (metrics on master_metrics_port)
→ trading service (alpaca-py against the local market-data server) → Dagster webserver + daemon → MLflow UI. Every URL goes to
stdout and to `<MARLOPS_HOME>/up.json` (read by `marlops status`); Ctrl-C / SIGTERM stops every
process it started, in reverse order.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from contracts.config import RLConfig
from contracts.urls import redact_url
from market_data.source import load_market, trading_symbols
from market_data.synthetic import synthetic_sectors
from marlops.errors import StackError
from marlops.net import http_ok
from marlops.paths import StatePaths
from marlops.processes import ManagedProcess, ProcessGroup
from marlops.routing import PolicyRef, RoutingChange
from marlops.routing_store import RoutingStore
from marlops.stack import PAPER_KEY_ID, PAPER_SECRET
from marlops.up_options import ALERT_CONTEXT_TOKEN, UpOptions

logger = logging.getLogger(__name__)

DEMO_SOURCE = "synthetic:planted-alpha"
UP_PRINCIPAL = "marlops-up"
TRADING_NAME = "up"
# The local paper exchange and market-data server accept the same local key pair (not a secret:
# neither reaches a real account); real Alpaca keys come only from APCA_API_KEY_ID / APCA_API_SECRET_KEY.
LOCAL_PAPER_KEYS = (PAPER_KEY_ID, PAPER_SECRET)
ALPACA_PAPER_URL = "https://paper-api.alpaca.markets"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _marlops(*args: str) -> list[str]:
    return [sys.executable, "-m", "marlops.cli", *args]


def redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def ensure_demo_policy(paths: StatePaths, config: RLConfig, options: UpOptions) -> dict[str, Any]:
    """The routing table in force; on a fresh clone the demo policy is trained, registered, exported, routed."""
    from marlops.context import PipelineContext
    from serving.model_repository import exported_versions

    routing = RoutingStore(paths.state_url)
    try:
        table = routing.read()
        if table.policies.get("production") is not None:
            logger.info("routing table revision %d: %s", table.revision,
                        {k: str(v) for k, v in table.policies.items()})
            return table.to_dict()
        ctx = PipelineContext.create(paths, config)
        names = ("symbol_agent", "sl_fallback", "master_agent")
        exported = {m: exported_versions(ctx.model_repository, m) for m in names}
        go = True
        if not all(exported.values()):
            print("==> no exported policy yet: training the demo policy (one-off, a few minutes)", flush=True)
            exported, go = _train_demo(ctx, options)
        versions = {m: max(v) for m, v in exported.items()}
        change = RoutingChange(
            policies={"production": PolicyRef("symbol_agent", versions["symbol_agent"]),
                      "sl_fallback": PolicyRef("sl_fallback", versions["sl_fallback"]),
                      "master": PolicyRef("master_agent", versions["master_agent"])},
            routes={"*": ("production" if go else "sl_fallback", None)},
        )
        reason = ("initial routing of the demo policy (passed Go/No-Go)" if go else
                  "initial routing: the demo policy failed Go/No-Go, every symbol on sl_fallback")
        table = routing.apply(change, principal=UP_PRINCIPAL, reason=reason)
        logger.info("routing table set: %s", reason)
        return table.to_dict()
    finally:
        routing.close()


def _train_demo(ctx: Any, options: UpOptions) -> tuple[dict[str, list[int]], bool]:
    from marlops.pipeline import (
        TrainingSettings,
        check_bars,
        deploy_to_triton,
        fit_spec,
        register_candidate,
        train_candidate,
        validate_candidate,
    )

    bars = load_market(DEMO_SOURCE, seed=options.seed, n_symbols=options.symbols, n_days=options.days)
    check_bars(bars)
    spec = fit_spec(bars, ctx.config, seed=options.seed)
    candidate = train_candidate(bars, spec, ctx, training=TrainingSettings(seed=options.seed,
                                                                           iterations=options.iterations))
    registered = register_candidate(candidate, ctx)
    verdict = validate_candidate(bars, registered, ctx).evaluation.report.verdict
    print(f"==> demo policy registered {registered.versions()}; Go/No-Go: {'GO' if verdict.passed else 'NO-GO'}",
          flush=True)
    deployment = deploy_to_triton(registered, ctx, smoke_test=False)
    return {m: [v] for m, v in deployment.models.items()}, verdict.passed


def _env(paths: StatePaths, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MARLOPS_HOME": str(paths.root), "PYTHONUNBUFFERED": "1", **extra})
    return env


def start_system(paths: StatePaths, config: RLConfig, options: UpOptions, group: ProcessGroup,
                 config_dir: str = "config/rl") -> dict[str, str]:
    """Start every service into `group`; the URLs by name."""
    from gateway.token_file import bootstrap_token_store

    live = _live_market(paths, options) if options.live else None  # its settings are checked before anything starts
    bootstrap_token_store(paths.token_store, paths.tokens_dir)
    routing = ensure_live_policy(paths) if options.live else ensure_demo_policy(paths, config, options)
    redis_url = options.redis_url or config.serving.directive_bus.redis_url
    use_redis = redis_reachable(redis_url)
    if not use_redis:
        logger.warning("Redis at %s is not reachable: the master agent runs inside the trading service and sends "
                       "directives to the gateway over HTTP", redact_url(redis_url))
    logs = paths.logs_dir
    triton = config.serving.triton
    t_http, t_grpc, t_metrics = (options.triton_http or triton.http_port, options.triton_grpc or triton.grpc_port,
                                 options.triton_metrics or triton.metrics_port)
    urls = {
        "triton_http": f"http://127.0.0.1:{t_http}",
        "triton_grpc": f"127.0.0.1:{t_grpc}",
        "triton_metrics": f"http://127.0.0.1:{t_metrics}/metrics",
        "gateway": f"http://127.0.0.1:{options.gateway_port}",
        "console": f"http://127.0.0.1:{options.gateway_port}/console",
        "trading_metrics": f"http://127.0.0.1:{options.trading_metrics_port}/metrics",
    }
    if use_redis:
        urls["redis"] = redact_url(redis_url)  # printed and written to up.json: never a password
    if live is not None:
        market = live
    else:
        market = _local_market(paths, config, options, routing, group, urls)
    from serving.triton_process import TritonServer

    repository = paths.model_repository(triton.model_repository)
    server = TritonServer(repository, http_port=t_http, grpc_port=t_grpc, metrics_port=t_metrics,
                          workdir=paths.triton_workdir)
    group.start(ManagedProcess(
        "tritonserver", server.command(), logs / "tritonserver.log", env=server.environment(),
        ready=http_ok(f"{urls['triton_http']}/v2/health/ready"), ready_timeout_s=triton.startup_timeout_s))
    gateway_args = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(options.gateway_port),
                    "--broker-url", market.broker_url, "--audit-url", paths.audit_url,
                    "--tokens-file", str(paths.token_store),
                    "--risk-config", str((Path(config_dir) / "risk_overlays.yaml").resolve())]
    if market.sectors_file is not None:
        gateway_args += ["--sectors-file", str(market.sectors_file)]
    # The bus URL may carry a password: it goes to the services through their environment, never argv.
    bus_env = {"MARLOPS_GATEWAY_DIRECTIVE_BUS_URL": redis_url, "MARLOPS_DIRECTIVE_BUS_URL": redis_url} if use_redis else {}
    group.start(ManagedProcess("gateway", gateway_args, logs / "gateway.log",
                               env={**market.env, **bus_env, "MARLOPS_GATEWAY_STATE_URL": paths.state_url},
                               cwd=paths.project_root, ready=http_ok(f"{urls['gateway']}/healthz")))
    # Monitoring before the master and trading services: they start working (the replay runs) once up.
    if options.with_monitoring:
        scrape = {"marlops-gateway": options.gateway_port, "marlops-trading": options.trading_metrics_port,
                  "triton": t_metrics}
        if use_redis:
            scrape["marlops-master"] = options.master_metrics_port
        _start_monitoring(paths, options, group, urls, scrape, config_dir)
    if use_redis:
        group.start(ManagedProcess(
            "master agent service", _marlops("--config-dir", config_dir, "master",
                                             "--gateway-url", urls["gateway"], "--triton-url", urls["triton_grpc"],
                                             "--protocol", "grpc", "--model-repository", str(repository),
                                             "--gateway-token-file", str(paths.tokens_dir / "trader.token"),
                                             "--metrics-port", str(options.master_metrics_port)),
            logs / "master.log", env={**_env(paths), **bus_env}))
        urls["master_metrics"] = f"http://127.0.0.1:{options.master_metrics_port}/metrics"
    trade_args = _marlops("--config-dir", config_dir, "trade", "--source", "alpaca", "--symbols",
                          ",".join(market.symbols), "--gateway-url", urls["gateway"],
                          "--triton-url", urls["triton_grpc"], "--triton-http-url", urls["triton_http"],
                          "--metrics-port", str(options.trading_metrics_port), "--name", market.trading_name,
                          *market.trade_args)
    group.start(ManagedProcess("trading service", trade_args, logs / "trading.log", env={**market.env, **bus_env},
                               cwd=paths.project_root, ready=http_ok(urls["trading_metrics"])))
    if options.with_dagster:
        from marlops.demo import dagster_env, write_dagster_instance

        write_dagster_instance(paths)
        denv = dagster_env(paths)
        urls["dagster_ui"] = f"http://127.0.0.1:{options.dagster_port}"
        group.start(ManagedProcess(
            "dagster webserver", [_bin("dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p",
                                  str(options.dagster_port)],
            logs / "dagster-webserver.log", env=denv, cwd=paths.project_root,
            ready=http_ok(f"{urls['dagster_ui']}/server_info"), ready_timeout_s=180))
        group.start(ManagedProcess("dagster daemon", [_bin("dagster-daemon"), "run", "-w", "workspace.yaml"],
                                   logs / "dagster-daemon.log", env=denv, cwd=paths.project_root))
    if options.with_mlflow:
        urls["mlflow_ui"] = f"http://127.0.0.1:{options.mlflow_port}"
        # One worker: a local UI for its operator; mlflow's default 4 uvicorn workers cost a core at start.
        group.start(ManagedProcess(
            "mlflow ui", [_bin("mlflow"), "ui", "--backend-store-uri", paths.mlflow_uri, "--host", "127.0.0.1",
                          "--port", str(options.mlflow_port), "--workers", "1"],
            logs / "mlflow.log", env=_env(paths), ready=http_ok(f"{urls['mlflow_ui']}/health"), ready_timeout_s=180))
    record = {"urls": urls, "pids": {p.name: p.pid for p in group.processes}, "tokens": boot_paths(paths),
              "symbols": list(market.symbols), "redis": use_redis, "trading_name": market.trading_name,
              "live": options.live}
    (paths.root / "up.json").write_text(json.dumps(record, indent=2))
    return urls




def monitoring_missing() -> list[str]:
    """The Prometheus / Alertmanager binaries that are not installed."""
    from monitoring.alertmanager_launcher import find_alertmanager
    from monitoring.prometheus_launcher import find_prometheus

    return [name for name, found in (("prometheus", find_prometheus()), ("alertmanager", find_alertmanager()))
            if found is None]


def _read_only_token(paths: StatePaths) -> Path:
    """The token the alert context webhook reads the gateway with: the viewer's (it only reads); a home bootstrapped
    before viewer tokens existed has none, so the trader's until one is saved there."""
    viewer = paths.tokens_dir / "viewer.token"
    if viewer.is_file():
        return viewer
    logger.warning("no %s: the alert context webhook reads the gateway with the trader token (save the output of "
                   "`marlops token create --principal local-viewer --role viewer` there, 0600, to give it less)", viewer)
    return paths.tokens_dir / "trader.token"


def ensure_secret_token(path: Path) -> Path:
    """A random bearer token in `path`, created on first start 0600 (in a 0700 folder) and kept afterwards;
    never printed, logged or put on a command line (the processes get the file's path)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    logger.info("created the alert context webhook's bearer token in %s (owner-only)", path)
    return path


def _start_monitoring(paths: StatePaths, options: UpOptions, group: ProcessGroup, urls: dict[str, str],
                      scrape: dict[str, int], config_dir: str = "config/rl") -> None:
    """The alert context webhook (alerts to <home>/alerts/inbox.jsonl, and to Slack/PagerDuty when their settings are
    in the environment or .env), the playbook runner (marlops/playbooks), Alertmanager pointed at both, Prometheus
    scraping `scrape` (job -> port) with the shipped rules."""
    from monitoring.prometheus_launcher import find_prometheus, prometheus_command, render_config, write_config

    missing = monitoring_missing()
    if missing:
        logger.warning("%s not installed: starting without Prometheus, Alertmanager and the alert context webhook "
                       "(install them with `sudo bash scripts/install_monitoring.sh`)", " and ".join(missing))
        return
    logs = paths.logs_dir
    token_file = ensure_secret_token(paths.tokens_dir / ALERT_CONTEXT_TOKEN)
    urls["alert_context"] = f"http://127.0.0.1:{options.alert_context_port}"
    urls["alert_inbox"] = str(paths.root / "alerts" / "inbox.jsonl")
    prefix = "MARLOPS_ALERT_CONTEXT_"
    context_env = _env(paths, **{f"{prefix}TOKEN_FILE": str(token_file), f"{prefix}INBOX_FILE": urls["alert_inbox"],
                                 f"{prefix}GATEWAY_URL": urls["gateway"],
                                 f"{prefix}GATEWAY_TOKEN_FILE": str(_read_only_token(paths)),
                                 "MARLOPS_STATE_URL": paths.state_url})
    group.start(ManagedProcess(
        "alert context webhook", [sys.executable, "-m", "monitoring.alert_context", "--host", "127.0.0.1",
                                  "--port", str(options.alert_context_port)],
        logs / "alert_context.log", env=context_env, cwd=paths.project_root,
        ready=http_ok(f"{urls['alert_context']}/healthz")))
    # The playbook runner acts on the gateway as the risk officer (safe mode and unwinding need one); Alertmanager
    # presents it the same bearer token as the context webhook.
    urls["playbooks"] = f"http://127.0.0.1:{options.playbooks_port}"
    pb = "MARLOPS_PLAYBOOKS_"
    group.start(ManagedProcess(
        "playbook runner", [sys.executable, "-m", "marlops.playbooks", "--host", "127.0.0.1",
                            "--port", str(options.playbooks_port)],
        logs / "playbooks.log", cwd=paths.project_root,
        env=_env(paths, **{f"{pb}TOKEN_FILE": str(token_file), f"{pb}GATEWAY_URL": urls["gateway"],
                           f"{pb}GATEWAY_TOKEN_FILE": str(paths.tokens_dir / "risk_officer.token"),
                           f"{pb}CONFIG_DIR": str(Path(config_dir).resolve()), "MARLOPS_STATE_URL": paths.state_url}),
        ready=http_ok(f"{urls['playbooks']}/healthz")))
    urls["alertmanager"] = f"http://127.0.0.1:{options.alertmanager_port}"
    group.start(ManagedProcess(
        "alertmanager", [sys.executable, "-m", "monitoring.alertmanager_launcher", "--listen",
                         f"127.0.0.1:{options.alertmanager_port}", "--run-dir", str(paths.root / "alertmanager")],
        logs / "alertmanager.log", cwd=paths.project_root,
        env=_env(paths, MARLOPS_ALERT_CONTEXT_URL=urls["alert_context"], MARLOPS_ALERT_CONTEXT_TOKEN_FILE=str(token_file),
                 MARLOPS_PLAYBOOKS_URL=urls["playbooks"]),
        ready=http_ok(f"{urls['alertmanager']}/-/ready")))
    urls["prometheus"] = f"http://127.0.0.1:{options.prometheus_port}"
    run_dir = paths.root / "prometheus"
    config = write_config(render_config(scrape, options.alertmanager_port,
                                        drop=[job for job in ("marlops-master",) if job not in scrape],
                                        scrape_interval=options.scrape_interval), run_dir)
    binary = find_prometheus()
    assert binary is not None  # monitoring_missing() said so
    group.start(ManagedProcess(
        "prometheus", prometheus_command(binary, config, run_dir / "data", f"127.0.0.1:{options.prometheus_port}"),
        logs / "prometheus.log", env=_env(paths), cwd=run_dir, ready=http_ok(f"{urls['prometheus']}/-/ready")))


@dataclass(frozen=True)
class Market:
    """Where bars and orders go: the local paper exchange + market-data server, or Alpaca."""

    broker_url: str
    symbols: tuple[str, ...]
    env: dict[str, str]  # of the gateway and the trading service
    trade_args: tuple[str, ...]
    trading_name: str
    sectors_file: Path | None = None


def _local_market(paths: StatePaths, config: RLConfig, options: UpOptions, routing: dict[str, Any],
                  group: ProcessGroup, urls: dict[str, str]) -> Market:
    """The paper exchange and the local market-data server replaying the synthetic market."""
    urls["paper_exchange"] = f"http://127.0.0.1:{options.exchange_port}"
    urls["market_data"] = f"http://127.0.0.1:{options.market_data_port}"
    bars = load_market(DEMO_SOURCE, seed=options.seed, n_symbols=options.symbols, n_days=options.days)
    symbols = trading_symbols(bars)
    start = _replay_start(paths, config, bars, routing)
    stamps = pd.DatetimeIndex(sorted(bars["timestamp"].unique()))
    warmup = int((stamps < start).sum())
    if warmup >= len(stamps):
        warmup = len(stamps) - 1
        logger.warning("the demo replay already reached the end of the synthetic market (the trading service's cursor "
                       "is at %s): nothing new will trade; `make clean` starts the demo over", stamps[-1])
    else:
        print(f"==> replaying {len(stamps) - warmup} bars of the synthetic market from {start.date()} at "
              f"{options.bars_per_second:g} bar/s", flush=True)
    # The local servers' key pair is not a secret: neither reaches a real account.
    env = _env(paths, APCA_API_KEY_ID=LOCAL_PAPER_KEYS[0], APCA_API_SECRET_KEY=LOCAL_PAPER_KEYS[1],
               APCA_DATA_URL=urls["market_data"], APCA_DATA_STREAM_URL=f"ws://127.0.0.1:{options.market_data_port}/v2/iex")
    group.start(ManagedProcess(
        "paper exchange", [sys.executable, "-m", "paper_exchange", "--host", "127.0.0.1",
                           "--port", str(options.exchange_port)],
        paths.logs_dir / "paper_exchange.log", env=env,
        ready=http_ok(f"{urls['paper_exchange']}/v2/clock", {"APCA-API-KEY-ID": LOCAL_PAPER_KEYS[0],
                                                             "APCA-API-SECRET-KEY": LOCAL_PAPER_KEYS[1]})))
    group.start(ManagedProcess(
        "market-data server", _marlops("market-data", "--source", DEMO_SOURCE, "--port", str(options.market_data_port),
                                       "--symbols", str(options.symbols), "--days", str(options.days),
                                       "--warmup-bars", str(warmup),
                                       "--bars-per-second", str(options.bars_per_second), "--wait-for-subscriber"),
        paths.logs_dir / "market_data.log", env=env, ready=http_ok(f"{urls['market_data']}/healthz")))
    sectors = paths.root / "sectors.json"
    sectors.write_text(json.dumps(synthetic_sectors(symbols), indent=1))
    return Market(broker_url=urls["paper_exchange"], symbols=symbols, env=env,
                  trade_args=("--sim-exchange", urls["paper_exchange"]), trading_name=TRADING_NAME,
                  sectors_file=sectors)


def _live_market(paths: StatePaths, options: UpOptions) -> Market:
    """Alpaca itself: keys and endpoints from the environment or `.env` (never a flag)."""
    from marlops.settings import MarlopsSettings

    settings = MarlopsSettings.load(paths.project_root)
    if settings.apca_api_key_id is None or settings.apca_api_secret_key is None:
        raise StackError("--live needs APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment or .env "
                         "(see .env.example and the README's 'Trade live against an Alpaca paper account')")
    if not options.tickers:
        raise StackError("--live needs --tickers AAPL,MSFT,... (the universe the routed policy was trained on)")
    broker = settings.apca_api_base_url or ALPACA_PAPER_URL
    if "paper" not in broker and not options.real_money:
        raise StackError(f"APCA_API_BASE_URL={redact_url(broker)} is not a paper endpoint: orders would trade REAL "
                         "money. Use a paper account, or say so with --real-money")
    if "paper" not in broker:
        logger.warning("APCA_API_BASE_URL=%s is not a paper endpoint: trading REAL money (--real-money)",
                       redact_url(broker))
    return Market(broker_url=broker, symbols=options.tickers, env=_env(paths), trade_args=(),
                  trading_name="live")


def ensure_live_policy(paths: StatePaths) -> dict[str, Any]:
    routing = RoutingStore(paths.state_url)
    try:
        table = routing.read()
    finally:
        routing.close()
    if table.policies.get("production") is None:
        raise StackError("--live trades only a routed policy: train and export one on your bars (`marlops demo "
                         "--source my_bars.parquet`), then `marlops route set --policy production=symbol_agent/N ...`")
    return table.to_dict()


def boot_paths(paths: StatePaths) -> dict[str, str]:
    return {p.stem: str(p) for p in sorted(paths.tokens_dir.glob("*.token"))}


def _replay_start(paths: StatePaths, config: RLConfig, bars: pd.DataFrame, routing: dict[str, Any]) -> pd.Timestamp:
    """The demo replays the held-out part (the bars the production policy never trained on), resuming
    after the last bar the `up` trading service decided: the gateway decides each bar once, ever."""
    from marlops.policy_router import version_holdout_start
    from marlops.trading_runtime import public_key_path
    from marlops.trading_state import TradingStateStore

    stamps = pd.DatetimeIndex(sorted(bars["timestamp"].unique()))
    cursors = TradingStateStore(paths.state_url)
    try:
        cursor = cursors.load(TRADING_NAME)
    finally:
        cursors.close()
    if cursor is not None and cursor.bar_timestamp is not None:
        later = stamps[stamps > cursor.bar_timestamp]
        return later[0] if len(later) else stamps[-1] + pd.Timedelta(seconds=1)
    production = routing.get("policies", {}).get("production")
    if production:
        repository = paths.model_repository(config.serving.triton.model_repository)
        start = version_holdout_start(repository, PolicyRef(production["model"], int(production["version"])),
                               public_key_path(paths))
        if start is not None and stamps[0] < start <= stamps[-1]:
            return start
    return stamps[max(0, len(stamps) - 120)]


class Interrupted(Exception):
    """Ctrl-C / SIGTERM while the system was starting."""


def _interrupt_while_starting(stop: threading.Event, starting: threading.Event) -> Any:
    def handler(signum: int, _frame: object) -> None:
        stop.set()
        if starting.is_set():  # training or a process start in progress: abandon it now
            raise Interrupted(f"signal {signum} while starting")

    return handler


def running_pids(paths: StatePaths) -> list[int]:
    """Processes of an earlier `make up` of this MARLOPS_HOME that are still alive (from up.json)."""
    record = paths.root / "up.json"
    if not record.is_file():
        return []
    try:
        pids = [int(p) for p in json.loads(record.read_text()).get("pids", {}).values() if p]
    except (ValueError, AttributeError):
        return []
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.append(pid)
    return alive


def run_up(paths: StatePaths, config: RLConfig, options: UpOptions, config_dir: str = "config/rl") -> int:
    leftover = running_pids(paths)
    if leftover:
        logger.error("another `make up` of %s still runs (pids %s, from %s): stop it first (Ctrl-C in its terminal, "
                     "or kill those pids)", paths.root, leftover, paths.root / "up.json")
        return 1
    stop, starting = threading.Event(), threading.Event()
    starting.set()
    handler = _interrupt_while_starting(stop, starting)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    group = ProcessGroup(on_change=lambda g: _write_pids(paths, g))
    try:
        urls = start_system(paths, config, options, group, config_dir)
        starting.clear()
        if stop.is_set():
            return 130
        print("\nmarlops is up:")
        for name, url in urls.items():
            print(f"  {name:<16} {url}")
        print(f"\n  tokens           {paths.tokens_dir}/<role>.token (admin, risk_officer, trader, viewer; owner-only files)")
        print(f"  token store      {paths.token_store} (SHA-256 hashes only)")
        print(f"  logs             {paths.logs_dir}")
        print("  status           .venv/bin/marlops status")
        print("Ctrl-C stops everything.", flush=True)
        while not stop.wait(2.0):
            dead = group.dead()
            if dead:
                names = ", ".join(p.name for p in dead)
                logger.error("%s exited; stopping the system (see %s)", names, paths.logs_dir)
                return 1
        return 0
    except Interrupted:
        logger.warning("interrupted while starting: stopping what was started")
        return 130
    except StackError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        starting.clear()
        killed = group.stop_all()
        if killed:
            logger.warning("had to kill: %s", ", ".join(killed))
        (paths.root / "up.json").unlink(missing_ok=True)
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)
        print("marlops stopped.", flush=True)


def _write_pids(paths: StatePaths, group: ProcessGroup) -> None:
    """Every started process in up.json as soon as it starts, so a later `make up` can tell they still run."""
    record = paths.root / "up.json"
    current = json.loads(record.read_text()) if record.is_file() else {}
    current["pids"] = {p.name: p.pid for p in group.processes}
    record.write_text(json.dumps(current, indent=2))
