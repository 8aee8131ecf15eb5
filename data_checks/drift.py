"""Feature drift between a reference sample (training) and a current one (live): KS, PSI, sigma shift."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.stats import ks_2samp

from contracts.base import Frozen
from contracts.config import DriftThresholdsConfig
from data_checks.errors import DriftInputError

logger = logging.getLogger(__name__)

PSI_BINS = 10
PSI_EPS = 1e-4  # floor on bin proportions: an empty bin would make PSI infinite
STD_FLOOR = 1e-12


class FeatureDrift(Frozen):
    name: str
    ks_stat: float
    ks_pvalue: float
    psi: float
    sigma_shift: float  # |mean_current - mean_reference| / std_reference
    drifted: bool
    reasons: tuple[str, ...] = ()
    n_reference: int = Field(default=0, ge=0)
    n_current: int = Field(default=0, ge=0)


class DriftReport(Frozen):
    features: tuple[FeatureDrift, ...]
    drifted: bool

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)

    def summary(self) -> str:
        if not self.drifted:
            return f"no drift in {len(self.features)} features"
        parts = [f"{f.name} ({', '.join(f.reasons)})" for f in self.features if f.drifted]
        return f"drift in {len(parts)} of {len(self.features)} features: " + "; ".join(parts)


def population_stability_index(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI on the reference's quantile bins (open-ended outer bins catch values beyond the reference range)."""
    inner = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    ref_share = np.maximum(np.histogram(reference, edges)[0] / len(reference), PSI_EPS)
    cur_share = np.maximum(np.histogram(current, edges)[0] / len(current), PSI_EPS)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def _finite(frame: pd.DataFrame, name: str, what: str) -> np.ndarray:
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise DriftInputError(f"{what} sample of feature '{name}' holds no finite values")
    return values


def feature_drift(name: str, reference: np.ndarray, current: np.ndarray, thresholds: DriftThresholdsConfig) -> FeatureDrift:
    limits = thresholds.for_feature(name)
    ks = ks_2samp(reference, current)
    psi = population_stability_index(reference, current)
    ref_std = float(np.std(reference))
    diff = abs(float(np.mean(current)) - float(np.mean(reference)))
    sigma = diff / ref_std if ref_std > STD_FLOOR else (0.0 if diff <= STD_FLOOR else float("inf"))
    reasons = []
    if ks.pvalue < limits.ks_pvalue_min:
        reasons.append(f"ks p={ks.pvalue:.2g} < {limits.ks_pvalue_min}")
    if psi > limits.psi_max:
        reasons.append(f"psi={psi:.3f} > {limits.psi_max}")
    if sigma > limits.sigma_max:
        reasons.append(f"shift={sigma:.2f} sigma > {limits.sigma_max}")
    return FeatureDrift(
        name=name,
        ks_stat=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        psi=psi,
        sigma_shift=sigma,
        drifted=bool(reasons),
        reasons=tuple(reasons),
        n_reference=len(reference),
        n_current=len(current),
    )


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    thresholds: DriftThresholdsConfig,
    *,
    features: Sequence[str] | None = None,
) -> DriftReport:
    """Per-feature drift of `current` against `reference`; a feature drifts when any threshold is breached.

    `features` defaults to the numeric columns of `reference`.
    """
    names = list(features) if features is not None else [
        c for c in reference.columns if pd.api.types.is_numeric_dtype(reference[c].dtype)
    ]
    if not names:
        raise DriftInputError("no numeric features to compare")
    for frame, what in ((reference, "reference"), (current, "current")):
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise DriftInputError(f"{what} sample lacks features {missing}")
    results = tuple(
        feature_drift(n, _finite(reference, n, "reference"), _finite(current, n, "current"), thresholds) for n in names
    )
    report = DriftReport(features=results, drifted=any(f.drifted for f in results))
    if report.drifted:
        logger.warning("feature drift: %s", report.summary())
    return report


# -- against a stored reference (the live monitor: the training sample itself is not at hand) -------------------


def ks_distance_to_quantiles(sample: np.ndarray, quantiles: np.ndarray, levels: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance D = sup |F_sample - F_ref|, with F_ref interpolated linearly between the
    reference's quantiles (`levels` in [0, 1]); values beyond the reference's range have F_ref 0 or 1."""
    values = np.sort(np.asarray(sample, dtype=np.float64))
    n = len(values)
    if n == 0:
        raise DriftInputError("KS distance of an empty sample")
    reference_cdf = np.interp(values, quantiles, levels, left=0.0, right=1.0)
    above = np.arange(1, n + 1) / n - reference_cdf
    below = reference_cdf - np.arange(0, n) / n
    return float(max(above.max(), below.max(), 0.0))


def psi_against_quantiles(sample: np.ndarray, quantiles: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of `sample` against a reference known by its quantiles (evenly spaced levels): bins are the reference's
    deciles; the reference's share per bin is read off the quantiles themselves (ties make fewer, wider bins)."""
    quantiles = np.asarray(quantiles, dtype=np.float64)
    positions = np.linspace(0, len(quantiles) - 1, bins + 1)[1:-1]
    inner = np.unique(np.interp(positions, np.arange(len(quantiles)), quantiles))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    ref_share = np.maximum(np.histogram(quantiles, edges)[0] / len(quantiles), PSI_EPS)
    cur_share = np.maximum(np.histogram(np.asarray(sample, dtype=np.float64), edges)[0] / max(len(sample), 1), PSI_EPS)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))
