"""The training distribution a live drift monitor compares against, kept with the feature spec."""

from pydantic import Field, model_validator

from contracts.base import Frozen

# Quantile levels stored per feature: 0, 2.5%, ..., 100%. The KS distance and the PSI deciles are read off them.
REFERENCE_QUANTILE_LEVELS: tuple[float, ...] = tuple(i / 40 for i in range(41))


class FeatureReference(Frozen):
    """One feature's training distribution, in z units of the spec ((raw - mean) / std, not clipped)."""

    quantiles: tuple[float, ...]  # at REFERENCE_QUANTILE_LEVELS, non-decreasing
    n: int = Field(ge=1)  # training samples behind the quantiles

    @model_validator(mode="after")
    def _shape(self) -> "FeatureReference":
        if len(self.quantiles) != len(REFERENCE_QUANTILE_LEVELS):
            raise ValueError(f"need {len(REFERENCE_QUANTILE_LEVELS)} quantiles, got {len(self.quantiles)}")
        if any(b < a for a, b in zip(self.quantiles, self.quantiles[1:])):
            raise ValueError("quantiles must be non-decreasing")
        return self


class DriftReference(Frozen):
    """Per feature (symbol features pooled over symbols; master features over bars) of the training window."""

    features: dict[str, FeatureReference]
