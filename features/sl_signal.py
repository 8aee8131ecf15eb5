"""Supervised signal: L2 logistic regression of P(next bar closes up) on raw market features.

Fitted with Newton's method in numpy (the objective is strictly convex, so the optimum is unique and
the fit is deterministic). Prediction is an elementwise, fixed-order dot product so that one row scores
identically whether it is scored alone (serving) or inside a large batch (training).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from contracts.features import REGIME_FEATURES, SLModelParams, SYMBOL_MARKET_FEATURES
from features.errors import MissingDataError, SLModelError
from features.market_features import to_wide

logger = logging.getLogger(__name__)

SL_INPUT_FEATURES: tuple[str, ...] = SYMBOL_MARKET_FEATURES + REGIME_FEATURES
L2_PENALTY = 1e-2  # on the mean log-loss; the intercept is not penalised
STD_FLOOR = 1e-6
MAX_NEWTON_STEPS = 100
NEWTON_TOLERANCE = 1e-10
PROBABILITY_EPS = 1e-6  # keeps predictions strictly inside (0, 1)


def next_bar_up_labels(market_features: pd.DataFrame, bars: pd.DataFrame) -> pd.Series:
    """1.0 if the symbol's next bar in `bars` closes above bar t, 0.0 if not, NaN when the next bar is not
    in `bars` (end of the frame, or a missing bar): those rows cannot be labelled without look-ahead."""
    wide = to_wide(bars)
    with np.errstate(invalid="ignore"):
        nxt = np.full_like(wide.close, np.nan)
        nxt[:-1] = wide.close[1:]
        up = np.where(np.isnan(nxt) | np.isnan(wide.close), np.nan, (nxt > wide.close).astype(np.float64))
    table = pd.DataFrame(up, index=wide.timestamps, columns=list(wide.symbols)).stack(future_stack=True)
    table.index = table.index.set_names(["timestamp", "symbol"])
    return table.reindex(market_features.index)


def _design(market_features: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    missing = [n for n in names if n not in market_features.columns]
    if missing:
        raise MissingDataError(f"market features lack SL model inputs {missing}")
    columns = market_features.columns
    same = len(columns) == len(names) and all(a == b for a, b in zip(columns, names))  # no reindexing copy
    return (market_features if same else market_features.loc[:, list(names)]).to_numpy(dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def fit_sl_model(market_features: pd.DataFrame, bars: pd.DataFrame, *, seed: int = 0) -> SLModelParams:
    """Fit on rows of `market_features` whose next bar lies inside `bars`.

    `seed` is accepted for a uniform trainer interface; Newton's method on this convex objective uses no
    randomness, so the result does not depend on it.
    """
    names = tuple(n for n in SL_INPUT_FEATURES if n in market_features.columns)
    if not names:
        raise MissingDataError(f"market features hold none of the SL inputs {list(SL_INPUT_FEATURES)}")
    labels = next_bar_up_labels(market_features, bars).to_numpy()
    x_raw = _design(market_features, names)
    usable = np.isfinite(labels) & np.isfinite(x_raw).all(axis=1)
    x_raw, y = x_raw[usable], labels[usable]
    if len(y) == 0:
        raise SLModelError("no labelled rows: every feature row's next bar is outside the given bars")
    if y.min() == y.max():
        raise SLModelError(f"all {len(y)} labels are {int(y[0])}: cannot fit a classifier on one class")

    means = x_raw.mean(axis=0)
    stds = np.maximum(x_raw.std(axis=0), STD_FLOOR)
    x = np.column_stack([(x_raw - means) / stds, np.ones(len(y))])
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], L2_PENALTY)
    penalty[-1] = 0.0
    n = len(y)
    for step in range(MAX_NEWTON_STEPS):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) / n + penalty * w
        hess = (x * (p * (1.0 - p))[:, None]).T @ x / n + np.diag(penalty) + 1e-12 * np.eye(len(w))
        delta = np.linalg.solve(hess, grad)
        w -= delta
        if np.max(np.abs(delta)) < NEWTON_TOLERANCE:
            break
    else:
        logger.warning("SL model: Newton did not converge in %d steps", MAX_NEWTON_STEPS)
    accuracy = float(((_sigmoid(x @ w) > 0.5) == (y > 0.5)).mean())
    logger.info("SL model fitted on %d rows in %d Newton steps, in-sample accuracy %.3f", n, step + 1, accuracy)
    return SLModelParams(
        feature_names=names,
        means=tuple(float(v) for v in means),
        stds=tuple(float(v) for v in stds),
        coef=tuple(float(v) for v in w[:-1]),
        intercept=float(w[-1]),
    )


def predict_sl(params: SLModelParams, market_features: pd.DataFrame) -> np.ndarray:
    """P(next bar up) per row, float64 in (0, 1)."""
    x = _design(market_features, params.feature_names)
    z = np.full(len(x), params.intercept, dtype=np.float64)
    for j in range(len(params.feature_names)):
        z = z + params.coef[j] * ((x[:, j] - params.means[j]) / params.stds[j])
    return np.clip(_sigmoid(z), PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
