"""SL prediction parity, live: the SL probabilities the served observation carries against a recomputation of
the same bar with the training code path.

Served: the `sl_prob_up` column of the normalised float32 observation the feature service built for Triton,
un-normalised (mean + std * x); entries at the clip bound are left out (clipping discards the value).
Recomputed: compute_market_features on the feature service's raw window (the volatility proxy applied, as in
training), read at the bar, then the spec's SL model. Equal up to float32 rounding; a larger gap means the
live features no longer match what the model was trained on (training/serving skew).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from contracts.features import SL_FEATURES
from features.errors import FeatureError
from features.market_features import compute_market_features
from features.service import FeatureService, MarketSnapshot
from features.sl_signal import predict_sl
from market_data.errors import MarketDataError
from market_data.volatility import apply_volatility_proxy


@dataclass(frozen=True)
class SLParity:
    timestamp: pd.Timestamp
    max_abs_diff: float
    compared: int  # symbols compared (unclipped, present in both)
    worst_symbol: str | None


def sl_parity(service: FeatureService, snapshot: MarketSnapshot) -> SLParity:
    spec = service.builder.spec
    rows = snapshot.market_rows
    served_obs = service.builder.symbol_market_matrix(rows)
    column = spec.symbol.names.index(SL_FEATURES[0])
    x = served_obs[:, column].astype(np.float64)
    served = spec.symbol.means[column] + spec.symbol.stds[column] * x
    unclipped = np.abs(x) < float(np.float32(spec.clip))
    try:
        bulk = compute_market_features(apply_volatility_proxy(service.window_bars(), service.proxy))
    except MarketDataError as exc:
        raise FeatureError(f"SL parity at {snapshot.timestamp}: {exc}") from exc
    try:
        at = bulk.xs(snapshot.timestamp, level="timestamp")
    except KeyError as exc:
        raise FeatureError(f"SL parity at {snapshot.timestamp}: the bulk path has no complete row there") from exc
    common = [s for s in rows.index if s in at.index]
    if not common:
        raise FeatureError(f"SL parity at {snapshot.timestamp}: no symbol in both paths")
    recomputed = pd.Series(predict_sl(spec.sl_model, at.loc[common]), index=common)
    position = {s: i for i, s in enumerate(rows.index)}
    keep = [s for s in common if unclipped[position[s]]]
    if not keep:
        return SLParity(snapshot.timestamp, 0.0, 0, None)
    diffs = np.abs(np.array([served[position[s]] for s in keep]) - recomputed.loc[keep].to_numpy())
    worst = int(np.argmax(diffs))
    return SLParity(snapshot.timestamp, float(diffs[worst]), len(keep), keep[worst])
