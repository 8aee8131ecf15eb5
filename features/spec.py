"""Fit the FeatureSpec (SL model + z-score constants) on a training frame only."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from contracts.config import VolatilityProxyConfig
from contracts.features import (
    MASTER_FEATURES,
    MASTER_PORTFOLIO_FEATURES,
    PORTFOLIO_FEATURES,
    REGIME_FEATURES,
    SL_FEATURES,
    SYMBOL_FEATURES,
    FeatureBlock,
    FeatureSpec,
)
from features import market_features as mf
from features import master_features as ms
from features.errors import MissingDataError
from features.master_features import compute_feature_tables
from features.sl_signal import fit_sl_model, predict_sl
from market_data.errors import MarketDataError
from market_data.volatility import apply_volatility_proxy, resolve_volatility_proxy

logger = logging.getLogger(__name__)

STD_FLOOR = 1e-6
# Binary flags and portfolio values are already on a unit scale: they pass through un-normalised.
IDENTITY_FEATURES: frozenset[str] = frozenset(REGIME_FEATURES + PORTFOLIO_FEATURES + MASTER_PORTFOLIO_FEATURES)


def _block(names: tuple[str, ...], table: pd.DataFrame) -> FeatureBlock:
    means: list[float] = []
    stds: list[float] = []
    for name in names:
        if name in IDENTITY_FEATURES:
            means.append(0.0)
            stds.append(1.0)
            continue
        values = table[name].to_numpy(dtype=np.float64)
        means.append(float(values.mean()))
        stds.append(float(max(values.std(), STD_FLOOR)))
    return FeatureBlock(names=names, means=tuple(means), stds=tuple(stds))


def fit_feature_spec(
    bars_train: pd.DataFrame,
    *,
    seed: int = 0,
    clip: float = 5.0,
    volatility_proxy: VolatilityProxyConfig | None = None,
) -> FeatureSpec:
    """Fit on raw bars: `volatility_proxy` (default index:VIX; `auto` is resolved against the bars) fills the
    volatility input, and the proxy used is named in the spec (`volatility_source`)."""
    proxy = resolve_volatility_proxy(volatility_proxy or VolatilityProxyConfig(source="index"), bars_train)
    try:
        bars_train = apply_volatility_proxy(bars_train, proxy)
    except MarketDataError as exc:
        raise MissingDataError(str(exc)) from exc
    market, master = compute_feature_tables(bars_train)
    if market.empty or master.empty:
        raise MissingDataError(
            f"training bars yield no complete feature rows ({bars_train['timestamp'].nunique()} timestamps); "
            "need more history than the warm-up"
        )
    sl_model = fit_sl_model(market, bars_train, seed=seed)
    symbol_table = market.assign(**{SL_FEATURES[0]: predict_sl(sl_model, market)})
    spec = FeatureSpec(
        symbol=_block(SYMBOL_FEATURES, symbol_table),
        master=_block(MASTER_FEATURES, master),
        sl_model=sl_model,
        clip=clip,
        definitions=feature_definitions(),
        volatility_source=proxy.name,
    )
    logger.info("feature spec fitted on %d symbol rows, %d master rows, volatility input %s: %s", len(market),
                len(master), spec.volatility_source, spec.spec_hash()[:12])
    return spec


def feature_definitions() -> dict[str, float]:
    """The constants that define the features (not fitted): part of the spec, so part of its hash."""
    return {
        **{f"return_horizon_{i}": float(h) for i, h in enumerate(mf.RETURN_HORIZONS)},
        "vol_window": float(mf.VOL_WINDOW), "rsi_window": float(mf.RSI_WINDOW),
        "volume_window": float(mf.VOLUME_WINDOW), "sma_window": float(mf.SMA_WINDOW),
        "bear_lookback": float(mf.BEAR_LOOKBACK), "high_vol_vix_threshold": float(mf.HIGH_VOL_VIX_THRESHOLD),
        "bear_return_threshold": float(mf.BEAR_RETURN_THRESHOLD), "vix_scale": float(mf.VIX_SCALE),
        "vix_change_horizon": float(ms.VIX_CHANGE_HORIZON),
    }
