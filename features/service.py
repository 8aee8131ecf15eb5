"""Per-decision-interval feature service: keeps a trailing window of bars and turns each new bar into a snapshot.

Features are computed with the same code as training (compute_feature_tables = compute_market_features +
compute_master_market_features in one pass), on a window at least WARMUP_BARS long; since every feature has finite memory, the snapshot at t
equals the bulk computation at t (the parity tests check it bit for bit, via observation checksums).
Parity of the cross-sectional master features assumes the service serves the training universe.
The spec's volatility proxy (`volatility_source`) is applied to the buffer before every computation, as in
training; the window must cover the proxy's own warm-up (a realized proxy needs `window` benchmark returns
before its first value), and bars lacking the proxy's input are refused.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from contracts.bars import BAR_COLUMNS, BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL
from contracts.config import VolatilityProxyConfig
from contracts.features import REGIME_FEATURES, FeatureSpec
from features.alt_features import AltJoin
from features.errors import FeatureError, MissingDataError
from features.market_features import WARMUP_BARS, WideBars, market_rows_at, symbol_feature_arrays, to_wide, wide_from_codes
from features.master_features import VIX_CHANGE_HORIZON, master_table
from features.observation import ObservationBuilder
from market_data.errors import MarketDataError
from market_data.volatility import (
    apply_volatility_proxy,
    market_input_symbols,
    non_tradable_symbols,
    proxy_from_spec,
    proxy_warmup_bars,
)

logger = logging.getLogger(__name__)

BAR_MISSING = "BAR_MISSING"
FEATURES_INCOMPLETE = "FEATURES_INCOMPLETE"


@dataclass(frozen=True)
class MarketSnapshot:
    timestamp: pd.Timestamp
    symbols: tuple[str, ...]  # the service's order
    market_rows: pd.DataFrame  # index symbol (service order), raw MARKET_FEATURE_COLUMNS
    master_row: pd.Series  # raw MASTER_MARKET_FEATURES at `timestamp`
    prices: dict[str, float]  # bar close per symbol: the price decisions are made on
    regime_shift: bool  # a regime flag changed since the previous snapshot
    # Symbols of the service left out of this snapshot, with why: BAR_MISSING (no bar at this timestamp) or
    # FEATURES_INCOMPLETE (a bar missing or invalid in the feature window). `market_rows`/`prices` lack them.
    unavailable: dict[str, str] = field(default_factory=dict)
    # v2 specs: sentiment/macro feeds older than the spec's max age at this bar ("sentiment:<SYMBOL>" /
    # "macro:<series>" -> age in hours, inf if never published). Their features sit at the neutral training mean;
    # the trading service raises ALT_FEED_STALE (features.alt_features) and trades on. Always empty for v1.
    stale_feeds: dict[str, float] = field(default_factory=dict)

    @property
    def available(self) -> tuple[str, ...]:
        """The symbols with features this bar, in the service's order."""
        return tuple(s for s in self.symbols if s not in self.unavailable)


def feature_warmup_bars(proxy: VolatilityProxyConfig) -> int:
    """Bars (including the current one) before every feature is defined with `proxy` as the volatility input:
    the market features' WARMUP_BARS, or the proxy's own warm-up plus the vix_change horizon if longer."""
    return max(WARMUP_BARS, proxy_warmup_bars(proxy) + VIX_CHANGE_HORIZON)


class FeatureService:
    def __init__(
        self,
        spec: FeatureSpec,
        symbols: Sequence[str],
        *,
        history: pd.DataFrame | None = None,
        window: int = 64,
        alt: object | None = None,
    ) -> None:
        """`alt`: the sentiment/macro as-of provider (features.alt_features.AltProvider, e.g.
        market_data.alt_data.AltFeeds.from_store(...)) a HybridRLObservation v2 spec joins each bar; required for
        v2 specs, ignored for v1 specs."""
        try:
            self.proxy = proxy_from_spec(spec)
        except MarketDataError as exc:
            raise FeatureError(str(exc)) from exc
        self.warmup = feature_warmup_bars(self.proxy)
        if window < self.warmup:
            raise FeatureError(
                f"window {window} is shorter than the feature warm-up of {self.warmup} bars"
                + (f" (volatility proxy {self.proxy.name})" if self.warmup > WARMUP_BARS else "")
            )
        symbols = tuple(symbols)
        if not symbols:
            raise FeatureError("feature service needs at least one symbol")
        repeated = sorted({s for s in symbols if symbols.count(s) > 1})
        if repeated:
            raise FeatureError(f"symbols listed more than once: {repeated}")
        indices = sorted(set(symbols) & non_tradable_symbols(self.proxy))
        if indices:
            raise FeatureError(
                f"{indices} are market inputs, not tradable symbols of the service "
                f"(volatility proxy {self.proxy.name})"
            )
        self.symbols = symbols
        self.window = window
        self.builder = ObservationBuilder(spec)
        self._alt = AltJoin(spec, alt) if spec.version >= 2 else None
        # Benchmark + the proxy's input: what a feed must deliver on top of `symbols`.
        self.market_inputs = market_input_symbols(self.proxy)
        self._wanted = set(symbols) | set(self.market_inputs)
        # The trailing window, one entry per timestamp (oldest first): its rows (BAR_COLUMNS, the wanted symbols) and
        # the same rows coded for the features (symbols, closes, volumes as arrays). Appending a bar and dropping the
        # oldest costs nothing per row held; the long frame is joined only when something reads it.
        self._blocks: deque[_Block] = deque(maxlen=window)
        self._joined: pd.DataFrame | None = None
        self._last_regime: tuple[float, ...] | None = None
        if history is not None and not history.empty:
            self._check_columns(history, "history")
            absent = [s for s in self.market_inputs if not (history["symbol"] == s).any()]
            if absent:
                raise MissingDataError(
                    f"history lacks {absent}: the benchmark and the spec's volatility proxy {self.proxy.name} need them"
                )
            kept = history.loc[history["symbol"].isin(self._wanted), list(BAR_COLUMNS)]
            recent = np.sort(kept["timestamp"].unique())[-window:]
            kept = kept[kept["timestamp"].isin(recent)].sort_values(["timestamp", "symbol"]).reset_index(drop=True)
            for _, rows in kept.groupby("timestamp", sort=True, dropna=False):
                self._blocks.append(_Block.of(rows.reset_index(drop=True)))

    @property
    def last_timestamp(self) -> pd.Timestamp | None:
        return self._blocks[-1].timestamp if self._blocks else None

    @property
    def n_bars(self) -> int:
        """Distinct timestamps currently held (at most `window`)."""
        return len(self._blocks)

    def window_bars(self) -> pd.DataFrame:
        """The raw bars of the trailing window (BAR_COLUMNS), oldest first: what a bulk recomputation reads."""
        return self._buffer

    @property
    def _buffer(self) -> pd.DataFrame:
        """The trailing window as one frame (BAR_COLUMNS), oldest timestamp first."""
        if self._joined is None:
            if self._blocks:
                self._joined = pd.concat([b.rows for b in self._blocks], ignore_index=True)
            else:
                self._joined = pd.DataFrame({c: pd.Series(dtype=object) for c in BAR_COLUMNS})
        return self._joined

    @staticmethod
    def _check_columns(bars: pd.DataFrame, what: str) -> None:
        missing = [c for c in BAR_COLUMNS if c not in bars.columns]
        if missing:
            raise MissingDataError(f"{what} lack columns {missing}")

    def on_bars(self, bars_at_t: pd.DataFrame) -> MarketSnapshot:
        """Ingest the bars of one new timestamp and return the snapshot at that timestamp."""
        self._check_columns(bars_at_t, "bars")
        stamps = bars_at_t["timestamp"].unique()
        if len(stamps) != 1:
            raise FeatureError(f"on_bars takes the bars of exactly one timestamp, got {len(stamps)}: {list(stamps)[:3]}")
        ts = pd.Timestamp(stamps[0])
        if ts.tzinfo is None:
            raise FeatureError(f"bar timestamp {ts} is naive: bars carry tz-aware UTC timestamps")
        names = bars_at_t["symbol"].tolist()
        present = set(names)
        if len(present) != len(names):
            repeated = sorted(bars_at_t.loc[bars_at_t["symbol"].duplicated(), "symbol"].unique())
            raise FeatureError(f"bars at {ts} hold more than one bar for {repeated}")
        last = self.last_timestamp
        if last is not None and ts <= last:
            raise FeatureError(f"bars at {ts} arrive after {last}: bars must move forward in time")
        # A tradable symbol without a bar at ts is left out of this snapshot (`unavailable`): the rest trade on.
        # The market inputs feed every symbol's features: without them there is no snapshot.
        inputs = [s for s in self.market_inputs if s not in present]
        if inputs:
            raise MissingDataError(f"bars at {ts} lack symbols {inputs} (market inputs {inputs}: the benchmark and "
                                   f"the spec's volatility proxy {self.proxy.name})")
        wanted = np.fromiter((n in self._wanted for n in names), dtype=bool, count=len(names))
        fresh = (bars_at_t[list(BAR_COLUMNS)] if wanted.all() else bars_at_t.loc[wanted, list(BAR_COLUMNS)]).reset_index(drop=True)
        self._blocks.append(_Block.of(fresh))  # the oldest timestamp leaves the window (deque maxlen)
        self._joined = None
        return self._snapshot(ts, fresh)

    def _wide(self, ts: pd.Timestamp) -> WideBars:
        """The window pivoted for the features, with the spec's volatility proxy applied. With the bars' own
        VIX (`index`) the proxy changes nothing and the coded window is pivoted directly (wide_from_codes, as
        to_wide does); anything else (another proxy, a window to_wide would refuse) goes through the frame."""
        blocks = self._blocks
        if self.proxy.source == "index" and all(b.clean for b in blocks):
            names = sorted(set().union(*(b.names for b in blocks)))
            if BENCHMARK_SYMBOL in names and VOLATILITY_INDEX_SYMBOL in names:
                code = {n: i for i, n in enumerate(names)}
                return wide_from_codes(
                    pd.DatetimeIndex([b.timestamp for b in blocks], name="timestamp"), names,
                    np.repeat(np.arange(len(blocks)), [len(b.names) for b in blocks]),
                    np.concatenate([b.codes(names, code) for b in blocks]),
                    np.concatenate([b.close for b in blocks]), np.concatenate([b.volume for b in blocks]))
        try:
            inputs = apply_volatility_proxy(self._buffer, self.proxy)
        except MarketDataError as exc:
            raise MissingDataError(f"features at {ts}: {exc}") from exc
        return to_wide(inputs)

    def _snapshot(self, ts: pd.Timestamp, fresh: pd.DataFrame) -> MarketSnapshot:
        # The features of the window (same code as training: symbol_feature_arrays, master_table), read at its
        # last timestamp, ts; only that row of the market table is built.
        wide = self._wide(ts)
        arrays = symbol_feature_arrays(wide)
        master = master_table(wide, arrays)
        market_rows, incomplete = market_rows_at(wide, arrays, len(wide.timestamps) - 1, self.symbols, partial=True)
        if market_rows is None or ts not in master.index:
            have = self.n_bars
            reason = (
                f"history too short: {have} bars held, {self.warmup} needed"
                if have < self.warmup
                else f"a bar in the last {self.warmup} is missing or invalid"
            )
            what = f"symbols {incomplete}" if incomplete else f"the master features (SPY/{self.proxy.name}/breadth)"
            raise MissingDataError(f"features at {ts} incomplete for {what}: {reason}")
        master_row = master.loc[ts]
        stale: dict[str, float] = {}
        if self._alt is not None:  # v2: the as-of sentiment/macro join, the same as training's (AltJoin)
            market_rows, master_row, stale = self._alt.snapshot(ts, market_rows, master_row)
        closes = dict(zip(fresh["symbol"].tolist(), fresh["close"].to_numpy()))
        unavailable = {s: (FEATURES_INCOMPLETE if s in closes else BAR_MISSING) for s in incomplete}
        if unavailable:
            logger.warning("features at %s: %d symbols left out this bar: %s", ts, len(unavailable),
                           dict(list(unavailable.items())[:10]))
        regime = tuple(float(master_row[name]) for name in REGIME_FEATURES)
        shift = self._last_regime is not None and regime != self._last_regime
        if shift:
            logger.info("regime shift at %s: %s -> %s", ts, self._last_regime, regime)
        self._last_regime = regime
        return MarketSnapshot(
            timestamp=ts,
            symbols=self.symbols,
            market_rows=market_rows,
            master_row=master_row,
            prices={s: float(closes[s]) for s in self.symbols if s not in unavailable},
            regime_shift=shift,
            unavailable=unavailable,
            stale_feeds=stale,
        )

    # -- passthroughs to the observation builder (same code as training) ----------------------------

    @staticmethod
    def _rows(source: MarketSnapshot | pd.DataFrame) -> pd.DataFrame:
        return source.market_rows if isinstance(source, MarketSnapshot) else source

    def symbol_market_matrix(self, source: MarketSnapshot | pd.DataFrame) -> np.ndarray:
        return self.builder.symbol_market_matrix(self._rows(source))

    def symbol_observations(
        self, source: MarketSnapshot | pd.DataFrame, position_levels: np.ndarray, gross_exposure: float
    ) -> np.ndarray:
        return self.builder.symbol_observations(self._rows(source), position_levels, gross_exposure)

    def master_observation(
        self, source: MarketSnapshot | pd.Series, drawdown: float, gross_exposure: float
    ) -> np.ndarray:
        row = source.master_row if isinstance(source, MarketSnapshot) else source
        return self.builder.master_observation(row, drawdown, gross_exposure)


@dataclass(frozen=True)
class _Block:
    """The bars of one timestamp in the feature window: the rows, and their symbols/closes/volumes as arrays."""

    timestamp: pd.Timestamp
    rows: pd.DataFrame
    names: tuple[str, ...]
    close: np.ndarray
    volume: np.ndarray
    clean: bool  # string symbols, each once: codable without to_wide's checks
    _codes: dict[tuple[str, ...], np.ndarray]

    @classmethod
    def of(cls, rows: pd.DataFrame) -> _Block:
        names = tuple(rows["symbol"].tolist())
        timestamp = pd.Timestamp(rows["timestamp"].iloc[0])
        clean = timestamp is not pd.NaT and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
        return cls(timestamp=timestamp, rows=rows, names=names,
                   close=rows["close"].to_numpy(dtype=np.float64, na_value=np.nan),
                   volume=rows["volume"].to_numpy(dtype=np.float64, na_value=np.nan), clean=clean, _codes={})

    def codes(self, names: list[str], code: dict[str, int]) -> np.ndarray:
        """Position of each row's symbol in `names` (cached while the window's symbols stay the same)."""
        key = tuple(names)
        cached = self._codes.get(key)
        if cached is None:
            self._codes.clear()
            cached = self._codes[key] = np.fromiter((code[n] for n in self.names), dtype=np.int64, count=len(self.names))
        return cached
