"""The training distribution of each feature, fitted with the spec and kept in it (FeatureSpec.drift_reference).

Values are in the spec's z units ((raw - mean) / std, not clipped), so a live value compares with training
directly in standard deviations. Binary regime flags and portfolio values are not monitored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from contracts.drift import REFERENCE_QUANTILE_LEVELS, DriftReference, FeatureReference
from contracts.features import FeatureBlock, MASTER_PORTFOLIO_FEATURES, PORTFOLIO_FEATURES, REGIME_FEATURES

# Unit-scale flags and portfolio values: no distribution to watch.
NOT_MONITORED: frozenset[str] = frozenset(REGIME_FEATURES + PORTFOLIO_FEATURES + MASTER_PORTFOLIO_FEATURES)


def monitored_names(block: FeatureBlock) -> tuple[str, ...]:
    return tuple(n for n in block.names if n not in NOT_MONITORED)


def z_scores(block: FeatureBlock, name: str, raw: np.ndarray) -> np.ndarray:
    i = block.names.index(name)
    return (np.asarray(raw, dtype=np.float64) - block.means[i]) / block.stds[i]


def _reference(values: np.ndarray) -> FeatureReference | None:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    quantiles = np.quantile(values, REFERENCE_QUANTILE_LEVELS)
    # Rounded so the JSON (and the spec hash) is compact and stable across platforms' last-bit differences.
    rounded = np.maximum.accumulate(np.round(quantiles, 6))
    return FeatureReference(quantiles=tuple(float(q) for q in rounded), n=len(values))


def fit_drift_reference(symbol: FeatureBlock, master: FeatureBlock, symbol_table: pd.DataFrame,
                        master_table: pd.DataFrame) -> DriftReference:
    """Quantiles of every monitored feature over the training rows (symbol features pooled over symbols)."""
    features: dict[str, FeatureReference] = {}
    for block, table in ((symbol, symbol_table), (master, master_table)):
        for name in monitored_names(block):
            if name in features or name not in table.columns:
                continue
            ref = _reference(z_scores(block, name, table[name].to_numpy(dtype=np.float64)))
            if ref is not None:
                features[name] = ref
    return DriftReference(features=features)
