"""Fit the FeatureSpec (SL model + z-score constants) on a training frame only."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from contracts.config import VolatilityProxyConfig
from contracts.features import (
    MASTER_PORTFOLIO_FEATURES,
    PORTFOLIO_FEATURES,
    REGIME_FEATURES,
    SL_FEATURES,
    FeatureBlock,
    FeatureSpec,
    master_feature_names,
    symbol_feature_names,
)
from features import market_features as mf
from features import master_features as ms
from features.alt_features import AltFreshness, fit_tables
from features.drift_reference import fit_drift_reference
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
        # v2 alt-data columns are NaN where the feed was stale: fitted on the fresh values only.
        values = values[np.isfinite(values)]
        if len(values) == 0:
            raise MissingDataError(f"feature {name}: no usable (fresh) value in the training rows")
        means.append(float(values.mean()))
        stds.append(float(max(values.std(), STD_FLOOR)))
    return FeatureBlock(names=names, means=tuple(means), stds=tuple(stds))


def fit_feature_spec(
    bars_train: pd.DataFrame,
    *,
    seed: int = 0,
    clip: float = 5.0,
    volatility_proxy: VolatilityProxyConfig | None = None,
    observation_version: int = 1,
    alt: object | None = None,
    freshness: AltFreshness | None = None,
) -> FeatureSpec:
    """Fit on raw bars: `volatility_proxy` (default index:VIX; `auto` is resolved against the bars) fills the
    volatility input, and the proxy used is named in the spec (`volatility_source`).

    `observation_version` 2 adds the sentiment/macro features, joined as of each bar from `alt` (an
    features.alt_features.AltProvider, e.g. market_data.alt_data.AltFeeds); their constants are fitted on the
    fresh records only and `freshness` (default 6 h sentiment / 72 h macro) enters the spec's definitions."""
    symbol_names, master_names = symbol_feature_names(observation_version), master_feature_names(observation_version)
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
    definitions = feature_definitions()
    if observation_version == 2:
        freshness = freshness or AltFreshness()
        definitions |= freshness.definitions()
        symbol_table, master = fit_tables(alt, symbol_table, master, freshness)
    spec = FeatureSpec(
        version=observation_version,
        symbol=_block(symbol_names, symbol_table),
        master=_block(master_names, master),
        sl_model=sl_model,
        clip=clip,
        definitions=definitions,
        volatility_source=proxy.name,
    )
    if observation_version == 2:
        # The drift reference sees what the policy sees: stale values at their neutral (mean) value.
        symbol_table = symbol_table.fillna({n: spec.symbol.means[spec.symbol.names.index(n)]
                                            for n in symbol_names if n in symbol_table.columns})
        master = master.fillna({n: spec.master.means[spec.master.names.index(n)]
                                for n in master_names if n in master.columns})
    spec = spec.model_copy(update={"drift_reference": fit_drift_reference(spec.symbol, spec.master, symbol_table,
                                                                          master)})
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
