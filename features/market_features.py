"""Raw, causal per-symbol market features: the row at bar t uses bars up to and including t only.

Each feature has finite memory (at most WARMUP_BARS bars), so a trailing window of history reproduces
the bulk values exactly (see features.windows for why the sums have a fixed order).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contracts.bars import BAR_COLUMNS, BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL
from contracts.features import REGIME_FEATURES, SYMBOL_MARKET_FEATURES
from features.errors import MissingDataError
from features.windows import lag, rolling_mean, rolling_std, rolling_sum
from market_data.source import INDEX_SYMBOLS

logger = logging.getLogger(__name__)

RETURN_HORIZONS: tuple[int, ...] = (1, 5, 20)
VOL_WINDOW = 20
RSI_WINDOW = 14
VOLUME_WINDOW = 20
SMA_WINDOW = 20
BEAR_LOOKBACK = 20
HIGH_VOL_VIX_THRESHOLD = 25.0  # VIX close above this = high-volatility regime
BEAR_RETURN_THRESHOLD = -0.05  # SPY 20-bar log return below this = bear regime
VIX_SCALE = 100.0

# Bars (including the current one) needed before every feature is defined: ret_20 / vol_20 need 21 closes.
WARMUP_BARS = max(max(RETURN_HORIZONS), VOL_WINDOW, RSI_WINDOW, BEAR_LOOKBACK) + 1

MARKET_FEATURE_COLUMNS: tuple[str, ...] = SYMBOL_MARKET_FEATURES + REGIME_FEATURES


@dataclass(frozen=True)
class WideBars:
    """Bars pivoted to (timestamp x symbol) arrays over the frame's own calendar."""

    timestamps: pd.DatetimeIndex
    symbols: tuple[str, ...]  # trading symbols, sorted
    close: np.ndarray  # [T, N]
    volume: np.ndarray  # [T, N]
    bench_close: np.ndarray  # [T]
    vix_close: np.ndarray  # [T]


def to_wide(bars: pd.DataFrame) -> WideBars:
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise MissingDataError(f"bars lack columns {missing}")
    present = set(bars["symbol"].unique())
    absent = [s for s in (BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL) if s not in present]
    if absent:
        raise MissingDataError(f"bars lack {absent}: the benchmark and volatility index feed every observation")
    stamp_codes, stamps = pd.factorize(bars["timestamp"], sort=True)
    symbol_codes, names = pd.factorize(bars["symbol"], sort=True)
    if (stamp_codes < 0).any() or (symbol_codes < 0).any():
        raise MissingDataError("bars hold rows with an empty timestamp or symbol")
    n_stamps, n_names = len(stamps), len(names)
    cell = stamp_codes.astype(np.int64) * n_names + symbol_codes
    counts = np.bincount(cell, minlength=n_stamps * n_names)
    if (counts > 1).any():
        repeated = np.flatnonzero(counts[cell] > 1)
        first = bars.iloc[repeated[0]]
        raise MissingDataError(
            f"bars hold {len(repeated)} rows with a repeated (timestamp, symbol), "
            f"e.g. {first['symbol']} at {first['timestamp']} (rows {repeated[:5].tolist()})"
        )

    return wide_from_codes(
        pd.DatetimeIndex(stamps, name="timestamp"), [str(name) for name in names], stamp_codes, symbol_codes,
        bars["close"].to_numpy(dtype=np.float64, na_value=np.nan),
        bars["volume"].to_numpy(dtype=np.float64, na_value=np.nan),
    )


def wide_from_codes(timestamps: pd.DatetimeIndex, names: list[str], stamp_codes: np.ndarray, symbol_codes: np.ndarray,
                    close: np.ndarray, volume: np.ndarray) -> WideBars:
    """WideBars from rows already coded: row i is (timestamps[stamp_codes[i]], names[symbol_codes[i]]), codes
    unique per cell, `names` sorted and holding SPY and VIX. to_wide codes a frame and calls this; the feature
    service, which keeps its window coded, calls it directly (same grids, bit for bit)."""
    n_stamps, n_names = len(timestamps), len(names)

    def grid(values: np.ndarray) -> np.ndarray:
        out = np.full((n_stamps, n_names), np.nan)
        out[stamp_codes, symbol_codes] = values
        return out

    with np.errstate(invalid="ignore"):
        close = grid(close)
        # Non-positive prices are bad data: make them missing so logs stay defined and the rows drop out.
        close = np.where(close > 0, close, np.nan)
    volume = grid(volume)
    column_of = {name: j for j, name in enumerate(names)}
    trading = [j for j, name in enumerate(names) if name not in INDEX_SYMBOLS]
    return WideBars(
        timestamps=timestamps,
        symbols=tuple(names[j] for j in trading),
        close=np.ascontiguousarray(close[:, trading]),
        volume=np.ascontiguousarray(volume[:, trading]),
        bench_close=np.ascontiguousarray(close[:, column_of[BENCHMARK_SYMBOL]]),
        vix_close=np.ascontiguousarray(close[:, column_of[VOLATILITY_INDEX_SYMBOL]]),
    )


def log_return(close: np.ndarray, k: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(close / lag(close, k))


def rsi(close: np.ndarray, window: int = RSI_WINDOW) -> np.ndarray:
    """Simple-average RSI rescaled to [-1, 1]: (gains - losses) / (gains + losses) over `window` changes.

    Wilder's exponential smoothing is avoided on purpose: its infinite memory breaks trailing-window parity.
    """
    change = close - lag(close, 1)
    gains = rolling_sum(np.where(change > 0, change, np.where(np.isnan(change), np.nan, 0.0)), window)
    losses = rolling_sum(np.where(change < 0, -change, np.where(np.isnan(change), np.nan, 0.0)), window)
    total = gains + losses
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (gains - losses) / total, np.where(np.isnan(total), np.nan, 0.0))


def zscore_last(x: np.ndarray, window: int) -> np.ndarray:
    """(x_t - mean) / std over the trailing window including t; 0 where the window is constant."""
    mean = rolling_mean(x, window)
    std = rolling_std(x, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, (x - mean) / std, np.where(np.isnan(std), np.nan, 0.0))


def benchmark_regimes(wide: WideBars) -> tuple[np.ndarray, np.ndarray]:
    """(regime_high_vol, regime_bear) per timestamp, NaN where their inputs are missing."""
    vix = wide.vix_close
    high_vol = np.where(np.isnan(vix), np.nan, (vix > HIGH_VOL_VIX_THRESHOLD).astype(np.float64))
    bench_ret = log_return(wide.bench_close[:, None], BEAR_LOOKBACK)[:, 0]
    bear = np.where(np.isnan(bench_ret), np.nan, (bench_ret < BEAR_RETURN_THRESHOLD).astype(np.float64))
    return high_vol, bear


def symbol_feature_arrays(wide: WideBars) -> dict[str, np.ndarray]:
    """Every column of MARKET_FEATURE_COLUMNS as a [T, N] array (NaN where undefined)."""
    close = wide.close
    n = len(wide.symbols)
    one_bar = log_return(close, 1)
    sma = rolling_mean(close, SMA_WINDOW)
    bench = wide.bench_close[:, None]
    high_vol, bear = benchmark_regimes(wide)

    def broadcast(column: np.ndarray) -> np.ndarray:
        return np.repeat(column.reshape(-1, 1), n, axis=1)

    return {
        "ret_1": one_bar,
        "ret_5": log_return(close, 5),
        "ret_20": log_return(close, 20),
        "vol_20": rolling_std(one_bar, VOL_WINDOW),
        "rsi_14": rsi(close, RSI_WINDOW),
        "volume_z_20": zscore_last(wide.volume, VOLUME_WINDOW),
        "sma_gap_20": close / sma - 1.0,
        "bench_ret_1": broadcast(log_return(bench, 1)),
        "bench_ret_5": broadcast(log_return(bench, 5)),
        "vix_level": broadcast(wide.vix_close / VIX_SCALE),
        "regime_high_vol": broadcast(high_vol),
        "regime_bear": broadcast(bear),
    }


def market_table(wide: WideBars, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    index = pd.MultiIndex.from_product([wide.timestamps, list(wide.symbols)], names=["timestamp", "symbol"])
    table = pd.DataFrame({name: arrays[name].reshape(-1) for name in MARKET_FEATURE_COLUMNS}, index=index)
    complete = np.isfinite(table.to_numpy()).all(axis=1)
    if not complete.any():
        logger.warning("no complete feature rows: %d timestamps (need >= %d bars per symbol)", len(wide.timestamps), WARMUP_BARS)
    return table.loc[complete]


def market_rows_at(wide: WideBars, arrays: dict[str, np.ndarray], row: int,
                   symbols: tuple[str, ...], *, partial: bool = False) -> tuple[pd.DataFrame | None, list[str]]:
    """`market_table(wide, arrays)` at the timestamp in position `row`, for `symbols` in their order, indexed by
    symbol: the same values as `market_table(...).xs(ts).loc[list(symbols)]` without building the whole table
    (what the feature service needs at each bar). Also the symbols without a complete row there: with
    `partial`, the rows of the complete symbols are returned without them (None when none is complete);
    otherwise any incomplete symbol makes the rows None."""
    column = {s: j for j, s in enumerate(wide.symbols)}
    values = np.column_stack([arrays[name][row] for name in MARKET_FEATURE_COLUMNS])
    complete = np.isfinite(values).all(axis=1)
    incomplete = [s for s in symbols if s not in column or not complete[column[s]]]
    if incomplete:
        if not partial or len(incomplete) == len(symbols):
            return None, incomplete
        missing = set(incomplete)
        symbols = tuple(s for s in symbols if s not in missing)
    rows = values[[column[s] for s in symbols]]
    return (pd.DataFrame(rows, index=pd.Index(list(symbols), name="symbol"), columns=list(MARKET_FEATURE_COLUMNS)),
            incomplete)


def compute_market_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Complete feature rows, MultiIndex (timestamp, symbol) over trading symbols, columns MARKET_FEATURE_COLUMNS.

    Rows inside the warm-up (or whose window touches a missing bar) are dropped, never filled.
    """
    wide = to_wide(bars)
    return market_table(wide, symbol_feature_arrays(wide))
