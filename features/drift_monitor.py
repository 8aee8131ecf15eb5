"""Live feature drift against the training distribution, one bar at a time (the trading service runs one
monitor per feature spec in use).

Per monitored feature, over a rolling window of the last `window_bars` bars (symbol features pooled over the
symbols, master features one value per bar), in the spec's z units ((raw - training mean) / training std):

  sigma  |mean of the last `sigma_window_bars` bars|: how many training standard deviations the feature's
         recent level sits from its training mean. A KEY feature (config key_features) beyond its limit
         halts trading (FEATURE_DRIFT).
  mean, variance of the window (training: 0 and 1).
  ks     Kolmogorov-Smirnov distance D of the window to the training quantiles (spec.drift_reference).
  psi    population stability index on the training deciles.

Drift score of a feature, in [0, 1]: max(sigma / score_sigma_full, ks / ks_distance_full, psi / psi_full), each
part capped at 1 (the full-scale constants are calibrated on stationary data: docs/data_safety.md). The bar's drift
score is the largest feature score; above `alert_score` the trading service raises FEATURE_DRIFT_SCORE.
KS and PSI run on the symbol features (master-only features, one autocorrelated value per bar, get the sigma
test, mean and variance); they need `min_bars` bars in the window and a spec with a drift reference (specs fitted
before references existed get the sigma test alone). KS/PSI read at most SAMPLE_CAP symbols per bar (a
fixed stride over the service's order), so a 3000-symbol universe costs what a 256-symbol one does.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contracts.config import DriftThresholdsConfig
from contracts.drift import REFERENCE_QUANTILE_LEVELS
from contracts.features import FeatureSpec
from data_checks.drift import ks_distance_to_quantiles, psi_against_quantiles
from features.drift_reference import monitored_names, z_scores
from features.sl_signal import predict_sl

logger = logging.getLogger(__name__)

SAMPLE_CAP = 256
SL_FEATURE = "sl_prob_up"
_LEVELS = np.asarray(REFERENCE_QUANTILE_LEVELS, dtype=np.float64)


@dataclass(frozen=True)
class FeatureDriftState:
    name: str
    sigma: float  # |mean z| of the last sigma_window_bars bars
    mean: float  # window mean (z units)
    variance: float  # window variance (z units; training 1)
    ks: float | None  # KS distance to training, None until min_samples / without a reference
    psi: float | None
    score: float  # in [0, 1]
    key_limit: float | None  # sigma limit when a key feature

    @property
    def breached(self) -> bool:
        return self.key_limit is not None and self.sigma > self.key_limit

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "sigma": round(self.sigma, 4), "mean": round(self.mean, 4),
                "variance": round(self.variance, 4), "ks": None if self.ks is None else round(self.ks, 4),
                "psi": None if self.psi is None else round(self.psi, 4), "score": round(self.score, 4),
                "key_limit": self.key_limit, "breached": self.breached}


@dataclass(frozen=True)
class DriftVerdict:
    timestamp: pd.Timestamp
    score: float  # the bar's drift score: the largest feature score
    features: tuple[FeatureDriftState, ...]

    @property
    def breaches(self) -> tuple[FeatureDriftState, ...]:
        return tuple(f for f in self.features if f.breached)

    def halt_reason(self) -> str | None:
        if not self.breaches:
            return None
        parts = [f"{f.name} {f.sigma:.2f} sigma from training (limit {f.key_limit:g})" for f in self.breaches]
        return "key feature drift: " + "; ".join(parts)

    def worst(self) -> FeatureDriftState | None:
        return max(self.features, key=lambda f: f.score, default=None)


class DriftMonitor:
    def __init__(self, spec: FeatureSpec, thresholds: DriftThresholdsConfig) -> None:
        self.spec = spec
        self.spec_hash = spec.spec_hash()
        self.config = thresholds.monitor
        self._thresholds = thresholds
        self._reference = spec.drift_reference.features if spec.drift_reference is not None else {}
        symbol_names = monitored_names(spec.symbol)
        self._symbol_names = symbol_names
        self._master_names = tuple(n for n in monitored_names(spec.master) if n not in symbol_names)
        known = set(symbol_names) | set(self._master_names)
        self.unmonitored_keys = tuple(sorted(k for k in thresholds.key_features if k not in known))
        if self.unmonitored_keys:
            logger.warning("drift monitor for spec %s: key features %s are not features of this spec (known: %s)",
                           self.spec_hash[:12], list(self.unmonitored_keys), sorted(known))
        if not self._reference:
            logger.warning("drift monitor for spec %s: the spec has no drift reference (fitted before references "
                           "existed): sigma test only, no KS/PSI; retrain to get them", self.spec_hash[:12])
        self._window: deque[dict[str, np.ndarray]] = deque(maxlen=self.config.window_bars)

    @property
    def names(self) -> tuple[str, ...]:
        return self._symbol_names + self._master_names

    def observe(self, timestamp: pd.Timestamp, market_rows: pd.DataFrame, master_row: pd.Series, *,
                sl_probabilities: np.ndarray | None = None) -> DriftVerdict:
        """One bar: the raw market rows of the symbols with features (one row per symbol), the raw master row and,
        when the caller has them, the SL probabilities of those rows (else they are computed from the spec)."""
        self._window.append(self._z_values(market_rows, master_row, sl_probabilities))
        return self.verdict(timestamp)

    def _z_values(self, market_rows: pd.DataFrame, master_row: pd.Series,
                  sl_probabilities: np.ndarray | None) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {}
        for name in self._symbol_names:
            if name == SL_FEATURE:
                if sl_probabilities is not None:
                    raw = np.asarray(sl_probabilities, dtype=np.float64)
                else:
                    raw = predict_sl(self.spec.sl_model, market_rows) if len(market_rows) else np.empty(0)
            elif name in market_rows.columns:
                raw = market_rows[name].to_numpy(dtype=np.float64)
            else:
                continue
            values[name] = z_scores(self.spec.symbol, name, raw)
        for name in self._master_names:
            if name in master_row.index:
                values[name] = z_scores(self.spec.master, name, np.array([float(master_row[name])]))
        return values

    def verdict(self, timestamp: pd.Timestamp) -> DriftVerdict:
        cfg = self.config
        recent = list(self._window)[-cfg.sigma_window_bars:]
        states = []
        for name in self.names:
            bars = [b[name] for b in self._window if name in b]
            if not bars:
                continue
            pooled = np.concatenate(bars)
            pooled = pooled[np.isfinite(pooled)]
            recent_values = np.concatenate([b[name] for b in recent if name in b])
            recent_values = recent_values[np.isfinite(recent_values)]
            if len(pooled) == 0 or len(recent_values) == 0:
                continue
            sigma = abs(float(recent_values.mean()))
            key = self._thresholds.key_features.get(name)
            ks = psi = None
            # Master-only features have one, strongly autocorrelated, value per bar: too few for a KS or PSI that
            # means anything over a window (they alarmed on stationary data); they get the sigma test.
            reference = self._reference.get(name) if name in self._symbol_names else None
            if reference is not None and len(bars) >= cfg.min_bars:
                sample = np.concatenate([_capped(b) for b in bars])
                sample = sample[np.isfinite(sample)]
                quantiles = np.asarray(reference.quantiles, dtype=np.float64)
                ks = ks_distance_to_quantiles(sample, quantiles, _LEVELS)
                psi = psi_against_quantiles(sample, quantiles)
            parts = [min(1.0, sigma / cfg.score_sigma_full)]
            if ks is not None:
                parts.append(min(1.0, ks / cfg.ks_distance_full))
            if psi is not None:
                parts.append(min(1.0, psi / cfg.psi_full))
            states.append(FeatureDriftState(
                name=name, sigma=sigma, mean=float(pooled.mean()), variance=float(pooled.var()), ks=ks, psi=psi,
                score=float(max(parts)), key_limit=key))
        return DriftVerdict(timestamp=timestamp, score=max((s.score for s in states), default=0.0),
                            features=tuple(states))


def _capped(values: np.ndarray) -> np.ndarray:
    if len(values) <= SAMPLE_CAP:
        return values
    return values[:: -(-len(values) // SAMPLE_CAP)]
