"""Validated configuration (config/rl/*). A bad value fails at load with file, key and reason."""

import json
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


class RLConfig(_Config):
    serving: ServingConfig
    risk: RiskOverlaysConfig
    drift: DriftThresholdsConfig


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


def load_rl_config(config_dir: Path | None = None) -> RLConfig:
    root = config_dir or DEFAULT_CONFIG_DIR
    return RLConfig(
        serving=load_serving(root / "serving.yaml"),
        risk=load_risk(root / "risk_overlays.yaml"),
        drift=load_drift(root / "feature_drift_thresholds.json"),
    )
