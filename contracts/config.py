"""Validated configuration (config/rl/*). A bad value fails at load with file, key and reason."""

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.bars import BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL
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
    # With intraday bars: the master acts once this much MARKET time has passed since its last
    # directive (300 = every 5 minutes), instead of every master_every_bars bars; null = use the bars.
    master_every_seconds: float | None = Field(default=None, gt=0)
    directive_ttl_bars: int = Field(default=10, ge=1)
    bar_seconds: float = Field(default=86400.0, gt=0)


class DirectiveBusConfig(_Config):
    kind: Literal["inprocess", "redis"] = "inprocess"
    redis_url: str = "redis://127.0.0.1:6379/0"
    channel: str = "master-directives"


VolatilitySource = Literal["auto", "index", "etf", "realized"]
_DEFAULT_PROXY_SYMBOL = {"auto": BENCHMARK_SYMBOL, "index": VOLATILITY_INDEX_SYMBOL, "realized": BENCHMARK_SYMBOL}


class VolatilityProxyConfig(_Config):
    """What fills the volatility-index input (symbol VIX) of the features.

    `index`: the bars carry a VIX series (the synthetic market does). `etf`: a volatility ETF's bars
    (`symbol`, e.g. VIXY) stand in for it; the ETF is then a market input, not a tradable symbol.
    `realized`: annualised realized volatility of `symbol`'s (the benchmark's) log returns over `window`
    bars, in VIX-like points. `auto`: `index` when the bars hold VIX, else `realized` from `symbol`
    over `window` (with a warning). The proxy actually used is named in the feature spec
    (`volatility_source`, e.g. "realized:SPY:21"), so serving applies the same one.
    """

    source: VolatilitySource = "auto"
    symbol: str = ""  # index: VIX; etf: required (e.g. VIXY); realized/auto: the benchmark (default SPY)
    window: int = Field(default=21, ge=2, le=1000)  # realized-volatility lookback in bars

    @model_validator(mode="before")
    @classmethod
    def _default_symbol(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("symbol"):
            source = data.get("source", "auto")
            if source in _DEFAULT_PROXY_SYMBOL:
                data = {**data, "symbol": _DEFAULT_PROXY_SYMBOL[source]}
        return data

    @model_validator(mode="after")
    def _coherent(self) -> "VolatilityProxyConfig":
        if not self.symbol:
            raise ValueError(f"source {self.source!r} needs a symbol (e.g. VIXY for an etf proxy)")
        if not re.fullmatch(r"[A-Z0-9._\-]+", self.symbol):
            raise ValueError(f"symbol {self.symbol!r} must be an upper-case ticker (A-Z, 0-9, '.', '-', '_')")
        if self.source == "index" and self.symbol != VOLATILITY_INDEX_SYMBOL:
            raise ValueError(f"an index proxy reads {VOLATILITY_INDEX_SYMBOL}; use source etf for {self.symbol!r}")
        if self.source == "etf" and self.symbol in (VOLATILITY_INDEX_SYMBOL, BENCHMARK_SYMBOL):
            raise ValueError(f"an etf proxy cannot be {self.symbol!r}; name a volatility ETF such as VIXY")
        if self.source in ("realized", "auto") and self.symbol == VOLATILITY_INDEX_SYMBOL:
            raise ValueError(f"realized volatility is computed from a price series such as {BENCHMARK_SYMBOL}, "
                             f"not from {VOLATILITY_INDEX_SYMBOL}")
        return self

    @property
    def name(self) -> str:
        """Canonical name, as stored in FeatureSpec.volatility_source: index:VIX, etf:VIXY, realized:SPY:21."""
        if self.source == "auto":
            raise ValueError("an auto proxy has no name until it is resolved against bars")
        return f"{self.source}:{self.symbol}:{self.window}" if self.source == "realized" else f"{self.source}:{self.symbol}"

    @property
    def input_symbols(self) -> tuple[str, ...]:
        """Symbols the bars must carry for this proxy (besides the benchmark, always needed); auto: none demanded."""
        if self.source == "index":
            return (VOLATILITY_INDEX_SYMBOL,)
        if self.source in ("etf", "realized"):
            return (self.symbol,)
        return ()

    @classmethod
    def from_name(cls, name: str) -> "VolatilityProxyConfig":
        """Inverse of `name`; raises ValueError on a malformed name."""
        parts = name.split(":")
        if len(parts) == 2 and parts[0] in ("index", "etf"):
            return cls(source=parts[0], symbol=parts[1])  # type: ignore[arg-type]
        if len(parts) == 3 and parts[0] == "realized" and parts[2].isdigit():
            return cls(source="realized", symbol=parts[1], window=int(parts[2]))
        raise ValueError(f"volatility source {name!r} is not index:VIX, etf:<SYMBOL> or realized:<SYMBOL>:<window>")


class FeedConfig(_Config):
    """Feed validation and provider quorum (market_data.feed_checks / market_data.quorum)."""

    # A provider with no fresh bar for this many bars in a row is STALE (alert FEED_PROVIDER_STALE:<name>).
    stale_after_intervals: int = Field(default=2, ge=1, le=1000)
    # Live feeds: a bar stamped more than this many seconds before the wall clock is FEED_STALE;
    # null = stale_after_intervals x loop.bar_seconds. Replays are never checked against the wall clock.
    max_clock_lag_seconds: float | None = Field(default=None, gt=0)
    # Providers agree on a symbol when their close is within this fraction of the median close.
    tolerance: float = Field(default=0.005, gt=0, lt=1)
    # Providers that must agree on a symbol; null = a majority of the configured providers (2 of 3, 2 of 2).
    quorum: int | None = Field(default=None, ge=1)
    # A quarantined provider is released after agreeing with the quorum on this many bars in a row.
    release_after_bars: int = Field(default=5, ge=1, le=100000)
    # Live feeds: wall seconds after a bar timestamp is first seen before it is emitted without a late provider.
    grace_seconds: float = Field(default=2.0, ge=0, le=3600)


class MarketDataConfig(_Config):
    volatility_proxy: VolatilityProxyConfig = VolatilityProxyConfig()
    feed: FeedConfig = FeedConfig()


class ServingConfig(_Config):
    triton: TritonConfig = TritonConfig()
    models: ModelsConfig = ModelsConfig()
    loop: LoopConfig = LoopConfig()
    directive_bus: DirectiveBusConfig = DirectiveBusConfig()
    market_data: MarketDataConfig = MarketDataConfig()


class DirectivePreset(_Config):
    max_position_size: float = Field(gt=0, le=1.0)
    risk_scale: float = Field(ge=0, le=1.0)
    defensive: bool = False


class OrderRateRule(_Config):
    """At most `max_orders` orders sent per rolling `window_seconds` (wall clock): a runaway guard."""

    max_orders: int = Field(default=1000, ge=1)
    window_seconds: float = Field(default=60.0, gt=0)


class MarketHoursRule(_Config):
    """When orders may be sent. `broker_clock` asks the broker (Alpaca `GET /v2/clock`, cached);
    `session` checks the wall clock against weekdays and open/close in `timezone`; `off` always allows."""

    source: Literal["broker_clock", "session", "off"] = "broker_clock"
    timezone: str = "America/New_York"
    open: str = Field(default="09:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    close: str = Field(default="16:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    clock_cache_seconds: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _valid_zone_and_order(self) -> "MarketHoursRule":
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
        if self.open >= self.close:
            raise ValueError(f"open {self.open} must be before close {self.close}")
        return self


class ShortSaleRule(_Config):
    """`allowed: false` = long only. `not_shortable` = symbols with no borrow (hard to borrow)."""

    allowed: bool = True
    not_shortable: tuple[str, ...] = ()


class LatencyTrigger(_Config):
    """Decision latency above `threshold_ms` for MORE than `consecutive_intervals` intervals in a row."""

    threshold_ms: float = Field(default=2000.0, gt=0)
    consecutive_intervals: int = Field(default=3, ge=1)
    action: Literal["REDUCING", "HALTED"] = "REDUCING"


class ComplianceTrigger(_Config):
    """Post-trade checks of the real book; a breach moves the trading state to `action`.

    Breaches: a position in a restricted symbol, a short in a symbol that may not be shorted, a
    position above the per-symbol cap by more than `position_cap_tolerance` (relative), gross
    leverage above the limit by more than `gross_leverage_tolerance` (relative), or a book that
    disagrees with the broker by more than `reconcile_tolerance_qty` shares after reconciliation.
    """

    position_cap_tolerance: float = Field(default=0.5, ge=0)
    gross_leverage_tolerance: float = Field(default=0.2, ge=0)
    reconcile_tolerance_qty: float = Field(default=1e-6, ge=0)
    action: Literal["REDUCING", "HALTED"] = "HALTED"


class DependencyTrigger(_Config):
    """`broker_failures` consecutive broker calls that find it unreachable (after retries) -> `action`."""

    broker_failures: int = Field(default=3, ge=1)
    action: Literal["REDUCING", "HALTED"] = "HALTED"


class SafeModeConfig(_Config):
    """Safe mode = HALTED for new orders + positions closed gradually: each decision interval sends
    at most `flatten_fraction_per_interval` of each position's size at the start of safe mode."""

    flatten_fraction_per_interval: float = Field(default=0.25, gt=0, le=1.0)


class KillSwitchConfig(_Config):
    max_drawdown: float = Field(default=0.30, gt=0, lt=1.0)  # from peak equity: safe mode (HALTED + flatten)
    intraday_drawdown: float = Field(default=0.15, gt=0, lt=1.0)  # from the session's peak: REDUCING + alert
    latency: LatencyTrigger = LatencyTrigger()
    compliance: ComplianceTrigger = ComplianceTrigger()
    dependencies: DependencyTrigger = DependencyTrigger()
    safe_mode: SafeModeConfig = SafeModeConfig()


class RiskOverlaysConfig(_Config):
    per_symbol_cap: float = Field(default=0.10, gt=0, le=1.0)
    max_gross_leverage: float = Field(default=1.5, gt=0, le=10.0)
    min_order_notional: float = Field(default=1.0, ge=0)
    # Largest single order in account currency; larger orders are cut to it (whole shares).
    max_order_notional: float = Field(default=250_000.0, gt=0)
    order_rate: OrderRateRule = OrderRateRule()
    # Compliance restricted list: no order of any kind (positions held are reported as a breach).
    restricted_symbols: tuple[str, ...] = ()
    market_hours: MarketHoursRule = MarketHoursRule()
    short_sale: ShortSaleRule = ShortSaleRule()
    kill_switch: KillSwitchConfig = KillSwitchConfig()
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


class DriftMonitorConfig(_Config):
    """The live drift monitor of the trading service (features.drift_monitor); docs/data_safety.md has the
    measured detection delay and false-alarm rate of these defaults."""

    window_bars: int = Field(default=60, ge=2)  # rolling window of the KS distance, PSI, mean and variance
    sigma_window_bars: int = Field(default=3, ge=1)  # the key-feature sigma test averages the last N bars
    # KS and PSI wait for this many bars in the window: a market-wide feature repeats one value per bar on every
    # symbol, so its sample is as large as the bars held, not the values pooled.
    min_bars: int = Field(default=20, ge=2)
    score_sigma_full: float = Field(default=6.0, gt=0)  # sigma at which the sigma part of the score is 1
    ks_distance_full: float = Field(default=0.9, gt=0, le=1)  # KS distance D at which its score part is 1
    psi_full: float = Field(default=7.0, gt=0)  # PSI at which its score part is 1
    alert_score: float = Field(default=0.8, gt=0, le=1)  # drift score above this raises FEATURE_DRIFT_SCORE
    sl_parity_every_bars: int = Field(default=5, ge=1)  # recompute the SL probabilities every N bars
    sl_parity_max_abs_diff: float = Field(default=1e-4, gt=0)  # served vs recomputed above this: alert


class DriftThresholdsConfig(_Config):
    default: FeatureDriftThreshold = FeatureDriftThreshold()
    features: dict[str, FeatureDriftThreshold] = Field(default_factory=dict)
    # Key features and their sigma limit: the mean of the last `monitor.sigma_window_bars` bars (pooled over
    # symbols) further than this many training standard deviations from the training mean HALTS trading
    # (trigger FEATURE_DRIFT).
    key_features: dict[str, float] = Field(default_factory=dict)
    monitor: DriftMonitorConfig = DriftMonitorConfig()

    @model_validator(mode="after")
    def _key_limits_positive(self) -> "DriftThresholdsConfig":
        bad = {k: v for k, v in self.key_features.items() if not (v > 0) or not k}
        if bad:
            raise ValueError(f"key_features limits must be > 0 sigma: {bad}")
        return self

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


class PaperTradingConfig(_Config):
    trading_days: int = Field(default=5, ge=1)
    min_net_return: float = Field(default=0.0, allow_inf_nan=False)  # the gate: net return strictly above this
    max_turnover_per_day: float = Field(default=1.0, gt=0, allow_inf_nan=False)  # traded notional / equity per day


class CanaryConfig(_Config):
    fraction: float = Field(default=0.10, gt=0, le=1.0)  # of the universe, sector-balanced
    trading_days: int = Field(default=2, ge=1)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_denial_rate_excess: float = Field(default=0.20, ge=0, le=1)
    denial_alpha: float = Field(default=0.01, gt=0, lt=1)
    max_cost_ratio: float = Field(default=3.0, gt=0)
    max_latency_ratio: float = Field(default=3.0, gt=0)
    min_latency_bars: int = Field(default=5, ge=1)
    max_drawdown_excess: float = Field(default=0.05, ge=0)
    pnl_alpha: float = Field(default=0.01, gt=0, lt=1)
    min_pnl_observations: int = Field(default=8, ge=2)


class AnomalyConfig(_Config):
    window_bars: int = Field(default=3, ge=1)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    min_action_entropy: float = Field(default=0.05, ge=0, le=1)


class ReviewConfig(_Config):
    trading_days_after_rollout: int = Field(default=10, ge=1)  # two weeks of market time
    max_sharpe_shortfall: float = Field(default=1.0, ge=0)  # live Sharpe may trail the held-out Sharpe by this much


class ABTestConfig(_Config):
    trading_days: int = Field(default=10, ge=2)
    rotation_days: int = Field(default=1, ge=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)


class LifecycleConfig(_Config):
    """config/rl/lifecycle.yaml: the gates between a validated candidate and production (docs/lifecycle.md)."""

    replay_trading_days: int = Field(default=17, ge=0)  # last days of the data the accelerated lifecycle trades
    paper_trading: PaperTradingConfig = PaperTradingConfig()
    canary: CanaryConfig = CanaryConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    review: ReviewConfig = ReviewConfig()
    ab_test: ABTestConfig = ABTestConfig()


class AltDataConfig(_Config):
    """Sentiment and macro feeds of HybridRLObservation v2 (market_data/alt_data.py, features/alt_features.py)."""

    # "synthetic" (deterministic from `seed`, the default) or a CSV/Parquet file: sentiment columns
    # timestamp, symbol, score, article_count; macro columns timestamp, series, value.
    sentiment_source: str = "synthetic"
    macro_source: str = "synthetic"
    seed: int = 11
    # A record older than this at a bar (or none at all) is stale: the feature takes its training mean (neutral)
    # and the snapshot reports it (ALT_FEED_STALE). Written into a v2 spec's definitions (part of its hash).
    sentiment_max_age_hours: float = Field(default=6.0, gt=0)
    macro_max_age_hours: float = Field(default=72.0, gt=0)


class FeaturesConfig(_Config):
    """config/rl/features.yaml. `observation_version` 1 (the default) trains on HybridRLObservation v1; 2 adds
    the sentiment/macro features. A served policy always uses its own spec (the spec hash decides), whatever this
    says."""

    observation_version: Literal[1, 2] = 1
    alt_data: AltDataConfig = AltDataConfig()


class RLConfig(_Config):
    serving: ServingConfig
    risk: RiskOverlaysConfig
    drift: DriftThresholdsConfig
    evaluation: EvaluationConfig
    lifecycle: LifecycleConfig = LifecycleConfig()
    features: FeaturesConfig = FeaturesConfig()


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
        lifecycle=load_model(root / "lifecycle.yaml", LifecycleConfig),
        # Optional: config dirs without features.yaml train v1 as before.
        features=load_model(root / "features.yaml", FeaturesConfig) if (root / "features.yaml").is_file()
        else FeaturesConfig(),
    )
