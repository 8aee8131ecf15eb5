"""`marlops trade`: the long-running trading service (replay or live; only the source and the clock differ).

    marlops trade --source synthetic:planted-alpha --speed 2
    marlops trade --source bars.parquet --speed realtime
    marlops trade --source alpaca --symbols AAPL,MSFT,NVDA    # keys from APCA_API_KEY_ID / APCA_API_SECRET_KEY

The routing table (`marlops route show`) says which policy version decides each symbol; the
gateway token is read from `<MARLOPS_HOME>/tokens/trader.token` unless `--token-file` names another.
SIGTERM / Ctrl-C finish the bar in progress and exit 0; a restart resumes at the next bar.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from contracts.config import RLConfig, VolatilityProxyConfig, load_rl_config
from market_data.bar_source import BarSource, ReplayBarSource
from market_data.volatility import market_input_symbols, non_tradable_symbols
from marlops.errors import MarlopsError
from marlops.paths import StatePaths

logger = logging.getLogger(__name__)

# The proxy of a spec that names none (FeatureSpec.volatility_source's default): the bars' own VIX.
DEFAULT_PROXY = VolatilityProxyConfig.from_name("index:VIX")


def add_trade_parser(subparsers: Any) -> argparse.ArgumentParser:
    trade = subparsers.add_parser("trade", help="run the trading service until stopped (replay or live)")
    trade.add_argument("--source", default="synthetic:planted-alpha",
                       help="synthetic:<preset> | path to CSV/Parquet bars | alpaca (alpaca-py historical + stream)")
    trade.add_argument("--symbols", default=None,
                       help="synthetic/files: universe size N; alpaca: comma-separated tickers (required)")
    trade.add_argument("--days", type=int, default=None, help="synthetic: bars per symbol (default 504)")
    trade.add_argument("--seed", type=int, default=7)
    trade.add_argument("--speed", default=None,
                       help="bars per second, or 'realtime' (one bar per bar_seconds); default: as fast as possible")
    trade.add_argument("--start", default=None,
                       help="replay: first bar to trade (default: the production policy's held-out start)")
    trade.add_argument("--name", default="default", help="the service's name: its cursor in the state store")
    trade.add_argument("--gateway-url", default="http://127.0.0.1:8080")
    trade.add_argument("--token-file", type=Path, default=None,
                       help="gateway token (default <MARLOPS_HOME>/tokens/trader.token)")
    trade.add_argument("--insecure-no-auth", action="store_true", help="send no token (a gateway without auth)")
    trade.add_argument("--triton-url", default=None, help="host:port of Triton for inference (default from config)")
    trade.add_argument("--triton-http-url", default=None, help="Triton HTTP endpoint for model control")
    trade.add_argument("--directive-bus", default=None,
                       help="redis://...: publish market snapshots for `marlops master` (and directives); "
                            "default MARLOPS_DIRECTIVE_BUS_URL / REDIS_URL (environment or .env), else none")
    trade.add_argument("--master", choices=("inprocess", "external", "off"), default=None,
                       help="who runs the master agent (default: external with --directive-bus, else inprocess, "
                            "publishing directives to the gateway over HTTP)")
    trade.add_argument("--sim-exchange", default=None,
                       help="URL of the local paper exchange: feed it each bar's closes (replays only)")
    trade.add_argument("--state-url", default=None, help="state store URL (default MARLOPS_STATE_URL or SQLite)")
    trade.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0 = off)")
    trade.add_argument("--max-bars", type=int, default=None, help="stop after N bars (tests, smoke runs)")
    trade.add_argument("--reset", action="store_true", help="forget the cursor and start the source over (the gateway refuses bars it already decided: use a fresh gateway audit store)")
    trade.set_defaults(func=run_trade)
    return trade


def _env_with_dotenv() -> dict[str, str]:
    """The environment over the project's `.env` (Alpaca's own variable names work from either)."""
    from dotenv import dotenv_values

    dotenv = {k: v for k, v in dotenv_values(Path.cwd() / ".env").items() if v}
    return {**dotenv, **os.environ}


def _pace(speed: str | None) -> tuple[float | None, bool]:
    if speed is None:
        return None, False
    if speed == "realtime":
        return None, True
    try:
        value = float(speed)
    except ValueError as exc:
        raise MarlopsError(f"--speed must be a number of bars per second or 'realtime', got {speed!r}") from exc
    if value <= 0:
        raise MarlopsError(f"--speed must be > 0, got {value}")
    return value, False


def build_source(args: argparse.Namespace, config: RLConfig, default_start: pd.Timestamp | None,
                 proxy: VolatilityProxyConfig | None = None) -> tuple[BarSource, tuple[str, ...]]:
    """The bar source named by --source, and the tradable universe. `proxy`: the volatility proxy of the policy's
    feature spec: its inputs (and the benchmark) are read, never traded; a live feed subscribes to them too."""
    proxy = proxy or DEFAULT_PROXY
    market_inputs, not_traded = market_input_symbols(proxy), non_tradable_symbols(proxy)
    bars_per_second, realtime = _pace(args.speed)
    bar_seconds = config.serving.loop.bar_seconds
    if args.source == "alpaca":
        from market_data.alpaca_source import AlpacaBarSource, AlpacaDataSettings

        if not args.symbols or args.symbols.isdigit():
            raise MarlopsError("--source alpaca needs --symbols AAPL,MSFT,... (the tickers the policy trades)")
        asked = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
        symbols = tuple(s for s in asked if s not in not_traded)
        if len(symbols) != len(asked):
            logger.warning("not trading %s: market inputs of the policy's features (benchmark, volatility proxy)",
                           sorted(set(asked) - set(symbols)))
        universe = (*symbols, *(s for s in market_inputs if s not in symbols))
        return AlpacaBarSource(AlpacaDataSettings.from_env(_env_with_dotenv()), universe), symbols
    from market_data.source import load_market, trading_symbols

    n_symbols = int(args.symbols) if args.symbols else None
    synthetic = args.source.split(":", 1)[0] == "synthetic"
    bars = load_market(args.source, seed=args.seed, n_symbols=n_symbols or (20 if synthetic else None),
                       n_days=args.days or (504 if synthetic else None))
    start = pd.Timestamp(args.start) if args.start else default_start
    stamps = pd.DatetimeIndex(sorted(bars["timestamp"].unique()))
    if start is None or start <= stamps[0]:
        start = stamps[min(len(stamps) - 1, 64)]
    if start.tzinfo is None:
        start = start.tz_localize("UTC")
    # The benchmark and the volatility proxy's input (e.g. an ETF such as VIXY) are market inputs, not traded.
    symbols = tuple(s for s in trading_symbols(bars) if s not in not_traded)
    return (ReplayBarSource(bars, start=start, bars_per_second=bars_per_second, realtime=realtime,
                            bar_seconds=bar_seconds, name=args.source), symbols)


def run_trade(args: argparse.Namespace) -> int:
    from gateway.gc_tuning import tune_gc_for_latency
    from marlops.trading_runtime import TradingRuntime

    paths = StatePaths.from_env().ensure()
    config = load_rl_config(Path(args.config_dir))
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logger.info("signal %d: finishing the bar in progress, then stopping", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    if args.directive_bus is None:
        from marlops.settings import MarlopsSettings

        args.directive_bus = MarlopsSettings.load().directive_bus_url
    runtime = TradingRuntime.from_args(args, paths, config)
    tune_gc_for_latency()  # after start-up: what exists now lives as long as the process
    try:
        outcomes = runtime.run(stop, max_bars=args.max_bars)
    finally:
        runtime.close()
    decided = sum(1 for o in outcomes if o.status in ("decided", "already_decided"))
    print(f"trading service {args.name}: {decided} bars decided this run, last bar {runtime.service.cursor.bar_index} "
          f"({runtime.service.cursor.bar_timestamp})")
    return 0
