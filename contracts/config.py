"""Validated configuration (config/rl/*). A bad value fails at load with file, key and reason."""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.errors import ConfigError

DEFAULT_CONFIG_DIR = Path("config/rl")


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TritonConfig(_Config):
    http_port: int = Field(default=8000, ge=1, le=65535)
    grpc_port: int = Field(default=8001, ge=1, le=65535)
    metrics_port: int = Field(default=8002, ge=1, le=65535)
    protocol: Literal["grpc", "http"] = "grpc"
    model_repository: str = "serving/triton_models"
    instance_kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_CPU"
    instance_count: int = Field(default=1, ge=1, le=64)
    max_batch_size: int = Field(default=1024, ge=1)
    max_queue_delay_microseconds: int = Field(default=100, ge=0)
    startup_timeout_s: float = Field(default=120.0, gt=0)


class ModelsConfig(_Config):
    symbol_agent: str = "symbol_agent"
    master_agent: str = "master_agent"


class LoopConfig(_Config):
    master_every_bars: int = Field(default=5, ge=1)
    directive_ttl_bars: int = Field(default=10, ge=1)
    bar_seconds: float = Field(default=86400.0, gt=0)


class DirectiveBusConfig(_Config):
    kind: Literal["inprocess", "redis"] = "inprocess"
    redis_url: str = "redis://127.0.0.1:6379/0"
    channel: str = "master-directives"


class ServingConfig(_Config):
    triton: TritonConfig = TritonConfig()
    models: ModelsConfig = ModelsConfig()
    loop: LoopConfig = LoopConfig()
    directive_bus: DirectiveBusConfig = DirectiveBusConfig()


class DirectivePreset(_Config):
    max_position_size: float = Field(gt=0, le=1.0)
    risk_scale: float = Field(ge=0, le=1.0)
    defensive: bool = False


class RiskOverlaysConfig(_Config):
    per_symbol_cap: float = Field(default=0.10, gt=0, le=1.0)
    max_gross_leverage: float = Field(default=1.5, gt=0, le=10.0)
    min_order_notional: float = Field(default=1.0, ge=0)
    commission_bps: float = Field(default=1.0, ge=0)
    spread_bps: float = Field(default=2.0, ge=0)
    slippage_bps: float = Field(default=1.0, ge=0)
    directive_presets: dict[str, DirectivePreset] = Field(
        default_factory=lambda: {
            "normal": DirectivePreset(max_position_size=0.10, risk_scale=1.0),
            "cautious": DirectivePreset(max_position_size=0.05, risk_scale=0.6),
            "defensive": DirectivePreset(max_position_size=0.02, risk_scale=0.25, defensive=True),
        }
    )
    # Used when no directive is live (never received, or older than its TTL).
    missing_directive_fallback: str = "defensive"

    @model_validator(mode="after")
    def _presets_complete(self) -> "RiskOverlaysConfig":
        missing = {"normal", "cautious", "defensive"} - set(self.directive_presets)
        if missing:
            raise ValueError(f"directive_presets lacks {sorted(missing)}")
        if self.missing_directive_fallback not in self.directive_presets:
            raise ValueError("missing_directive_fallback must name one of directive_presets")
        return self


class FeatureDriftThreshold(_Config):
    ks_pvalue_min: float = Field(default=0.01, ge=0, le=1)
    psi_max: float = Field(default=0.25, ge=0)
    sigma_max: float = Field(default=4.0, gt=0)


class DriftThresholdsConfig(_Config):
    default: FeatureDriftThreshold = FeatureDriftThreshold()
    features: dict[str, FeatureDriftThreshold] = Field(default_factory=dict)

    def for_feature(self, name: str) -> FeatureDriftThreshold:
        return self.features.get(name, self.default)


class GoNoGoThresholds(_Config):
    """Held-out Go/No-Go rules of the validation gate; a candidate must pass every one."""

    min_sharpe: float = Field(default=0.8, allow_inf_nan=False)  # annualised, held-out
    max_drawdown: float = Field(default=0.30, gt=0, le=1.0)  # fraction of the running peak
    min_profit_factor: float = Field(default=1.1, ge=0)
    min_holdout_bars: int = Field(default=60, ge=1)  # fewer held-out bars -> NO-GO (not enough evidence)
    # P(true Sharpe > 0), Bailey & Lopez de Prado's probabilistic Sharpe ratio; 0 disables the check.
    min_probabilistic_sharpe: float = Field(default=0.90, ge=0, le=1.0)
    # Every walk-forward fold's Sharpe must exceed this (one lucky stretch cannot carry the verdict); null disables.
    min_fold_sharpe: float | None = Field(default=0.0, allow_inf_nan=False)
    # Policy Sharpe minus buy-and-hold-the-benchmark Sharpe must exceed this; null disables.
    min_sharpe_margin_vs_benchmark: float | None = Field(default=0.0, allow_inf_nan=False)
    # Policy Sharpe minus the SL-threshold fallback's Sharpe must exceed this: RL must earn its complexity; null disables.
    min_sharpe_margin_vs_fallback: float | None = Field(default=0.0, allow_inf_nan=False)


class WalkForwardConfig(_Config):
    # The last fraction of the bars (after warm-up) that training never sees; above 0.9 leaves too little to train on.
    holdout_fraction: float = Field(default=0.3, gt=0, le=0.9)
    n_folds: int = Field(default=3, ge=1)  # consecutive held-out windows reported separately
    sl_refit_every: int = Field(default=21, ge=1)  # bars between SL walk-forward refits
    sl_min_train_bars: int = Field(default=60, ge=10)  # bars before the first SL prediction


class SLFallbackConfig(_Config):
    """The SL-threshold policy used when no RL policy is trusted: buy on a confident P(up), flat on a low one."""

    buy_threshold: float = Field(default=0.55, ge=0, le=1.0)
    sell_threshold: float = Field(default=0.45, ge=0, le=1.0)
    buy_level: float = Field(default=1.0, gt=0, le=1.0)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "SLFallbackConfig":
        # Equal thresholds would leave no hold band and make the fallback flip on noise around one value.
        if not self.sell_threshold < self.buy_threshold:
            raise ValueError(
                f"sell_threshold ({self.sell_threshold}) must be below buy_threshold ({self.buy_threshold})"
            )
        return self

    def check_buy_level(self, action_levels: Sequence[float]) -> None:
        """Raise ConfigError unless buy_level is one of the policy's action levels (known only where it is used)."""
        if not any(math.isclose(self.buy_level, level, abs_tol=1e-9) for level in action_levels):
            raise ConfigError(
                f"sl_fallback.buy_level {self.buy_level} is not one of the action levels {list(action_levels)}"
            )


class EvaluationConfig(_Config):
    go_no_go: GoNoGoThresholds
    walk_forward: WalkForwardConfig
    sl_fallback: SLFallbackConfig
    periods_per_year: int = Field(default=252, ge=1)


class RLConfig(_Config):
    serving: ServingConfig
    risk: RiskOverlaysConfig
    drift: DriftThresholdsConfig
    evaluation: EvaluationConfig


_M = TypeVar("_M", bound=BaseModel)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.')}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_model(path: Path, model: type[_M]) -> _M:
    """Parse `path` into `model`; errors name the file, the dotted key and the reason."""
    data = _read(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"key '{'.'.join(str(p) for p in err['loc']) or '<root>'}': {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err.get("input"), dict) else "")
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc


def load_serving(path: Path | None = None) -> ServingConfig:
    return load_model(path or DEFAULT_CONFIG_DIR / "serving.yaml", ServingConfig)


def load_risk(path: Path | None = None) -> RiskOverlaysConfig:
    return load_model(path or DEFAULT_CONFIG_DIR / "risk_overlays.yaml", RiskOverlaysConfig)


def load_drift(path: Path | None = None) -> DriftThresholdsConfig:
    return load_model(path or DEFAULT_CONFIG_DIR / "feature_drift_thresholds.json", DriftThresholdsConfig)


def load_evaluation(path: Path | None = None) -> EvaluationConfig:
    return load_model(path or DEFAULT_CONFIG_DIR / "evaluation.yaml", EvaluationConfig)


def load_rl_config(config_dir: Path | None = None) -> RLConfig:
    root = config_dir or DEFAULT_CONFIG_DIR
    return RLConfig(
        serving=load_serving(root / "serving.yaml"),
        risk=load_risk(root / "risk_overlays.yaml"),
        drift=load_drift(root / "feature_drift_thresholds.json"),
        evaluation=load_evaluation(root / "evaluation.yaml"),
    )
