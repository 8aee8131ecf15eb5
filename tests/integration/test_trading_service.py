"""The trading service end to end on real parts: tritonserver, the gateway, the paper exchange, the state store.

- kill -9 of `marlops trade` mid-replay, restarted each time: every bar is decided exactly once;
- a routing-table change is served at the next bar, with no restart;
- a version the table names that Triton cannot serve sends its symbols to sl_fallback with an alert.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from contracts.config import load_rl_config
from gateway.app import create_app
from gateway.audit.store import AuditStore
from gateway.serve import free_port, serve_app_in_thread
from gateway.settings import GatewaySettings
from gateway.token_file import bootstrap_token_store, load_tokens, read_token_file
from market_data.bar_source import ReplayBarSource
from market_data.source import load_market, trading_symbols
from marlops.bench import with_model_repository
from marlops.errors import MarlopsError
from marlops.gateway_client import GatewayClient
from marlops.net import wait_until
from marlops.paths import StatePaths
from marlops.pipeline import (
    PipelineContext,
    TrainingSettings,
    deploy_to_triton,
    fit_spec,
    register_candidate,
    train_candidate,
)
from marlops.policy_router import ALERT_VERSION_MISSING, PolicyRouter
from marlops.routing import PolicyRef, RoutingChange
from marlops.routing_store import RoutingStore
from marlops.stack import PAPER_KEY_ID, PAPER_SECRET, PaperExchangeProcess
from marlops.trading import (
    ALERT_SIM_PRICES,
    BarOutcome,
    TradingService,
    TradingServiceError,
)
from marlops.trading_runtime import SimPriceFeed
from marlops.trading_state import TradingStateStore
from serving.triton_process import TritonServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
N_SYMBOLS, N_DAYS, SEED = 6, 160, 3
REPLAY_BARS = 24


@dataclass
class World:
    root: Path
    paths: StatePaths
    config_dir: Path
    ctx: PipelineContext
    versions: dict[str, int]
    triton: TritonServer
    exchange: PaperExchangeProcess
    bars: pd.DataFrame


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("trading")
    paths = StatePaths(root=root / "state", project_root=root).ensure()
    repository = root / "triton_models"
    config = with_model_repository(load_rl_config(REPO / "config" / "rl"), repository)
    ctx = PipelineContext.create(paths, config)
    bars = load_market("synthetic:planted-alpha", seed=SEED, n_symbols=N_SYMBOLS, n_days=N_DAYS)
    spec = fit_spec(bars, config, seed=SEED)
    candidate = train_candidate(bars, spec, ctx, training=TrainingSettings(seed=SEED, iterations=4, hidden=16))
    registered = register_candidate(candidate, ctx)
    deployment = deploy_to_triton(registered, ctx, smoke_test=False)
    config_dir = root / "config"
    shutil.copytree(REPO / "config" / "rl", config_dir)
    serving = yaml.safe_load((config_dir / "serving.yaml").read_text())
    triton = TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                          workdir=paths.triton_workdir).start()
    serving["triton"].update({"model_repository": str(repository), "http_port": triton.http_port,
                              "grpc_port": triton.grpc_port, "metrics_port": triton.metrics_port})
    (config_dir / "serving.yaml").write_text(yaml.safe_dump(serving))
    exchange = PaperExchangeProcess(free_port(), paths.logs_dir / "paper_exchange.log")
    exchange.start()
    bootstrap_token_store(paths.token_store, paths.tokens_dir)
    try:
        yield World(root, paths, config_dir, ctx, dict(deployment.models), triton, exchange, bars)
    finally:
        exchange.stop()
        triton.stop()


@dataclass
class Gateway:
    url: str
    audit_url: str
    handle: object


def _gateway(world: World, name: str) -> Gateway:
    risk = world.ctx.config.risk
    risk = risk.model_copy(update={"market_hours": risk.market_hours.model_copy(update={"source": "off"})})
    audit_url = f"sqlite:///{world.root / f'{name}-audit.db'}"
    settings = GatewaySettings(risk=risk, audit_url=audit_url, broker_base_url=world.exchange.url,
                               broker_key_id=PAPER_KEY_ID, broker_secret_key=PAPER_SECRET,
                               api_tokens=load_tokens(world.paths.token_store), reconcile_interval_s=0)
    port = free_port()
    handle = serve_app_in_thread(create_app(settings), "127.0.0.1", port)
    return Gateway(f"http://127.0.0.1:{port}", audit_url, handle)


def _routing(world: World, name: str, **routes: tuple[str, str | None]) -> RoutingStore:
    store = RoutingStore(f"sqlite:///{world.root / f'{name}-state.db'}")
    v = world.versions
    store.apply(RoutingChange(policies={"production": PolicyRef("symbol_agent", v["symbol_agent"]),
                                        "sl_fallback": PolicyRef("sl_fallback", v["sl_fallback"]),
                                        "master": PolicyRef("master_agent", v["master_agent"])},
                              routes={"*": ("production", None), **routes}),
                principal="test", reason="test routing")
    return store


def _decided_bars(audit_url: str) -> Counter[tuple[str, int]]:
    store = AuditStore(audit_url, create=False)
    try:
        rows = store.list("decision", limit=100_000)
    finally:
        store.close()
    return Counter((r["payload"]["symbol"], int(r["payload"]["bar_index"])) for r in rows)


def _directive_ids(audit_url: str) -> Counter[str]:
    store = AuditStore(audit_url, create=False)
    try:
        rows = store.list("directive", limit=100_000)
    finally:
        store.close()
    return Counter(str(r["payload"]["directive_id"]) for r in rows)


def _replay_stamps(world: World) -> list[pd.Timestamp]:
    stamps = sorted(world.bars["timestamp"].unique())
    return [pd.Timestamp(t) for t in stamps[-REPLAY_BARS:]]


# ---- kill -9 and restart: every bar exactly once -----------------------------------------------------------


def _trade_process(world: World, gateway: Gateway, state_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MARLOPS_HOME": str(world.paths.root), "MARLOPS_STATE_URL": state_url,
           "MARLOPS_TRUSTED_PUBLIC_KEY": str(world.ctx.keys.public_key_path), "PYTHONUNBUFFERED": "1"}
    start = _replay_stamps(world)[0].isoformat()
    argv = [sys.executable, "-m", "marlops.cli", "--config-dir", str(world.config_dir), "trade",
            "--source", "synthetic:planted-alpha", "--symbols", str(N_SYMBOLS), "--days", str(N_DAYS),
            "--seed", str(SEED), "--start", start, "--speed", "15", "--gateway-url", gateway.url,
            "--sim-exchange", world.exchange.url, "--name", "crash"]
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=world.root)


def test_trade_when_killed_with_sigkill_and_restarted_then_every_bar_decided_exactly_once(world: World) -> None:
    gateway = _gateway(world, "crash")
    state_url = f"sqlite:///{world.root / 'crash-state.db'}"
    _routing(world, "crash").close()
    cursors = TradingStateStore(state_url)
    log = world.paths.logs_dir / "trade-crash.log"

    def decided() -> int:
        cursor = cursors.load("crash")
        return -1 if cursor is None else cursor.bar_index

    kills = 0
    for target in (5, 13):  # two kills (each restart is a process start): early and mid-replay
        proc = _trade_process(world, gateway, state_url, log)
        wait_until(lambda: decided() >= target or proc.poll() is not None, timeout_s=120,
                   what=f"bar {target} decided (log {log})")
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
    proc = _trade_process(world, gateway, state_url, log)
    assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    gateway.handle.stop()  # type: ignore[attr-defined]
    cursors.close()

    counts = _decided_bars(gateway.audit_url)
    symbols = trading_symbols(world.bars)
    assert kills == 2
    assert set(counts.values()) == {1}, f"decided more than once: {[k for k, n in counts.items() if n > 1]}"
    assert {b for _, b in counts} == set(range(REPLAY_BARS)), "a bar was skipped or invented"
    assert len(counts) == REPLAY_BARS * len(symbols)
    directives = _directive_ids(gateway.audit_url)
    assert len(directives) >= REPLAY_BARS // world.ctx.config.serving.loop.master_every_bars
    assert set(directives.values()) == {1}, "a master directive was applied twice"


def test_trade_when_sigterm_then_finishes_the_bar_and_exits_zero(world: World) -> None:
    gateway = _gateway(world, "term")
    state_url = f"sqlite:///{world.root / 'term-state.db'}"
    _routing(world, "term").close()
    cursors = TradingStateStore(state_url)
    log = world.paths.logs_dir / "trade-term.log"
    proc = _trade_process(world, gateway, state_url, log)
    wait_until(lambda: (c := cursors.load("crash")) is not None and c.bar_index >= 2, timeout_s=120,
               what=f"bars decided (log {log})")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    last = cursors.load("crash")
    gateway.handle.stop()  # type: ignore[attr-defined]
    cursors.close()
    counts = _decided_bars(gateway.audit_url)
    assert last is not None and {b for _, b in counts} == set(range(last.bar_index + 1))


# ---- routing changes at the next bar; a missing version falls back ---------------------------------------


def _service(world: World, gateway: Gateway, store: RoutingStore, name: str,
             on_bar: object = None, prices: object = None) -> TradingService:
    config = world.ctx.config
    token = read_token_file(world.paths.tokens_dir / "trader.token")
    client = GatewayClient(gateway.url, token=token)
    service_box: dict[str, TradingService] = {}
    router = PolicyRouter(store, triton_http_url=world.triton.http_url, infer_url=world.triton.grpc_url,
                          protocol="grpc", repository=Path(config.serving.triton.model_repository),
                          public_key_path=world.ctx.keys.public_key_path, triton=config.serving.triton,
                          alert=lambda n, d: service_box["s"].alerts(n, d))
    source = ReplayBarSource(world.bars, start=_replay_stamps(world)[0], name="synthetic")
    service = TradingService(name=name, source=source, symbols=trading_symbols(world.bars), router=router,
                             gateway=client, state=TradingStateStore(f"sqlite:///{world.root / f'{name}-cursor.db'}"),
                             set_exchange_prices=prices or SimPriceFeed(world.exchange.url),  # type: ignore[arg-type]
                             on_bar=on_bar)  # type: ignore[arg-type]
    service_box["s"] = service
    return service


def test_route_set_when_changed_mid_run_then_served_at_the_next_bar_without_restart(world: World) -> None:
    gateway = _gateway(world, "route")
    store = _routing(world, "route")
    symbols = trading_symbols(world.bars)
    fallback = f"sl_fallback/{world.versions['sl_fallback']}"
    production = f"symbol_agent/{world.versions['symbol_agent']}"
    changed_at: list[int] = []

    def on_bar(outcome: BarOutcome) -> None:
        if outcome.bar_index == 3:
            store.apply(RoutingChange(routes={s: ("sl_fallback", "production") for s in symbols[:2]}),
                        principal="rita", reason="move two symbols to the fallback")
            changed_at.append(outcome.bar_index)

    service = _service(world, gateway, store, "route", on_bar)
    outcomes = service.run(threading.Event(), max_bars=6)
    gateway.handle.stop()  # type: ignore[attr-defined]
    assert changed_at == [3]
    assert [o.status for o in outcomes] == ["decided"] * 6
    assert all(o.policies == {production: len(symbols)} for o in outcomes[:4])
    assert outcomes[4].policies == {production: len(symbols) - 2, fallback: 2}
    counts = _decided_bars(gateway.audit_url)
    assert len(counts) == 6 * len(symbols)
    store.close()


def test_trade_when_routed_version_is_missing_from_triton_then_fallback_and_alert_not_crash(world: World) -> None:
    gateway = _gateway(world, "missing")
    store = _routing(world, "missing")
    symbols = trading_symbols(world.bars)
    store.apply(RoutingChange(policies={"candidate": PolicyRef("symbol_agent", 99)},
                              routes={symbols[0]: ("candidate", None)}), principal="rita", reason="bad canary")
    service = _service(world, gateway, store, "missing")
    outcomes = service.run(threading.Event(), max_bars=2)
    gateway.handle.stop()  # type: ignore[attr-defined]
    fallback = f"sl_fallback/{world.versions['sl_fallback']}"
    assert [o.status for o in outcomes] == ["decided", "decided"]
    assert outcomes[0].policies[fallback] == 1
    assert ALERT_VERSION_MISSING in service.alerts.active
    assert "symbol_agent/99" in service.alerts.active[ALERT_VERSION_MISSING]
    store.close()


def test_trade_when_restarted_mid_replay_then_same_observations_as_an_uninterrupted_run(world: World) -> None:
    whole_gateway, split_gateway = _gateway(world, "whole"), _gateway(world, "split")
    whole = _service(world, whole_gateway, _routing(world, "whole"), "whole").run(threading.Event(), max_bars=8)
    store = _routing(world, "split")
    first = _service(world, split_gateway, store, "split").run(threading.Event(), max_bars=4)
    second = _service(world, split_gateway, store, "split").run(threading.Event(), max_bars=4)  # resumes at bar 4
    whole_gateway.handle.stop()  # type: ignore[attr-defined]
    split_gateway.handle.stop()  # type: ignore[attr-defined]
    assert [o.bar_index for o in first + second] == list(range(8))
    assert [o.observation_checksum for o in first + second] == [o.observation_checksum for o in whole]


def test_trade_when_gateway_holds_later_bars_then_refuses_to_go_on(world: World) -> None:
    gateway = _gateway(world, "later")
    store = _routing(world, "later")
    _service(world, gateway, store, "later").run(threading.Event(), max_bars=3)
    TradingStateStore(f"sqlite:///{world.root / 'later-cursor.db'}").reset("later")  # e.g. `marlops trade --reset`
    restarted = _service(world, gateway, store, "later")
    with pytest.raises(TradingServiceError, match="already decided later bars"):
        restarted.run(threading.Event(), max_bars=3)
    gateway.handle.stop()  # type: ignore[attr-defined]
    counts = _decided_bars(gateway.audit_url)
    assert set(counts.values()) == {1} and {b for _, b in counts} == {0, 1, 2}


def test_trade_when_paper_exchange_refuses_prices_then_alert_and_the_bar_is_still_decided(world: World) -> None:
    gateway = _gateway(world, "prices")

    def broken_feed(_prices: dict[str, float]) -> None:
        raise MarlopsError("paper exchange restarting")

    service = _service(world, gateway, _routing(world, "prices"), "prices", prices=broken_feed)
    outcomes = service.run(threading.Event(), max_bars=1)
    gateway.handle.stop()  # type: ignore[attr-defined]
    assert [o.status for o in outcomes] == ["decided"]
    assert "restarting" in service.alerts.active[ALERT_SIM_PRICES]
