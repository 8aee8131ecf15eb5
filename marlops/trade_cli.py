"""`marlops trade`: the long-running trading service (replay or live; only the source and the clock differ).

    marlops trade --source synthetic:planted-alpha --speed 2
    marlops trade --source bars.parquet --speed realtime
    marlops trade --source alpaca --symbols AAPL,MSFT,NVDA    # keys from APCA_API_KEY_ID / APCA_API_SECRET_KEY
    marlops trade --source alpaca:sip --source alpaca:iex --symbols AAPL,MSFT   # two providers: 2 of 2 must agree
    marlops trade --source synthetic:feed-fault    # three replay providers, "iex" goes stale then prints bad prices

Every source is wrapped in the feed guard (market_data.quorum): one source is validated per symbol (missing,
stale, inconsistent bars are flagged and carried forward); two or more vote per symbol with quorum and
quarantine (config/rl/serving.yaml, market_data.feed).

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
from market_data.errors import MarketDataError
from market_data.provider_faults import FEED_FAULT_BASE, FEED_FAULT_PRESET, feed_fault_providers
from market_data.quorum import QuorumBarSource
from market_data.volatility import market_input_symbols, non_tradable_symbols
from marlops.errors import MarlopsError
from marlops.paths import StatePaths

logger = logging.getLogger(__name__)

# The proxy of a spec that names none (FeatureSpec.volatility_source's default): the bars' own VIX.
DEFAULT_PROXY = VolatilityProxyConfig.from_name("index:VIX")
DEFAULT_SOURCE = "synthetic:planted-alpha"


def add_trade_parser(subparsers: Any) -> argparse.ArgumentParser:
    trade = subparsers.add_parser("trade", help="run the trading service until stopped (replay or live)")
    trade.add_argument("--source", action="append", default=None,
                       help="synthetic:<preset> | synthetic:feed-fault | path to CSV/Parquet bars | alpaca[:iex|:sip] "
                            "(alpaca-py historical + stream; the feed variant overrides APCA_DATA_FEED). Repeat for "
                            "redundant providers of the same universe: they vote per symbol (default "
                            f"{DEFAULT_SOURCE})")
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


def source_specs(args: argparse.Namespace) -> list[str]:
    """The --source values (a plain string from older callers counts as one)."""
    specs = args.source if isinstance(args.source, list) else [args.source] if args.source else []
    return specs or [DEFAULT_SOURCE]


def build_source(args: argparse.Namespace, config: RLConfig, default_start: pd.Timestamp | None,
                 proxy: VolatilityProxyConfig | None = None) -> tuple[BarSource, tuple[str, ...]]:
    """The bar source named by --source (wrapped in the feed guard), and the tradable universe. `proxy`: the
    volatility proxy of the policy's feature spec: its inputs (and the benchmark) are read, never traded; a live
    feed subscribes to them too. Several --source values: a `QuorumBarSource` of them (each a provider named by
    its source string; they must share the universe); one: the single-provider guard."""
    specs = source_specs(args)
    if len(set(specs)) != len(specs):
        raise MarlopsError(f"--source given twice with the same value: {specs} (providers are named by it)")
    if FEED_FAULT_PRESET in specs and len(specs) > 1:
        raise MarlopsError(f"--source {FEED_FAULT_PRESET} is already three providers; give it alone")
    feed = config.serving.market_data.feed
    bar_seconds = config.serving.loop.bar_seconds
    built = [_one_source(spec, args, config, default_start, proxy) for spec in specs]
    (first, symbols, universe), rest = built[0], built[1:]
    for (source, other_symbols, other_universe), spec in zip(rest, specs[1:]):
        if other_symbols != symbols or set(other_universe) != set(universe):
            raise MarlopsError(
                f"--source {spec} reads another universe than --source {specs[0]}: "
                f"only in {specs[0]}: {sorted(set(universe) - set(other_universe))}, "
                f"only in {spec}: {sorted(set(other_universe) - set(universe))} (redundant providers must carry "
                f"the same symbols)")
    providers = [source for source, _, _ in built]
    if isinstance(first, QuorumBarSource):  # synthetic:feed-fault: already its own quorum
        return first, symbols
    try:
        guard = QuorumBarSource(providers, config=feed, bar_seconds=bar_seconds, symbols=universe)
    except MarketDataError as exc:
        raise MarlopsError(f"--source {specs}: {exc}") from exc
    return guard, symbols


def _one_source(spec: str, args: argparse.Namespace, config: RLConfig, default_start: pd.Timestamp | None,
                proxy: VolatilityProxyConfig | None) -> tuple[BarSource, tuple[str, ...], tuple[str, ...]]:
    """(source named `spec`, tradable symbols, every symbol it reads)."""
    proxy = proxy or DEFAULT_PROXY
    market_inputs, not_traded = market_input_symbols(proxy), non_tradable_symbols(proxy)
    bars_per_second, realtime = _pace(args.speed)
    bar_seconds = config.serving.loop.bar_seconds
    kind, _, variant = spec.partition(":")
    if kind == "alpaca":
        from market_data.alpaca_source import DEFAULT_STREAM_URL, AlpacaBarSource, AlpacaDataSettings

        if not args.symbols or args.symbols.isdigit():
            raise MarlopsError("--source alpaca needs --symbols AAPL,MSFT,... (the tickers the policy trades)")
        asked = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
        symbols = tuple(s for s in asked if s not in not_traded)
        if len(symbols) != len(asked):
            logger.warning("not trading %s: market inputs of the policy's features (benchmark, volatility proxy)",
                           sorted(set(asked) - set(symbols)))
        universe = (*symbols, *(s for s in market_inputs if s not in symbols))
        env = _env_with_dotenv()
        overrides: dict[str, str] = {}
        if variant:  # alpaca:iex / alpaca:sip: that feed, REST and stream (unless the stream URL is configured)
            overrides["feed"] = variant
            if "APCA_DATA_STREAM_URL" not in env:
                overrides["stream_url"] = f"{DEFAULT_STREAM_URL.rsplit('/', 1)[0]}/{variant}"
        try:
            settings = AlpacaDataSettings.from_env(env, **overrides)
        except MarketDataError as exc:
            raise MarlopsError(f"--source {spec}: {exc}") from exc
        return AlpacaBarSource(settings, universe, name=spec), symbols, universe
    from market_data.source import load_market, trading_symbols

    fault_preset = spec == FEED_FAULT_PRESET
    n_symbols = int(args.symbols) if args.symbols else None
    synthetic = kind == "synthetic"
    bars = load_market(FEED_FAULT_BASE if fault_preset else spec, seed=args.seed,
                       n_symbols=n_symbols or (20 if synthetic else None), n_days=args.days or (504 if synthetic else None))
    start = pd.Timestamp(args.start) if args.start else default_start
    stamps = pd.DatetimeIndex(sorted(bars["timestamp"].unique()))
    if start is None or start <= stamps[0]:
        start = stamps[min(len(stamps) - 1, 64)]
    if start.tzinfo is None:
        start = start.tz_localize("UTC")
    # The benchmark and the volatility proxy's input (e.g. an ETF such as VIXY) are market inputs, not traded.
    symbols = tuple(s for s in trading_symbols(bars) if s not in not_traded)
    universe = tuple(sorted(str(s) for s in bars["symbol"].unique()))
    if fault_preset:
        providers = feed_fault_providers(bars, start=start, bars_per_second=bars_per_second, realtime=realtime,
                                         bar_seconds=bar_seconds)
        return (QuorumBarSource(providers, config=config.serving.market_data.feed, bar_seconds=bar_seconds,
                                symbols=universe, name=spec), symbols, universe)
    return (ReplayBarSource(bars, start=start, bars_per_second=bars_per_second, realtime=realtime,
                            bar_seconds=bar_seconds, name=spec), symbols, universe)


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
