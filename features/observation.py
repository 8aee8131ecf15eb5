"""HybridRLObservation assembly: raw features -> SL signal -> z-score with the spec's constants -> clip -> float32.

Training (`training_tensors`) and serving (the per-step methods, via FeatureService) go through the same
functions, row-wise and elementwise, so an observation is bit-identical wherever it is built.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contracts.features import (
    MASTER_MARKET_FEATURES,
    MASTER_PORTFOLIO_FEATURES,
    PORTFOLIO_FEATURES,
    SL_FEATURES,
    SENTIMENT_FEATURES,
    SYMBOL_FEATURES,
    FeatureBlock,
    FeatureSpec,
    master_feature_names,
    master_market_names,
    symbol_feature_names,
    symbol_market_names,
)
from features.alt_features import AltJoin
from features.errors import FeatureError, MissingDataError
from features.market_features import MARKET_FEATURE_COLUMNS, to_wide
from features.master_features import compute_feature_tables
from features.sl_signal import predict_sl
from market_data.errors import MarketDataError
from market_data.volatility import apply_volatility_proxy, proxy_from_spec

logger = logging.getLogger(__name__)

SYMBOL_MARKET_DIM = len(SYMBOL_FEATURES) - len(PORTFOLIO_FEATURES)
MASTER_MARKET_DIM = len(MASTER_MARKET_FEATURES)
SYMBOL_MARKET_NAMES: tuple[str, ...] = SYMBOL_FEATURES[:SYMBOL_MARKET_DIM]
# The constants above are HybridRLObservation v1's; a builder's own widths follow its spec's version
# (ObservationBuilder.symbol_market_dim / master_market_dim).


@dataclass(frozen=True)
class TrainingTensors:
    timestamps: pd.DatetimeIndex  # [T]
    symbols: tuple[str, ...]  # [N], sorted
    symbol_market: np.ndarray  # [T, N, symbol_market_dim of the spec's version] float32, normalised
    forward_returns: np.ndarray  # [T, N] float64: close[t+1] / close[t] - 1, last row 0
    master_market: np.ndarray  # [T, master_market_dim of the spec's version] float32, normalised
    closes: np.ndarray  # [T, N] float64: the bar closes the decisions are made on
    benchmark_closes: np.ndarray  # [T] float64: the benchmark's closes at the same bars


def observation_checksum(array: np.ndarray) -> str:
    """sha256 over the shape and the C-contiguous float32 bytes."""
    values = np.ascontiguousarray(array, dtype=np.float32)
    digest = hashlib.sha256(("float32:" + "x".join(str(d) for d in values.shape) + "|").encode())
    digest.update(values.tobytes(order="C"))
    return digest.hexdigest()


def _labels(index: pd.Index, rows: np.ndarray, limit: int = 5) -> str:
    shown = [str(index[i]) for i in rows[:limit]]
    return ", ".join(shown) + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


class ObservationBuilder:
    def __init__(self, spec: FeatureSpec) -> None:
        # The spec's version picks the feature lists it is checked against: v1 and v2 specs both build.
        try:
            symbol_names, master_names = symbol_feature_names(spec.version), master_feature_names(spec.version)
        except ValueError as exc:
            raise FeatureError(f"feature spec: {exc}") from exc
        if spec.symbol.names != symbol_names:
            raise FeatureError(
                f"spec symbol features {list(spec.symbol.names)} differ from this build's v{spec.version} "
                f"{list(symbol_names)}"
            )
        if spec.master.names != master_names:
            raise FeatureError(
                f"spec master features {list(spec.master.names)} differ from this build's v{spec.version} "
                f"{list(master_names)}"
            )
        self.spec = spec
        self.version = spec.version
        self.symbol_market_names = symbol_market_names(spec.version)
        self.master_market_names = master_market_names(spec.version)
        self.symbol_market_dim = len(self.symbol_market_names)
        self.master_market_dim = len(self.master_market_names)
        # The raw columns a symbol row must hold: the market features, plus the joined sentiment in v2.
        self._symbol_raw = MARKET_FEATURE_COLUMNS + (SENTIMENT_FEATURES if spec.version >= 2 else ())
        self.spec_hash = spec.spec_hash()
        self._clip = float(spec.clip)

    def _normalise(self, block: FeatureBlock, names: Sequence[str], values: np.ndarray) -> np.ndarray:
        position = {n: i for i, n in enumerate(block.names)}
        idx = [position[n] for n in names]
        means = np.asarray(block.means, dtype=np.float64)[idx]
        stds = np.asarray(block.stds, dtype=np.float64)[idx]
        scaled = (values - means) / stds
        return np.clip(scaled, -self._clip, self._clip).astype(np.float32)

    @staticmethod
    def _raw(table: pd.DataFrame, names: Sequence[str], what: str) -> np.ndarray:
        missing = [n for n in names if n not in table.columns]
        if missing:
            raise MissingDataError(f"{what} lack columns {missing}")
        # Columns already in order (the feature service's rows): no reindexing copy, the same values.
        same = len(table.columns) == len(names) and all(a == b for a, b in zip(table.columns, names))
        values = (table if same else table.loc[:, list(names)]).to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if len(bad):
            raise MissingDataError(f"{what} hold non-finite values in rows {_labels(table.index, bad)}")
        return values

    # -- symbol agent --------------------------------------------------------------------------------

    def symbol_market_matrix(self, market_rows: pd.DataFrame, sl_probabilities: np.ndarray | None = None) -> np.ndarray:
        """[N, symbol_market_dim] float32 from raw compute_market_features rows (one row per symbol; v2 rows
        also hold the joined SENTIMENT_FEATURES, see features.alt_features).

        `sl_probabilities` replaces the spec's SL model output (training uses walk-forward predictions).
        """
        raw = self._raw(market_rows, self._symbol_raw, "market rows")
        if sl_probabilities is None:
            sl = predict_sl(self.spec.sl_model, market_rows)
        else:
            sl = np.asarray(sl_probabilities, dtype=np.float64).reshape(-1)
            if sl.shape != (len(market_rows),) or not np.isfinite(sl).all():
                raise FeatureError(f"sl_probabilities: need {len(market_rows)} finite values, got shape {sl.shape}")
        position = {n: i for i, n in enumerate(self._symbol_raw)}
        columns = [sl if name in SL_FEATURES else raw[:, position[name]] for name in self.symbol_market_names]
        return self._normalise(self.spec.symbol, self.symbol_market_names, np.column_stack(columns))

    def symbol_portfolio_matrix(self, position_levels: np.ndarray, gross_exposure: float) -> np.ndarray:
        """[N, len(PORTFOLIO_FEATURES)] float32; exposed so simulators build the same portfolio block."""
        levels = np.asarray(position_levels, dtype=np.float64).reshape(-1)
        if not np.isfinite(levels).all() or not np.isfinite(gross_exposure):
            raise FeatureError("position levels and gross exposure must be finite")
        values = np.column_stack([levels, np.full(len(levels), float(gross_exposure))])
        return self._normalise(self.spec.symbol, PORTFOLIO_FEATURES, values)

    def symbol_observations(
        self, market_rows: pd.DataFrame, position_levels: np.ndarray, gross_exposure: float
    ) -> np.ndarray:
        """[N, len(spec.symbol.names)] float32."""
        market = self.symbol_market_matrix(market_rows)
        levels = np.asarray(position_levels).reshape(-1)
        if len(levels) != len(market):
            raise FeatureError(f"got {len(levels)} position levels for {len(market)} symbols")
        return np.concatenate([market, self.symbol_portfolio_matrix(levels, gross_exposure)], axis=1)

    # -- master agent --------------------------------------------------------------------------------

    def master_market_matrix(self, master_rows: pd.DataFrame) -> np.ndarray:
        """[K, master_market_dim] float32 from raw compute_master_market_features rows (v2: plus the joined
        MACRO_FEATURES)."""
        raw = self._raw(master_rows, self.master_market_names, "master rows")
        return self._normalise(self.spec.master, self.master_market_names, raw)

    def master_portfolio_vector(self, drawdown: float, gross_exposure: float) -> np.ndarray:
        """[1, len(MASTER_PORTFOLIO_FEATURES)] float32."""
        values = np.array([[float(drawdown), float(gross_exposure)]], dtype=np.float64)
        if not np.isfinite(values).all():
            raise FeatureError(f"drawdown and gross exposure must be finite, got {values.tolist()}")
        return self._normalise(self.spec.master, MASTER_PORTFOLIO_FEATURES, values)

    def master_observation(self, master_row: pd.Series, drawdown: float, gross_exposure: float) -> np.ndarray:
        """[1, len(spec.master.names)] float32."""
        market = self.master_market_matrix(master_row.to_frame().T)
        return np.concatenate([market, self.master_portfolio_vector(drawdown, gross_exposure)], axis=1)

    # -- training --------------------------------------------------------------------------------------

    def market_inputs(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Raw bars -> the bars the features read, with the spec's volatility proxy applied."""
        try:
            return apply_volatility_proxy(bars, proxy_from_spec(self.spec))
        except MarketDataError as exc:
            raise MissingDataError(f"feature spec {self.spec_hash[:12]}: {exc}") from exc

    def training_tensors(self, bars: pd.DataFrame, *, sl_probabilities: pd.Series | None = None,
                         alt: object | None = None) -> TrainingTensors:
        """Dense tensors over the timestamps where every trading symbol and the master row are complete.

        `bars` are raw bars: the spec's volatility proxy fills the volatility input (as FeatureService does).
        `sl_probabilities` (indexed by (timestamp, symbol)) replaces the spec's SL model output; timestamps where
        it lacks a value for some symbol are left out (walk-forward predictions start after a warm-up).
        `alt`: the sentiment/macro provider a v2 spec joins as of each bar (the same join as FeatureService's);
        ignored for v1 specs.
        """
        join = AltJoin(self.spec, alt) if self.version >= 2 else None
        bars = self.market_inputs(bars)
        market, master = compute_feature_tables(bars)
        if sl_probabilities is not None:
            known = sl_probabilities.reindex(market.index)
            market = market[known.notna().to_numpy()]
        wide = to_wide(bars)
        symbols = wide.symbols
        if not symbols:
            raise MissingDataError("bars hold no trading symbols (only SPY/VIX)")
        per_ts = market.groupby(level="timestamp").size()
        full = per_ts.index[per_ts.to_numpy() == len(symbols)]
        timestamps = pd.DatetimeIndex(full.intersection(master.index).sort_values(), name="timestamp")
        if len(timestamps) == 0:
            counts = market.groupby(level="symbol").size().reindex(list(symbols), fill_value=0).sort_values()
            raise MissingDataError(
                f"no timestamp where all {len(symbols)} symbols have complete features; "
                f"fewest complete rows: {counts.head(5).to_dict()}"
            )
        calendar_after_warmup = len(master.index)
        if sl_probabilities is None and len(timestamps) < calendar_after_warmup:
            logger.warning(
                "training tensors use %d of %d post-warm-up timestamps (a symbol is missing or incomplete elsewhere)",
                len(timestamps), calendar_after_warmup,
            )
        rows = market.loc[pd.MultiIndex.from_product([timestamps, list(symbols)], names=["timestamp", "symbol"])]
        sl = None if sl_probabilities is None else sl_probabilities.reindex(rows.index).to_numpy(dtype=np.float64)
        master_rows = master.loc[timestamps]
        if join is not None:
            rows, master_rows, stale = join.tables(rows, master_rows)
            if stale:
                logger.warning("training tensors: %d stale sentiment/macro values take their neutral (mean) value",
                               stale)
        symbol_market = self.symbol_market_matrix(rows, sl).reshape(len(timestamps), len(symbols),
                                                                    self.symbol_market_dim)
        master_market = self.master_market_matrix(master_rows)
        closes = pd.DataFrame(wide.close, index=wide.timestamps, columns=list(symbols)).loc[timestamps].to_numpy()
        forward = np.zeros_like(closes)
        forward[:-1] = closes[1:] / closes[:-1] - 1.0
        return TrainingTensors(
            timestamps=timestamps,
            symbols=tuple(symbols),
            symbol_market=symbol_market,
            forward_returns=forward,
            master_market=master_market,
            closes=closes,
            benchmark_closes=pd.Series(wide.bench_close, index=wide.timestamps).loc[timestamps].to_numpy(),
        )
