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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contracts.bars import BAR_COLUMNS
from contracts.config import VolatilityProxyConfig
from contracts.features import REGIME_FEATURES, FeatureSpec
from features.errors import FeatureError, MissingDataError
from features.market_features import WARMUP_BARS
from features.master_features import VIX_CHANGE_HORIZON, compute_feature_tables
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


@dataclass(frozen=True)
class MarketSnapshot:
    timestamp: pd.Timestamp
    symbols: tuple[str, ...]  # the service's order
    market_rows: pd.DataFrame  # index symbol (service order), raw MARKET_FEATURE_COLUMNS
    master_row: pd.Series  # raw MASTER_MARKET_FEATURES at `timestamp`
    prices: dict[str, float]  # bar close per symbol: the price decisions are made on
    regime_shift: bool  # a regime flag changed since the previous snapshot


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
    ) -> None:
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
        # Benchmark + the proxy's input: what a feed must deliver on top of `symbols`.
        self.market_inputs = market_input_symbols(self.proxy)
        self._wanted = set(symbols) | set(self.market_inputs)
        self._buffer = pd.DataFrame({c: pd.Series(dtype=object) for c in BAR_COLUMNS})
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
            self._buffer = kept[kept["timestamp"].isin(recent)].sort_values(["timestamp", "symbol"]).reset_index(drop=True)

    @property
    def last_timestamp(self) -> pd.Timestamp | None:
        return None if self._buffer.empty else pd.Timestamp(self._buffer["timestamp"].iloc[-1])

    @property
    def n_bars(self) -> int:
        """Distinct timestamps currently held (at most `window`)."""
        return int(self._buffer["timestamp"].nunique())

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
        repeated = sorted(bars_at_t.loc[bars_at_t["symbol"].duplicated(), "symbol"].unique())
        if repeated:
            raise FeatureError(f"bars at {ts} hold more than one bar for {repeated}")
        last = self.last_timestamp
        if last is not None and ts <= last:
            raise FeatureError(f"bars at {ts} arrive after {last}: bars must move forward in time")
        present = set(bars_at_t["symbol"])
        missing = [s for s in (*self.symbols, *self.market_inputs) if s not in present]
        if missing:
            inputs = [s for s in missing if s in self.market_inputs]
            why = (f" (market inputs {inputs}: the benchmark and the spec's volatility proxy {self.proxy.name})"
                   if inputs else "")
            raise MissingDataError(f"bars at {ts} lack symbols {missing}{why}")
        fresh = bars_at_t.loc[bars_at_t["symbol"].isin(self._wanted), list(BAR_COLUMNS)]
        buffer = pd.concat([self._buffer, fresh], ignore_index=True) if not self._buffer.empty else fresh.reset_index(drop=True)
        recent = np.sort(buffer["timestamp"].unique())[-self.window :]
        self._buffer = buffer[buffer["timestamp"].isin(recent)].reset_index(drop=True)
        return self._snapshot(ts, fresh)

    def _snapshot(self, ts: pd.Timestamp, fresh: pd.DataFrame) -> MarketSnapshot:
        try:
            inputs = apply_volatility_proxy(self._buffer, self.proxy)
        except MarketDataError as exc:
            raise MissingDataError(f"features at {ts}: {exc}") from exc
        market, master = compute_feature_tables(inputs)
        try:
            at_t = market.xs(ts, level="timestamp")
        except KeyError:
            at_t = market.iloc[0:0].droplevel("timestamp")
        incomplete = [s for s in self.symbols if s not in at_t.index]
        if incomplete or ts not in master.index:
            have = self.n_bars
            reason = (
                f"history too short: {have} bars held, {self.warmup} needed"
                if have < self.warmup
                else f"a bar in the last {self.warmup} is missing or invalid"
            )
            what = f"symbols {incomplete}" if incomplete else f"the master features (SPY/{self.proxy.name}/breadth)"
            raise MissingDataError(f"features at {ts} incomplete for {what}: {reason}")
        market_rows = at_t.loc[list(self.symbols)]
        master_row = master.loc[ts]
        closes = fresh.set_index("symbol")["close"]
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
            prices={s: float(closes[s]) for s in self.symbols},
            regime_shift=shift,
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
