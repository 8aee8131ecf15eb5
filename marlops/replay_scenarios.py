"""What `marlops replay --source` names: a bars file, a synthetic market, or a planted data-safety scenario.

  PATH                       CSV/Parquet bars, one provider
  synthetic:<market preset>  a synthetic market (default, planted-alpha, no-alpha), one provider: the stationary case
  synthetic:drift-shock      planted-alpha with the volatility index DRIFT_SHOCK_POINTS higher from the middle of
                             the replay on (vix_level, a key feature, jumps far beyond its limit)
  synthetic:feed-fault       planted-alpha served by three providers (sip, iex, mirror); iex goes stale, then
                             prints bad prices (market_data.provider_faults.feed_fault_providers)

Every bar before `start` is warm-up history; the scenario's faults are placed by bar index after `start`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from contracts.bars import VOLATILITY_INDEX_SYMBOL
from contracts.config import RLConfig
from market_data.bar_source import BarSource, ReplayBarSource
from market_data.source import load_market
from market_data.synthetic import PRESETS
from marlops.errors import MarlopsError

DRIFT_SHOCK = "drift-shock"
FEED_FAULT = "feed-fault"
SCENARIOS: tuple[str, ...] = (DRIFT_SHOCK, FEED_FAULT)
SCENARIO_MARKET = "planted-alpha"  # the market the scenarios plant their faults in
# VIX 50 points higher (March 2020: 14 -> 82 in four weeks). Additive, so the shift in training sigmas does not
# depend on the level the shock meets (x4 of a calm 12 was only ~5.5 sigma).
DRIFT_SHOCK_POINTS = 50.0


@dataclass(frozen=True)
class Scenario:
    name: str
    bars: pd.DataFrame  # the true market (universe, exchange prices)
    start: pd.Timestamp
    source: Callable[[], BarSource]  # the feed the trading service reads (one provider, or several)
    notes: dict[str, Any] = field(default_factory=dict)


def replay_start(bars: pd.DataFrame, start: pd.Timestamp | None, warmup: int = 64) -> pd.Timestamp:
    stamps = pd.DatetimeIndex(sorted(bars["timestamp"].unique()))
    if start is None or start <= stamps[0]:
        return stamps[min(len(stamps) - 1, warmup)]
    later = stamps[stamps >= start]
    if len(later) == 0:
        raise MarlopsError(f"replay start {start} is after the last bar {stamps[-1]}")
    return later[0]


def limit_bars(bars: pd.DataFrame, start: pd.Timestamp, n_bars: int | None) -> pd.DataFrame:
    """Warm-up history plus at most `n_bars` bars from `start` on."""
    if n_bars is None:
        return bars
    if n_bars < 1:
        raise MarlopsError(f"--bars must be >= 1, got {n_bars}")
    stamps = pd.DatetimeIndex(sorted(bars["timestamp"].unique()))
    kept = stamps[stamps >= start][:n_bars]
    return bars[bars["timestamp"] <= kept[-1]].reset_index(drop=True)


def drift_shock(bars: pd.DataFrame, shock_at: pd.Timestamp, points: float = DRIFT_SHOCK_POINTS) -> pd.DataFrame:
    """The volatility index's OHLC `points` higher from `shock_at` on (nothing else changes)."""
    shocked = bars.copy()
    rows = (shocked["symbol"] == VOLATILITY_INDEX_SYMBOL) & (shocked["timestamp"] >= shock_at)
    for column in ("open", "high", "low", "close"):
        shocked.loc[rows, column] = shocked.loc[rows, column] + points
    return shocked


def build_scenario(spec: str, config: RLConfig, *, seed: int, n_symbols: int | None, n_days: int | None,
                   start: pd.Timestamp | None, n_bars: int | None, shock_bar: int | None = None) -> Scenario:
    head, _, preset = spec.partition(":")
    bar_seconds = config.serving.loop.bar_seconds
    synthetic = head == "synthetic"
    if synthetic and preset in SCENARIOS:
        market_spec = f"synthetic:{SCENARIO_MARKET}"
    elif synthetic and preset and preset not in PRESETS:
        raise MarlopsError(f"--source {spec!r}: unknown preset {preset!r}; markets {list(PRESETS)}, "
                           f"scenarios {list(SCENARIOS)}")
    else:
        market_spec = spec
    bars = load_market(market_spec, seed=seed, n_symbols=n_symbols or (20 if synthetic else None),
                       n_days=n_days or (504 if synthetic else None))
    first = replay_start(bars, start)
    bars = limit_bars(bars, first, n_bars)
    upcoming = pd.DatetimeIndex(sorted(bars["timestamp"].unique()))
    upcoming = upcoming[upcoming >= first]
    notes: dict[str, Any] = {"market": market_spec, "seed": seed, "bars": len(upcoming)}

    def one(frame: pd.DataFrame) -> Callable[[], BarSource]:
        return lambda: ReplayBarSource(frame, start=first, bar_seconds=bar_seconds, name=spec)

    if preset == DRIFT_SHOCK:
        at = shock_bar if shock_bar is not None else len(upcoming) // 2
        if not 0 <= at < len(upcoming):
            raise MarlopsError(f"--shock-bar {at} is outside the {len(upcoming)} replayed bars")
        notes.update(shock_bar=at, shock_at=str(upcoming[at]), points=DRIFT_SHOCK_POINTS,
                     shocked=VOLATILITY_INDEX_SYMBOL)
        shocked = drift_shock(bars, upcoming[at])
        return Scenario(DRIFT_SHOCK, shocked, first, one(shocked), notes)
    if preset == FEED_FAULT:
        from market_data.provider_faults import feed_fault_providers

        def providers() -> BarSource:
            from market_data.quorum import QuorumBarSource

            return QuorumBarSource(feed_fault_providers(bars, start=first), config=config.serving.market_data.feed,
                                   bar_seconds=bar_seconds, name=spec)

        notes.update(providers=["sip", "iex", "mirror"], faulty="iex")
        return Scenario(FEED_FAULT, bars, first, providers, notes)
    return Scenario(spec, bars, first, one(bars), notes)
