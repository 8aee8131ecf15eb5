"""Data and model safety of the trading service, per bar (docs/data_safety.md): the feed guard's verdicts (alerts,
missing bars, provider states; flagged symbols take no new risk), one drift monitor per acting feature spec (a key
feature beyond its limit becomes the bar's FEATURE_DRIFT trigger), the SL parity check, and symbols without features.
`marlops.trading.TradingService` calls it; nothing here talks to the gateway or Triton.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from contracts.config import DriftThresholdsConfig
from contracts.decisions import FEATURE_DRIFT
from contracts.features import FeatureSpec
from features.alt_features import ALT_FEED_STALE
from features.drift_monitor import DriftMonitor, DriftVerdict
from features.errors import FeatureError
from features.service import FeatureService, MarketSnapshot
from features.sl_parity import sl_parity
from market_data.bar_source import BarBatch
from market_data.feed_status import PROVIDER_STATES
from marlops.routing import PolicyRef

# Data and model safety (docs/data_safety.md).
ALERT_FEATURE_DRIFT = FEATURE_DRIFT  # a key feature beyond its sigma limit: the gateway is HALTED
ALERT_DRIFT_SCORE = "FEATURE_DRIFT_SCORE"  # the bar's drift score above monitor.alert_score
ALERT_SL_PARITY = "SL_PARITY"  # served SL probabilities differ from a recomputation
ALERT_SYMBOLS_UNAVAILABLE = "SYMBOLS_UNAVAILABLE"  # symbols without features this bar (they hold)
ALERT_DATA_FLAGGED = "DATA_FLAGGED"  # symbols whose bar the feed guard did not accept (no new risk)
MARKET_INPUT_PREFIX = "MARKET_INPUT_"  # a flagged benchmark/volatility input: every symbol takes no new risk


class SafetyMetrics:
    """The drift, SL parity and feed series (registered in the trading service's registry)."""

    def __init__(self, r: CollectorRegistry) -> None:
        drift_labels = ["spec", "feature"]
        self.drift_score = Gauge("marlops_feature_drift_score", "Drift score of a feature in [0, 1] (1 = at a limit)",
                                 drift_labels, registry=r)
        self.drift_sigma = Gauge("marlops_feature_drift_sigma", "|recent mean - training mean| in training stds",
                                 drift_labels, registry=r)
        self.drift_ks = Gauge("marlops_feature_drift_ks_distance", "KS distance of the window to training",
                              drift_labels, registry=r)
        self.drift_psi = Gauge("marlops_feature_drift_psi", "PSI of the window on the training deciles",
                               drift_labels, registry=r)
        self.drift_mean = Gauge("marlops_feature_drift_window_mean", "Window mean in training z units",
                                drift_labels, registry=r)
        self.drift_variance = Gauge("marlops_feature_drift_window_variance", "Window variance in training z units "
                                    "(training 1)", drift_labels, registry=r)
        self.drift_bar_score = Gauge("marlops_feature_drift_score_max", "The bar's drift score (largest feature "
                                     "score)", ["spec"], registry=r)
        self.sl_parity = Gauge("marlops_sl_parity_max_abs_diff", "Served vs recomputed SL probability, largest "
                               "absolute difference at the last check", ["spec"], registry=r)
        self.data_triggers = Counter("marlops_trading_data_triggers_total", "Data-safety triggers sent with a bar",
                                     ["trigger"], registry=r)
        self.feed_missing = Counter("marlops_feed_missing_bars_total", "Bars a provider did not deliver, per symbol",
                                    ["symbol"], registry=r)
        self.feed_provider_missing = Counter("marlops_feed_provider_missing_bars_total", "Symbol bars missing from "
                                             "a provider", ["provider"], registry=r)
        self.feed_flags = Counter("marlops_feed_flagged_bars_total", "Symbol bars not accepted by the feed guard, "
                                  "by reason", ["reason"], registry=r)
        self.feed_provider_state = Gauge("marlops_feed_provider_state", "1 for the provider's current state",
                                         ["provider", "state"], registry=r)


@dataclass(frozen=True)
class BarSafety:
    """The data and model checks of one bar (the replay summary's input)."""

    drift_score: float = 0.0  # largest feature drift score over the acting specs
    drift_features: dict[str, float] = field(default_factory=dict)  # feature -> score (largest over specs)
    triggers: tuple[str, ...] = ()  # data triggers sent with the bar (FEATURE_DRIFT)
    flags: dict[str, str] = field(default_factory=dict)  # symbol -> feed reason code (no new risk this bar)
    unavailable: dict[str, str] = field(default_factory=dict)  # symbol -> why it had no features (held)
    providers: dict[str, str] = field(default_factory=dict)  # provider -> ACTIVE | STALE | QUARANTINED
    sl_parity: float | None = None  # largest served-vs-recomputed SL difference, on a check bar


class DataSafety:
    """The per-bar checks. `features` is the trading service's spec hash -> FeatureService map (read, not owned);
    `alerts(name, detail | None)` raises or clears a trading-service alert."""

    def __init__(self, *, symbols: tuple[str, ...], config: DriftThresholdsConfig, metrics: SafetyMetrics,
                 alerts: Callable[[str, str | None], None], features: Mapping[str, FeatureService]) -> None:
        self._symbols = symbols
        self._config = config
        self._metrics = metrics
        self._alerts = alerts
        self._features = features
        self._monitors: dict[str, DriftMonitor] = {}

    def feed_status(self, batch: BarBatch) -> dict[str, str]:
        """The feed guard's verdicts of this bar: its alerts, missing-bar counts and provider states."""
        feed = batch.feed
        if feed is None:
            return {}
        for name, detail in feed.alerts:
            self._alerts(name, detail)
        for symbol, count in feed.missing.items():
            self._metrics.feed_missing.labels(symbol).inc(count)
        for provider, count in feed.provider_missing.items():
            if count:
                self._metrics.feed_provider_missing.labels(provider).inc(count)
        for provider, state in feed.providers.items():
            for known in PROVIDER_STATES:
                self._metrics.feed_provider_state.labels(provider, known).set(1 if known == state else 0)
        for reason in batch.flags.values():
            self._metrics.feed_flags.labels(reason).inc()
        return dict(feed.providers)

    def no_new_risk(self, flags: dict[str, str]) -> dict[str, str]:
        """symbol -> the reason code it takes no new risk this bar: its own feed flag, or a flagged market input
        (benchmark, volatility proxy), which every symbol's features read."""
        if not flags:
            self._alerts(ALERT_DATA_FLAGGED, None)
            return {}
        inputs = {s for service in self._features.values() for s in service.market_inputs}
        flagged_inputs = sorted(s for s in flags if s in inputs)
        result = {s: code for s, code in flags.items() if s not in inputs}
        if flagged_inputs:
            code = MARKET_INPUT_PREFIX + flags[flagged_inputs[0]]
            result = {s: result.get(s, code) for s in self._symbols}
        shown = ", ".join(f"{s}={c}" for s, c in list(flags.items())[:10])
        self._alerts(ALERT_DATA_FLAGGED, f"{len(flags)} bars not accepted by the feed guard (no new risk): {shown}")
        return result

    def check(self, groups: dict[PolicyRef, list[str]], specs: dict[PolicyRef, FeatureSpec],
                     snapshots: dict[str, MarketSnapshot], flags: dict[str, str], providers: dict[str, str],
                     bar_index: int) -> BarSafety:
        """Drift of every acting spec's features against its training distribution (a key feature beyond its
        limit -> FEATURE_DRIFT reason), the SL parity check every N bars, and symbols left without features."""
        cfg = self._config.monitor
        acting = {specs[ref].spec_hash(): specs[ref] for ref in groups}
        reasons: list[str] = []
        score, by_feature, parity = 0.0, {}, None
        unavailable: dict[str, str] = {}
        stale: dict[str, float] = {}
        for key, spec in acting.items():
            snap = snapshots[key]
            unavailable.update(snap.unavailable)
            stale.update(snap.stale_feeds)
            if snap.market_rows.empty:
                continue
            monitor = self._monitors.get(key)
            if monitor is None:
                monitor = self._monitors[key] = DriftMonitor(spec, self._config)
            verdict = monitor.observe(snap.timestamp, snap.market_rows, snap.master_row)
            self._export_drift(key, verdict)
            reason = verdict.halt_reason()
            if reason is not None:
                reasons.append(reason if len(acting) == 1 else f"spec {key[:12]}: {reason}")
            score = max(score, verdict.score)
            for f in verdict.features:
                by_feature[f.name] = max(by_feature.get(f.name, 0.0), round(f.score, 4))
            if bar_index % cfg.sl_parity_every_bars == 0:
                parity = self._check_sl_parity(key, snap, parity)
        self._alerts(ALT_FEED_STALE, f"{len(stale)} sentiment/macro feeds stale, their features neutral (training "
                    "mean): " + ", ".join(f"{k} ({'never' if v == float('inf') else f'{v:.0f} h'})"
                                          for k, v in list(stale.items())[:10]) if stale else None)
        self._alerts(ALERT_FEATURE_DRIFT, "; ".join(reasons)[:1000] if reasons else None)
        worst = max(by_feature, key=by_feature.get, default="")  # type: ignore[arg-type]
        self._alerts(ALERT_DRIFT_SCORE, f"drift score {score:.2f} > {cfg.alert_score} (worst feature {worst})"
                    if score > cfg.alert_score else None)
        self._alerts(ALERT_SYMBOLS_UNAVAILABLE, f"{len(unavailable)} symbols without features this bar (they hold): "
                    + ", ".join(f"{s}={why}" for s, why in list(unavailable.items())[:10]) if unavailable else None)
        return BarSafety(drift_score=round(score, 4), drift_features=by_feature, triggers=tuple(reasons),
                         flags=flags, unavailable=unavailable, providers=providers, sl_parity=parity)

    def _export_drift(self, key: str, verdict: DriftVerdict) -> None:
        m, spec = self._metrics, key[:12]
        for f in verdict.features:
            m.drift_score.labels(spec, f.name).set(f.score)
            m.drift_sigma.labels(spec, f.name).set(f.sigma)
            m.drift_mean.labels(spec, f.name).set(f.mean)
            m.drift_variance.labels(spec, f.name).set(f.variance)
            if f.ks is not None:
                m.drift_ks.labels(spec, f.name).set(f.ks)
            if f.psi is not None:
                m.drift_psi.labels(spec, f.name).set(f.psi)
        m.drift_bar_score.labels(spec).set(verdict.score)

    def _check_sl_parity(self, key: str, snap: MarketSnapshot, worst: float | None) -> float | None:
        limit = self._config.monitor.sl_parity_max_abs_diff
        try:
            parity = sl_parity(self._features[key], snap)
        except FeatureError as exc:
            self._alerts(ALERT_SL_PARITY, f"spec {key[:12]}: SL probabilities could not be recomputed: {exc}")
            return worst
        self._metrics.sl_parity.labels(key[:12]).set(parity.max_abs_diff)
        if parity.max_abs_diff > limit:
            self._alerts(ALERT_SL_PARITY, f"spec {key[:12]}: served SL probability of {parity.worst_symbol} differs "
                        f"from its recomputation by {parity.max_abs_diff:.2e} (> {limit:g})")
        else:
            self._alerts(ALERT_SL_PARITY, None)
        return max(parity.max_abs_diff, worst or 0.0)
