"""Raw, causal market features of the master agent: one row per timestamp."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from contracts.features import MASTER_MARKET_FEATURES
from features.market_features import (
    VIX_SCALE,
    WideBars,
    benchmark_regimes,
    log_return,
    market_table,
    symbol_feature_arrays,
    to_wide,
)
from features.windows import row_sum_over_columns

logger = logging.getLogger(__name__)

VIX_CHANGE_HORIZON = 5


def master_table(wide: WideBars, per_symbol: dict[str, np.ndarray]) -> pd.DataFrame:
    ret_5, vol_20 = per_symbol["ret_5"], per_symbol["vol_20"]
    ret_ok, vol_ok = np.isfinite(ret_5), np.isfinite(vol_20)
    with np.errstate(invalid="ignore", divide="ignore"):
        n_ret = ret_ok.sum(axis=1).astype(np.float64)
        n_vol = vol_ok.sum(axis=1).astype(np.float64)
        breadth = np.where(n_ret > 0, row_sum_over_columns((ret_5 > 0).astype(np.float64), ret_ok) / n_ret, np.nan)
        avg_vol = np.where(n_vol > 0, row_sum_over_columns(vol_20, vol_ok) / n_vol, np.nan)
    bench = wide.bench_close[:, None]
    vix = wide.vix_close[:, None]
    high_vol, bear = benchmark_regimes(wide)
    columns = {
        "bench_ret_1": log_return(bench, 1)[:, 0],
        "bench_ret_5": log_return(bench, 5)[:, 0],
        "bench_ret_20": log_return(bench, 20)[:, 0],
        "vix_level": wide.vix_close / VIX_SCALE,
        "vix_change_5": log_return(vix, VIX_CHANGE_HORIZON)[:, 0],
        "breadth_5": breadth,
        "avg_vol_20": avg_vol,
        "regime_high_vol": high_vol,
        "regime_bear": bear,
    }
    table = pd.DataFrame({name: columns[name] for name in MASTER_MARKET_FEATURES}, index=wide.timestamps)
    complete = np.isfinite(table.to_numpy()).all(axis=1)
    return table.loc[complete]


def compute_master_market_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Complete rows indexed by timestamp, columns MASTER_MARKET_FEATURES.

    Cross-sectional features (breadth_5, avg_vol_20) use the trading symbols whose value is defined at t
    (a symbol listed later joins once its own warm-up is over); a timestamp with none is dropped.
    """
    wide = to_wide(bars)
    return master_table(wide, symbol_feature_arrays(wide))


def compute_feature_tables(bars: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(compute_market_features(bars), compute_master_market_features(bars)), sharing one pass over the bars."""
    wide = to_wide(bars)
    arrays = symbol_feature_arrays(wide)
    return market_table(wide, arrays), master_table(wide, arrays)
