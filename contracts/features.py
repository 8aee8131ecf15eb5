import hashlib
import json

from pydantic import Field, model_validator

from contracts.base import Frozen
from contracts.drift import DriftReference

OBSERVATION_NAME = "HybridRLObservation"
OBSERVATION_VERSION = 1
# What filled the volatility-index input when the spec was fitted (contracts.config.VolatilityProxyConfig.name).
# Specs written before the field existed were all fitted on a VIX series: they load with this default.
DEFAULT_VOLATILITY_SOURCE = "index:VIX"
VOLATILITY_SOURCE_PATTERN = r"^(index:VIX|etf:[A-Z0-9.\-_]+|realized:[A-Z0-9.\-_]+:[0-9]+)$"


class FeatureBlock(Frozen):
    """Ordered feature names with the z-score constants fitted on the training window."""

    names: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    @model_validator(mode="after")
    def _same_lengths(self) -> "FeatureBlock":
        if not (len(self.names) == len(self.means) == len(self.stds)):
            raise ValueError("names, means and stds must have the same length")
        if any(s <= 0 for s in self.stds):
            raise ValueError("every std must be > 0")
        return self


class SLModelParams(Frozen):
    """Logistic model predicting P(next bar up) from raw (un-normalised) market features."""

    feature_names: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float


class FeatureSpec(Frozen):
    """Everything needed to rebuild an observation bit-for-bit. Its hash travels with every policy."""

    name: str = OBSERVATION_NAME
    version: int = OBSERVATION_VERSION
    dtype: str = "float32"
    symbol: FeatureBlock
    master: FeatureBlock
    sl_model: SLModelParams
    clip: float = Field(default=5.0, gt=0)
    # Windows and thresholds of the feature definitions: changing one changes the hash.
    definitions: dict[str, float] = Field(default_factory=dict)
    # The volatility proxy the features were computed with: training and serving apply the same one.
    volatility_source: str = Field(default=DEFAULT_VOLATILITY_SOURCE, pattern=VOLATILITY_SOURCE_PATTERN)
    # The training distribution of each feature, for the live drift monitor. Specs fitted before it existed
    # have none (their hash is unchanged: None is left out of the canonical JSON); the monitor then runs the
    # sigma test on the spec's own means/stds only.
    drift_reference: DriftReference | None = None

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json")
        # The default is left out, so specs (and hashes) from before the field existed stay what they were;
        # any other proxy is part of the JSON and therefore of the hash.
        if data.get("volatility_source") == DEFAULT_VOLATILITY_SOURCE:
            del data["volatility_source"]
        if data.get("drift_reference") is None:
            data.pop("drift_reference", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


# Ordered feature names of HybridRLObservation v1. Observations are built in exactly this order.
SYMBOL_MARKET_FEATURES: tuple[str, ...] = (
    "ret_1", "ret_5", "ret_20", "vol_20", "rsi_14", "volume_z_20", "sma_gap_20",
    "bench_ret_1", "bench_ret_5", "vix_level",
)
SL_FEATURES: tuple[str, ...] = ("sl_prob_up",)
REGIME_FEATURES: tuple[str, ...] = ("regime_high_vol", "regime_bear")
# Filled at decision time from the portfolio (training: the simulated one; serving: the gateway's).
PORTFOLIO_FEATURES: tuple[str, ...] = ("position_level", "gross_exposure")
SYMBOL_FEATURES: tuple[str, ...] = SYMBOL_MARKET_FEATURES + SL_FEATURES + REGIME_FEATURES + PORTFOLIO_FEATURES

MASTER_MARKET_FEATURES: tuple[str, ...] = (
    "bench_ret_1", "bench_ret_5", "bench_ret_20", "vix_level", "vix_change_5", "breadth_5",
    "avg_vol_20", "regime_high_vol", "regime_bear",
)
MASTER_PORTFOLIO_FEATURES: tuple[str, ...] = ("drawdown", "gross_exposure")
MASTER_FEATURES: tuple[str, ...] = MASTER_MARKET_FEATURES + MASTER_PORTFOLIO_FEATURES

# --- HybridRLObservation v2: v1 + news sentiment (per symbol) + macro series (master) ---------------------------
# v1 above stays exactly as it was (the hashes of v1 specs are pinned); v2 is opt-in (features.observation_version).
# The alternative-data features sit between the market features and the SL/regime/portfolio features, so the
# portfolio features stay last (the simulators fill them) and the regime columns keep their master positions.
OBSERVATION_VERSIONS: tuple[int, ...] = (1, 2)
# Latest news sentiment score in [-1, 1] at or before the bar, and log(1 + article count) of that record.
SENTIMENT_FEATURES: tuple[str, ...] = ("sentiment_score", "sentiment_count_log")
# The macro series a MacroSource publishes (percent): 10y and 2y treasury yields, investment-grade credit spread.
MACRO_SERIES: tuple[str, ...] = ("rate_10y", "rate_2y", "credit_spread")
MACRO_FEATURES: tuple[str, ...] = tuple(f"macro_{name}" for name in MACRO_SERIES)
ALT_FEATURES: tuple[str, ...] = SENTIMENT_FEATURES + MACRO_FEATURES

SYMBOL_FEATURES_V2: tuple[str, ...] = (
    SYMBOL_MARKET_FEATURES + SENTIMENT_FEATURES + SL_FEATURES + REGIME_FEATURES + PORTFOLIO_FEATURES
)
MASTER_MARKET_FEATURES_V2: tuple[str, ...] = MASTER_MARKET_FEATURES + MACRO_FEATURES
MASTER_FEATURES_V2: tuple[str, ...] = MASTER_MARKET_FEATURES_V2 + MASTER_PORTFOLIO_FEATURES


def _check_version(version: int) -> int:
    if version not in OBSERVATION_VERSIONS:
        raise ValueError(f"unknown {OBSERVATION_NAME} version {version!r}; known: {list(OBSERVATION_VERSIONS)}")
    return version


def symbol_feature_names(version: int = OBSERVATION_VERSION) -> tuple[str, ...]:
    """The ordered symbol-agent observation of `version` (portfolio features last)."""
    return SYMBOL_FEATURES if _check_version(version) == 1 else SYMBOL_FEATURES_V2


def master_feature_names(version: int = OBSERVATION_VERSION) -> tuple[str, ...]:
    """The ordered master-agent observation of `version` (portfolio features last)."""
    return MASTER_FEATURES if _check_version(version) == 1 else MASTER_FEATURES_V2


def symbol_market_names(version: int = OBSERVATION_VERSION) -> tuple[str, ...]:
    """The symbol features the feature service fills (everything but the portfolio features)."""
    return symbol_feature_names(version)[: -len(PORTFOLIO_FEATURES)]


def master_market_names(version: int = OBSERVATION_VERSION) -> tuple[str, ...]:
    """The master features the feature service fills (everything but the portfolio features)."""
    return master_feature_names(version)[: -len(MASTER_PORTFOLIO_FEATURES)]
