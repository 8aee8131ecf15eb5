"""The `marlops` command."""

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from agents.errors import AgentError
from contracts.config import load_rl_config
from contracts.errors import ConfigError, ContractError
from contracts.logs import configure_logging
from data_checks.errors import DataCheckError
from features.errors import FeatureError
from gateway.errors import GatewayError
from market_data.errors import MarketDataError
from marlops.errors import MarlopsError
from marlops.paths import StatePaths
from registry.errors import RegistryError
from serving.errors import ServingError

logger = logging.getLogger("marlops")


def _setup_logging(verbose: bool, command: str) -> None:
    # JSON lines off a terminal (`make up`: a log file), text on one; MARLOPS_LOG_FORMAT overrides.
    try:
        configure_logging(logging.DEBUG if verbose else logging.INFO, service=f"marlops-{command}",
                          text_format="%(asctime)s %(levelname)-5s %(name)s: %(message)s", datefmt="%H:%M:%S")
    except ConfigError as exc:
        raise SystemExit(f"marlops: {exc}") from None
    for noisy in ("httpx", "urllib3", "alembic", "mlflow", "git", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_demo(args: argparse.Namespace) -> int:
    from marlops.demo import demo_summary

    paths = StatePaths.from_env().ensure()
    # Fail fast on bad config or an unreadable data source, before Dagster starts.
    load_rl_config(Path(args.config_dir))
    from market_data.source import load_market

    load_market(args.source, seed=args.seed, n_symbols=args.symbols, n_days=args.days)
    run_config = {"resources": {
        "market_data": {"config": {"source": args.source, "seed": args.seed, "n_symbols": args.symbols,
                                   "n_days": args.days, "replay_days": args.replay_days}},
        "training": {"config": {"seed": args.seed, "iterations": args.iterations}},
        "marlops": {"config": {"config_dir": args.config_dir}},
    }}
    logger.info("demo: %d symbols, %d days (%d replayed), source %s, seed %d", args.symbols, args.days,
                args.replay_days, args.source, args.seed)
    from marlops.demo_lifecycle import run_lifecycle_demo

    outcome = run_lifecycle_demo(paths, run_config, config_dir=args.config_dir)
    summary = {**demo_summary(paths, outcome["staging"]), "lifecycle": outcome["lifecycle"]}
    paths.demo_dir.mkdir(parents=True, exist_ok=True)
    out = paths.demo_dir / "summary.json"
    out.write_text(json.dumps(summary, indent=2, sort_keys=True))
    print(format_demo_summary(summary, out, paths))
    return 0


def format_demo_summary(summary: dict[str, object], out: Path, paths: StatePaths) -> str:
    lines = ["", "marlops demo — done"]
    if "decision_latency_ms" in summary:
        lat = summary["decision_latency_ms"]
        lines += [
            f"  staging replay     {summary['symbols']} symbols, {summary['trading_days']} trading days, "
            f"{summary['decisions']} decisions",
            f"  orders             {summary['orders_submitted']} submitted, {summary['orders_filled']} filled, "
            f"{summary['orders_at_exchange']} at the paper exchange",
            f"  audit rows         {summary['audit_rows']}  (hash chain {'ok' if summary['audit_chain_ok'] else 'BROKEN'})",
            f"  decision latency   p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms",  # type: ignore[index]
            f"  final equity       {summary['final_equity']:,.0f}  state {summary['trading_state']}",
        ]
    else:
        lines.append(f"  staging replay     {summary.get('staging')}")
    for e in summary.get("lifecycle", []):  # type: ignore[attr-defined]
        versions = ", ".join(f"{k} v{v}" for k, v in e["versions"].items())
        lines.append(f"  lifecycle          {e['candidate']:<15} {e['outcome']:<24} ({versions})")
        if e["reason"]:
            lines.append(f"                     {e['reason'][:150]}")
    lines += [f"  summary            {out}",
              f"  Dagster runs       make up, then open the Dagster UI (DAGSTER_HOME={paths.dagster_home})"]
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from marlops.bench import run_bench

    paths = StatePaths.from_env().ensure()
    from marlops.bench import BenchOptions

    options = BenchOptions(symbols=args.symbols, steps=args.steps, scales=tuple(args.scales), universe=args.universe,
                           scale_steps=args.scale_steps, warmup_steps=args.warmup_steps,
                           profile_steps=args.profile_steps, profile_always=args.profile,
                           max_batch_size=args.max_batch_size,
                           **{k: v for k in ("gateway_orders", "gateway_steps", "directives", "replay_symbols",
                                             "replay_days", "replay_minutes_per_day")
                              if (v := getattr(args, k)) is not None})
    from gateway.gc_tuning import tune_gc_for_latency

    tune_gc_for_latency()  # the bench process hosts the trading service and the gateway, as `marlops trade` would
    report = run_bench(paths, load_rl_config(Path(args.config_dir)), options)
    print(json.dumps({"decision_latency_ms": report["decision_latency_ms"],
                      "scales": [{k: s[k] for k in ("symbols", "decision_latency_ms")} for s in report["scales"]],
                      "action_to_order_ms": report.get("action_to_order_ms"),
                      "targets": report["targets"]}, indent=2))
    print(f"report: {paths.bench_dir / 'report.json'}")
    return 0


def _acknowledgements(args: argparse.Namespace, project_root: Path):  # type: ignore[no-untyped-def]
    """--acknowledgements, else config/data/acknowledgements.yaml under the project root when it exists, else None."""
    from data_checks.acknowledgements import resolve_acknowledgements

    return resolve_acknowledgements(getattr(args, "acknowledgements", None), project_root)


def _load_checked_bars(args: argparse.Namespace, acknowledgements=None):  # type: ignore[no-untyped-def]
    from market_data.source import load_market
    from marlops.pipeline import check_bars

    synthetic = args.data.split(":", 1)[0] == "synthetic"
    symbols = args.symbols if args.symbols is not None or not synthetic else 20
    days = args.days if args.days is not None or not synthetic else 504
    bars = load_market(args.data, seed=args.seed, n_symbols=symbols, n_days=days)
    check_bars(bars, acknowledgements=acknowledgements)
    return bars


def _pipeline_context(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from marlops.pipeline import PipelineContext

    return PipelineContext.create(StatePaths.from_env().ensure(), load_rl_config(Path(args.config_dir)))


def cmd_train(args: argparse.Namespace) -> int:
    from marlops.pipeline import (
        TrainingSettings,
        fit_spec,
        register_candidate,
        train_candidate,
        validate_candidate,
    )

    ctx = _pipeline_context(args)
    acknowledgements = _acknowledgements(args, ctx.paths.project_root)
    bars = _load_checked_bars(args, acknowledgements)
    spec = fit_spec(bars, ctx.config, seed=args.seed, observation_version=args.observation_version)
    settings = TrainingSettings(seed=args.seed, iterations=args.iterations, hidden=args.hidden)
    candidate = train_candidate(bars, spec, ctx, training=settings, acknowledgements=acknowledgements)
    registered = register_candidate(candidate, ctx)
    print(f"registered candidate (MLflow run {registered.run_id}, held out from {registered.holdout_start[:10]}):")
    for agent, version in registered.versions().items():
        print(f"  {agent:<14} version {version}  (alias candidate)")
    if not args.skip_validation:
        result = validate_candidate(bars, registered, ctx)
        verdict = result.evaluation.report.verdict
        print(f"Go/No-Go on held-out bars: {'GO' if verdict.passed else 'NO-GO'}"
              + (f" (failed: {', '.join(c.name for c in verdict.failed())})" if not verdict.passed else ""))
        print(f"  report: {result.files.get('markdown', '')}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from marlops.pipeline import evaluate_registered

    ctx = _pipeline_context(args)
    bars = _load_checked_bars(args, _acknowledgements(args, ctx.paths.project_root))
    out = Path(args.json)
    result = evaluate_registered(bars, args.policy, ctx, out.parent / f"{out.stem}-report")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.as_dict(), indent=2, sort_keys=True, allow_nan=False))
    report = result.evaluation.report
    print(report.to_markdown())
    print(f"\nGo/No-Go: {'GO' if report.verdict.passed else 'NO-GO'}; JSON written to {out}")
    return 0 if report.verdict.passed or not args.fail_on_no_go else 3


def cmd_config(args: argparse.Namespace) -> int:
    config = load_rl_config(Path(args.config_dir))
    print(f"{args.config_dir}: ok (per-symbol cap {config.risk.per_symbol_cap:.0%}, "
          f"gross leverage {config.risk.max_gross_leverage}x, triton {config.serving.triton.protocol})")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from marlops.up import run_up
    from marlops.up_options import UpOptions

    paths = StatePaths.from_env().ensure()
    config = load_rl_config(Path(args.config_dir))
    options = UpOptions(dagster_port=args.dagster_port, gateway_port=args.gateway_port,
                        exchange_port=args.exchange_port, market_data_port=args.market_data_port,
                        mlflow_port=args.mlflow_port, trading_metrics_port=args.trading_metrics_port,
                        master_metrics_port=args.master_metrics_port, prometheus_port=args.prometheus_port,
                        alertmanager_port=args.alertmanager_port, alert_context_port=args.alert_context_port,
                        playbooks_port=args.playbooks_port,
                        with_monitoring=not args.no_monitoring, scrape_interval=args.scrape_interval,
                        bars_per_second=args.bars_per_second, symbols=args.symbols, days=args.days,
                        iterations=args.iterations, redis_url=args.redis_url,
                        with_dagster=not args.no_dagster, with_mlflow=not args.no_mlflow,
                        triton_http=args.triton_http_port, triton_grpc=args.triton_grpc_port,
                        triton_metrics=args.triton_metrics_port, live=args.live,
                        tickers=tuple(t.strip().upper() for t in (args.tickers or "").split(",") if t.strip()),
                        real_money=args.real_money)
    return run_up(paths, config, options, args.config_dir)


def cmd_paper_exchange(args: argparse.Namespace) -> int:
    os.execv(sys.executable, [sys.executable, "-m", "paper_exchange", "--host", args.host,
                              "--port", str(args.port), "--initial-cash", str(args.initial_cash)])
    return 0  # pragma: no cover


# Sub-commands whose parsers live with their code. `marlops <command>` imports only that one module (some pull in
# torch, MLflow or scipy: seconds each); `build_parser()` without `only` (help, an unknown command) imports them all.
_MODULE_COMMANDS: dict[str, tuple[str, str]] = {
    "audit": ("marlops.audit_cli", "add_audit_parser"),
    "token": ("marlops.token_cli", "add_token_parser"),
    "trade": ("marlops.trade_cli", "add_trade_parser"),
    "master": ("marlops.master_cli", "add_master_parser"),
    "route": ("marlops.route_cli", "add_route_parser"),
    "rfc": ("marlops.rfc_cli", "add_rfc_parser"),
    "rollback": ("marlops.rollback_cli", "add_rollback_parser"),
    "status": ("marlops.status_cli", "add_status_parser"),
    "market-data": ("marlops.market_data_cli", "add_market_data_parser"),
    "drift-calibrate": ("marlops.drift_calibration", "add_drift_calibrate_parser"),
    "replay": ("marlops.replay_cli", "add_replay_parser"),
    "alert-drill": ("marlops.alert_drill", "add_alert_drill_parser"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `marlops` parser; with `only` (one of _MODULE_COMMANDS), the other module commands are left out."""
    parser = argparse.ArgumentParser(prog="marlops", description="Deploy multi-agent RL trading policies safely.")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--config-dir", default="config/rl", help="directory with serving.yaml, risk_overlays.yaml, "
                        "feature_drift_thresholds.json (default: config/rl)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="materialize the spine through Dagster and replay through the real stack")
    demo.add_argument("--source", default="synthetic:planted-alpha",
                      help="synthetic | synthetic:<preset> | path to CSV/Parquet bars")
    demo.add_argument("--seed", type=int, default=3,
                      help="market and training seed (3: the planted-alpha market whose lifecycle the README shows)")
    demo.add_argument("--symbols", type=int, default=20)
    demo.add_argument("--days", type=int, default=504, help="bars per symbol (synthetic source)")
    demo.add_argument("--replay-days", type=int, default=30, help="latest bars replayed through the stack")
    demo.add_argument("--iterations", type=int, default=80, help="MAPPO training iterations")
    demo.set_defaults(func=cmd_demo)

    def data_arguments(command: argparse.ArgumentParser) -> None:
        command.add_argument("--data", required=True,
                             help="synthetic:<preset> (default, planted-alpha, no-alpha) or a path to CSV/Parquet bars")
        command.add_argument("--seed", type=int, default=7)
        command.add_argument("--symbols", type=int, default=None,
                             help="synthetic: universe size (default 20); files: keep the first N symbols")
        command.add_argument("--days", type=int, default=None,
                             help="synthetic: bars per symbol (default 504); files: keep the latest N bars")

    train = sub.add_parser("train", help="train (MAPPO), register a candidate and run its held-out Go/No-Go")
    data_arguments(train)
    train.add_argument("--iterations", type=int, default=80)
    train.add_argument("--hidden", type=int, default=64)
    train.add_argument("--skip-validation", action="store_true", help="register without the held-out evaluation")
    train.add_argument("--acknowledgements", default=None, metavar="PATH",
                       help="reviewed flagged bar rows to let through (YAML or CSV: symbol, date, check, reason, "
                            "reviewer; see config/data/acknowledgements.example.yaml). Default: "
                            "config/data/acknowledgements.yaml when it exists")
    train.add_argument("--observation-version", type=int, choices=(1, 2), default=None,
                       help="HybridRLObservation version to train on: 2 adds news sentiment and macro features "
                            "(config/rl/features.yaml alt_data). Default: features.yaml observation_version (1)")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="score a registered policy on held-out bars; metrics + Go/No-Go as JSON")
    evaluate.add_argument("--policy", required=True, help="symbol_agent version number or alias (candidate, production)")
    data_arguments(evaluate)
    evaluate.add_argument("--json", required=True, help="output JSON path (the report's md/png go beside it)")
    evaluate.add_argument("--fail-on-no-go", action="store_true", help="exit 3 when the verdict is NO-GO")
    evaluate.add_argument("--acknowledgements", default=None, metavar="PATH",
                          help="as for train: reviewed flagged bar rows to let through")
    evaluate.set_defaults(func=cmd_evaluate)

    from marlops.up_options import UpOptions

    up = sub.add_parser("up", help="run the whole system (trains the demo policy on a fresh clone); Ctrl-C stops it")
    up.add_argument("--dagster-port", type=int, default=UpOptions.dagster_port)
    up.add_argument("--gateway-port", type=int, default=UpOptions.gateway_port)
    up.add_argument("--exchange-port", type=int, default=UpOptions.exchange_port)
    up.add_argument("--market-data-port", type=int, default=UpOptions.market_data_port)
    up.add_argument("--mlflow-port", type=int, default=UpOptions.mlflow_port)
    up.add_argument("--trading-metrics-port", type=int, default=UpOptions.trading_metrics_port)
    up.add_argument("--master-metrics-port", type=int, default=UpOptions.master_metrics_port)
    up.add_argument("--prometheus-port", type=int, default=UpOptions.prometheus_port)
    up.add_argument("--alertmanager-port", type=int, default=UpOptions.alertmanager_port)
    up.add_argument("--alert-context-port", type=int, default=UpOptions.alert_context_port)
    up.add_argument("--playbooks-port", type=int, default=UpOptions.playbooks_port)
    up.add_argument("--triton-http-port", type=int, default=None, help="default from config/rl/serving.yaml")
    up.add_argument("--triton-grpc-port", type=int, default=None)
    up.add_argument("--triton-metrics-port", type=int, default=None)
    up.add_argument("--bars-per-second", type=float, default=UpOptions.bars_per_second, help="pace of the replayed synthetic market")
    up.add_argument("--symbols", type=int, default=UpOptions.symbols, help="demo universe size")
    up.add_argument("--days", type=int, default=UpOptions.days, help="demo market length (bars per symbol)")
    up.add_argument("--iterations", type=int, default=UpOptions.iterations, help="MAPPO iterations when the demo policy is trained")
    up.add_argument("--redis-url", default=None, help="directive bus (default from config; used when reachable)")
    up.add_argument("--no-dagster", action="store_true", help="skip the Dagster webserver and daemon")
    up.add_argument("--no-mlflow", action="store_true", help="skip the MLflow UI")
    up.add_argument("--no-monitoring", action="store_true",
                    help="skip Prometheus, Alertmanager and the alert context webhook")
    up.add_argument("--scrape-interval", default=None,
                    help="Prometheus scrape interval, e.g. 2s (default: the shipped 15s, which the alert rules assume)")
    up.add_argument("--live", action="store_true",
                    help="trade through Alpaca (APCA_* keys and endpoints from the environment or .env) instead of "
                         "the local paper exchange and market-data server; needs a routed policy and --tickers")
    up.add_argument("--tickers", default=None, help="with --live: the universe, e.g. AAPL,MSFT,NVDA")
    up.add_argument("--real-money", action="store_true",
                    help="with --live: allow an APCA_API_BASE_URL that is not a paper endpoint (live money)")
    up.set_defaults(func=cmd_up)

    bench = sub.add_parser("bench", help="decision latency at 100/1000/3000 symbols, Triton batched vs per-symbol, "
                                         "gRPC vs HTTP, in-process floor, RSS; writes .marlops/bench/report.json")
    bench.add_argument("--symbols", type=int, default=100, help="headline scale (decision_latency_ms, comparisons)")
    bench.add_argument("--steps", type=int, default=60, help="measured bars at the headline scale")
    bench.add_argument("--scales", type=lambda v: [int(x) for x in v.split(",") if x.strip()], default=[100, 1000],
                       help="comma-separated symbol counts also measured (default 100,1000)")
    bench.add_argument("--universe", type=int, default=3000,
                       help="a universe larger than Triton's max batch, measured too (0: none)")
    bench.add_argument("--scale-steps", type=int, default=20, help="measured bars at each non-headline scale")
    bench.add_argument("--warmup-steps", type=int, default=5)
    bench.add_argument("--profile-steps", type=int, default=10, help="bars profiled where a latency target is missed")
    bench.add_argument("--profile", action="store_true", help="profile every scale, target missed or not")
    bench.add_argument("--max-batch-size", type=int, default=None,
                       help="override serving.triton.max_batch_size for this run (e.g. tiny, to exercise chunking)")
    bench.add_argument("--gateway-orders", type=int, default=None, help="orders per timestep of the gateway's hops "
                                                                       "(default 100)")
    bench.add_argument("--gateway-steps", type=int, default=None, help="timesteps of the gateway's hops (default 30)")
    bench.add_argument("--directives", type=int, default=None, help="directives published for propagation (50)")
    bench.add_argument("--replay-symbols", type=int, default=None, help="replay throughput symbols (default 100)")
    bench.add_argument("--replay-days", type=int, default=None, help="replay throughput sessions (default 30)")
    bench.add_argument("--replay-minutes-per-day", type=int, default=None,
                       help="1-minute bars per replayed session (default 390)")
    bench.set_defaults(func=cmd_bench)

    config = sub.add_parser("config", help="validate config/rl")
    config.add_argument("action", choices=["validate"])
    config.set_defaults(func=cmd_config)

    exchange = sub.add_parser("paper-exchange", help="run the local Alpaca-compatible paper exchange")
    exchange.add_argument("--host", default="127.0.0.1")
    exchange.add_argument("--port", type=int, default=5100)
    exchange.add_argument("--initial-cash", type=float, default=1_000_000.0)
    exchange.set_defaults(func=cmd_paper_exchange)

    for command, (module, adder) in _MODULE_COMMANDS.items():
        if only is None or only == command:
            getattr(importlib.import_module(module), adder)(sub)
    chaos = sub.add_parser("chaos", add_help=False,
                           help="kill -9 the gateway during a replay (SQLite + PostgreSQL); writes "
                                ".marlops/chaos/report.json (see `marlops chaos --help`)")
    chaos.set_defaults(func=cmd_chaos)
    return parser


def cmd_chaos(args: argparse.Namespace) -> int:
    from marlops.chaos import main as chaos_main

    return chaos_main(args.chaos_argv)


def _command_index(raw: list[str]) -> int | None:
    """Position of the sub-command in `raw` (the first word that is not a global option or its value)."""
    i = 0
    while i < len(raw):
        if raw[i] == "--config-dir":
            i += 2
        elif raw[i].startswith("-"):
            i += 1
        else:
            return i
    return None


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    at = _command_index(raw)
    if at is not None and raw[at] == "chaos":
        # `marlops chaos` owns its options (its own parser prints them with --help).
        args = build_parser().parse_args(raw[: at + 1])
        args.chaos_argv = raw[at + 1:]
        _setup_logging(args.verbose, args.command)
        return int(args.func(args))
    command = raw[at] if at is not None else None
    args = build_parser(only=command if command in _MODULE_COMMANDS else None).parse_args(raw)
    _setup_logging(args.verbose, args.command)
    try:
        code: int = args.func(args)
        return code
    except (ContractError, MarlopsError, MarketDataError, FeatureError, DataCheckError, AgentError, RegistryError,
            ServingError, GatewayError) as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
