"""The trading service: bar source -> feature service -> routing table -> Triton -> gateway, until stopped.

The same loop trades a replay and a live feed; only the `BarSource` (and so the clock) differs.
Per bar: the routing table is refreshed (one revision read), the bar goes through one feature
service per feature spec in use, the market snapshot is published for the master agent, ONE
Triton request is sent per routed policy version (always with an explicit model_version), shadow
versions are scored but not traded, and the timestep goes to the gateway. The cursor (last bar
decided) is saved after the gateway's answer; a restart resumes after it. A bar the gateway
already holds (the process died after sending it) is answered 409 and counted as decided.
SIGTERM sets `stop`: the bar in progress is finished, then the service returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

import httpx
import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contracts.bars import BENCHMARK_SYMBOL
from contracts.config import DriftThresholdsConfig, load_drift
from contracts.decisions import FEATURE_DRIFT, DataTrigger, MarketSnapshotMessage, SymbolDecision, TimestepDecisions
from contracts.features import FeatureSpec
from contracts.logs import correlation
from contracts.policy import DEFAULT_ACTION_LEVELS
from features.errors import FeatureError
from features.observation import ObservationBuilder, observation_checksum
from features.service import FeatureService, MarketSnapshot
from market_data.bar_source import BarBatch, BarSource
from marlops.errors import MarlopsError
from marlops.gateway_client import GatewayCallError, GatewayClient
from marlops.policy_router import PolicyRouter, RoutingUnavailableError
from marlops.routing import PolicyRef
from marlops.trading_safety import BarSafety, DataSafety, SafetyMetrics
from marlops.trading_state import TradingCursor, TradingStateStore
from serving.errors import InferenceError, ServingError

logger = logging.getLogger(__name__)

ALERT_GATEWAY_UNREACHABLE = "GATEWAY_UNREACHABLE"
ALERT_BAR_SKIPPED = "BAR_SKIPPED"
ALERT_INFERENCE_FAILED = "INFERENCE_FAILED"
ALERT_BAR_REFUSED = "BAR_REFUSED"
ALERT_SNAPSHOT_BUS_DOWN = "SNAPSHOT_BUS_DOWN"
ALERT_SIM_PRICES = "SIM_PRICES_FAILED"


class TradingServiceError(MarlopsError):
    """The trading service cannot go on without risking a decision twice (or another service's symbols)."""


def inference_histogram(registry: CollectorRegistry) -> Histogram:
    """`marlops_trading_inference_seconds{model, version}`, one batched Triton request: the trading service's and the
    master agent service's (`marlops master --metrics-port`) are this one definition, so the latency rules read both."""
    return Histogram("marlops_trading_inference_seconds", "One batched Triton request", ["model", "version"],
                     buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .4, 1), registry=registry)


class InferenceMetrics(Protocol):
    inference: Histogram


class TradingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.bars = Counter("marlops_trading_bars_decided_total", "Bars whose decisions the gateway accepted", registry=r)
        self.skipped = Counter("marlops_trading_bars_skipped_total", "Bars not decided, by reason", ["reason"], registry=r)
        self.latency = Histogram("marlops_trading_decision_latency_seconds", "Bar in -> decisions accepted by the gateway",
                                 buckets=(.005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5, 5), registry=r)
        self.inference = inference_histogram(r)
        self.decisions = Counter("marlops_trading_decisions_total", "Symbol decisions by acting policy",
                                 ["model", "version"], registry=r)
        self.shadow_agree = Counter("marlops_trading_shadow_decisions_total", "Shadow decisions by agreement",
                                    ["model", "version", "agrees"], registry=r)
        self.alert = Gauge("marlops_trading_alert_active", "1 while the alert is active", ["name"], registry=r)
        self.last_bar = Gauge("marlops_trading_last_bar_timestamp_seconds", "Market time of the last bar decided",
                              registry=r)
        self.routing_revision = Gauge("marlops_trading_routing_revision", "Routing table revision in force", registry=r)
        self.safety = SafetyMetrics(r)


def timed_inference(metrics: InferenceMetrics, ref: PolicyRef, infer: Callable[[np.ndarray], object]
                    ) -> Callable[[np.ndarray], object]:
    """`infer` observed in `marlops_trading_inference_seconds{model, version}` (the master agent's requests, made
    by its snapshot handler, are timed like the symbol agents')."""
    histogram = metrics.inference.labels(ref.model, str(ref.version))

    def call(observations: np.ndarray) -> object:
        started = time.perf_counter()
        try:
            return infer(observations)
        finally:
            histogram.observe(time.perf_counter() - started)

    return call


@dataclass
class AlertBook:
    metrics: TradingMetrics
    active: dict[str, str] = field(default_factory=dict)
    bar: int = 0  # the bar being decided: raised alerts are remembered with it
    raised: list[dict[str, object]] = field(default_factory=list)  # every raise (not updates), oldest first
    keep: int = 10_000

    def __call__(self, name: str, detail: str | None) -> None:
        if detail is None:
            if self.active.pop(name, None) is not None:
                logger.info("alert %s cleared", name)
                self.metrics.alert.labels(name).set(0)
            return
        if name not in self.active:
            self.raised.append({"name": name, "bar": self.bar, "detail": detail[:500]})
            del self.raised[:-self.keep]
        if self.active.get(name) != detail:
            logger.warning("ALERT %s: %s", name, detail)
        self.active[name] = detail
        self.metrics.alert.labels(name).set(1)


@dataclass(frozen=True)
class BarOutcome:
    bar_index: int
    timestamp: pd.Timestamp
    status: str  # decided | already_decided | skipped | refused
    n_orders: int = 0
    latency_ms: float = 0.0
    policies: dict[str, int] = field(default_factory=dict)  # "model/version" -> symbols decided
    trading_state: str = ""
    n_symbols: int = 0  # symbols decided
    n_filled: int = 0
    n_denied: int = 0
    inference_ms: float = 0.0  # Triton time of the acting versions' requests
    observation_checksum: str = ""
    equity: float = 0.0
    detail: BarDetail | None = None  # per-symbol facts of a decided bar (the lifecycle's canary/anomaly/shadow input)
    safety: BarSafety | None = None  # what the data and model checks saw this bar


@dataclass(frozen=True)
class BarDetail:
    """What happened to each symbol this bar, as the gateway answered it."""

    variants: dict[str, str]  # symbol -> routed variant (production | candidate | sl_fallback)
    decisions: tuple[SymbolDecision, ...]
    shadows: dict[str, tuple[str, int, tuple[float, ...]]]  # symbol -> (shadow version, action, probabilities)
    orders: tuple[dict[str, object], ...]
    risk: tuple[dict[str, object], ...]
    positions: dict[str, float]  # symbol -> quantity held after the bar
    prices: dict[str, float]  # symbol -> the bar's close
    inference_ms: dict[str, float]  # version -> Triton time of its request this bar
    failed: tuple[str, ...]  # versions that failed this bar (their symbols went to the fallback)
    routing_revision: int = 0
    directive_mode: str = ""  # the master directive in force for this bar ("" = none)


def _checksum(observations: list[np.ndarray]) -> str:
    """One checksum over the bar's observations, in request order. Versions with different observation widths
    (a v1 production and a v2 candidate) are hashed as one flat vector."""
    if len({o.shape[1] for o in observations}) > 1:
        return observation_checksum(np.concatenate([o.ravel() for o in observations]))
    return observation_checksum(np.concatenate(observations))


def _benchmark_price(batch: BarBatch) -> float | None:
    """The benchmark's close this bar (the gateway's divergence-from-benchmark gauge), if the bar holds a usable one."""
    price = _closes(batch).get(BENCHMARK_SYMBOL)
    return price if price is not None and np.isfinite(price) and price > 0 else None


def _closes(batch: BarBatch) -> dict[str, float]:
    """symbol -> close of the batch's bars."""
    bars = batch.bars
    return {str(s): float(c) for s, c in zip(bars["symbol"].tolist(), bars["close"].tolist())}


class TradingService:
    def __init__(
        self,
        *,
        name: str,
        source: BarSource,
        symbols: Sequence[str],
        router: PolicyRouter,
        gateway: GatewayClient,
        state: TradingStateStore,
        window: int = 64,
        action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
        publish_snapshot: Callable[[MarketSnapshotMessage], None] | None = None,
        master: Callable[[PolicyRef, FeatureSpec], Callable[[MarketSnapshotMessage], object]] | None = None,
        set_exchange_prices: Callable[[dict[str, float]], None] | None = None,
        metrics: TradingMetrics | None = None,
        gateway_retry_s: float = 1.0,
        on_bar: Callable[[BarOutcome], None] | None = None,
        settle_wait_s: float = 30.0,
        drift: DriftThresholdsConfig | None = None,
        alt: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._source = source
        self.symbols = tuple(symbols)
        self._router = router
        self._gateway = gateway
        self._state = state
        self._window = window
        self._levels = np.asarray(action_levels, dtype=float)
        self._publish_snapshot = publish_snapshot
        self._master_factory = master
        self._master: tuple[PolicyRef, Callable[[MarketSnapshotMessage], object]] | None = None
        self._set_prices = set_exchange_prices
        self.metrics = metrics or TradingMetrics()
        self.alerts = AlertBook(self.metrics)
        self._retry_s = gateway_retry_s
        # The gateway answers once the decisions are accepted; the bar's outcome (its orders, fills and the book)
        # is read after its orders settle, up to this long, before the next bar is fed. Decision latency is
        # measured at acceptance.
        self._settle_wait_s = settle_wait_s
        self._on_bar = on_bar
        self._features: dict[str, FeatureService] = {}
        self._builders: dict[str, ObservationBuilder] = {}
        self._recent: deque[pd.DataFrame] = deque(maxlen=window)  # one frame per timestamp
        cursor = state.load(name)
        self.cursor = cursor if cursor is not None else TradingCursor.fresh(name, source.name)
        self._portfolio: dict[str, object] = {}
        self._bar_obs: list[np.ndarray] = []
        self._bar_ref_ms: dict[str, float] = {}  # version -> Triton ms this bar
        self._bar_failed_refs: list[str] = []
        self._bar_inference_ms = 0.0
        self._bar_failures: list[str] = []
        self._first_bar = True
        # Data and model safety: feed verdicts, one drift monitor per acting spec, SL parity (marlops.trading_safety).
        self._safety = DataSafety(symbols=self.symbols, config=drift if drift is not None else load_drift(),
                                  metrics=self.metrics.safety, alerts=self.alerts, features=self._features)
        # The sentiment/macro as-of provider of HybridRLObservation v2 specs, built once when a v2 spec is first in
        # use (v1-only services never read the feed store).
        self._alt_factory = alt
        self._alt: object | None = None

    # -- features, one service per feature spec in use ------------------------------------------------------

    def _warm_up(self) -> None:
        # Up to AND including the last bar decided: the next bar's features need it (its return, its window).
        last = self.cursor.bar_timestamp
        history = self._source.history(None if last is None else last + pd.Timedelta(1, "ns"), self._window)
        self._recent.clear()
        for _, bars in history.groupby("timestamp", sort=True):
            self._recent.append(bars)
        logger.info("%s: warm-up history %d bars (%d timestamps) from %s", self.name, len(history),
                    len(self._recent), self._source.name)

    def _feature_service(self, spec: FeatureSpec) -> FeatureService:
        key = spec.spec_hash()
        if key not in self._features:
            history = pd.concat(list(self._recent), ignore_index=True) if self._recent else None
            alt = None
            if spec.version >= 2:
                if self._alt is None and self._alt_factory is not None:
                    self._alt = self._alt_factory()
                alt = self._alt
            self._features[key] = FeatureService(spec, self.symbols, history=history, window=self._window, alt=alt)
            self._builders[key] = ObservationBuilder(spec)
            logger.info("%s: feature service for spec %s (%d bars of history)", self.name, key[:12],
                        self._features[key].n_bars)
        return self._features[key]

    def _remember(self, bars: pd.DataFrame) -> None:
        """The trailing window of raw bars, from which a feature service for a newly routed spec starts."""
        self._recent.append(bars)

    # -- the loop ------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, max_bars: int | None = None) -> list[BarOutcome]:
        self._warm_up()
        self._first_bar = True
        # Load the routed versions in Triton before the first bar, not during it.
        while not stop.is_set():
            try:
                self._router.refresh()
                break
            except RoutingUnavailableError:
                stop.wait(self._retry_s)
        self._portfolio = self._call_gateway(stop, self._gateway.portfolio) or {}
        outcomes: list[BarOutcome] = []
        logger.info("%s: trading %d symbols from %s, resuming after bar %d (%s)", self.name, len(self.symbols),
                    self._source.name, self.cursor.bar_index, self.cursor.bar_timestamp)
        for batch in self._source.batches(self.cursor.bar_timestamp, stop):
            with correlation(bar=batch.timestamp):  # every line logged for this bar carries its market time
                outcome = self.on_batch(batch, stop)
            if outcome is None:  # stopped while the gateway was unreachable: the bar stays undecided
                break
            outcomes.append(outcome)
            if self._on_bar is not None:
                self._on_bar(outcome)
            if stop.is_set() or (max_bars is not None and len(outcomes) >= max_bars):
                break
        logger.info("%s: stopped after bar %d (%d bars this run)", self.name, self.cursor.bar_index, len(outcomes))
        return outcomes

    def on_batch(self, batch: BarBatch, stop: threading.Event) -> BarOutcome | None:
        """One bar, as the order flow reads: routing → features → master → one request per version → gateway."""
        bar_index = self.cursor.bar_index + 1
        self.alerts.bar = bar_index
        ts = pd.Timestamp(batch.timestamp)
        flags = dict(batch.flags)
        providers = self._safety.feed_status(batch)
        if self._set_prices is not None:
            self._feed_prices(batch)
        t0 = time.perf_counter()
        try:
            table = self._router.refresh()
        except RoutingUnavailableError as exc:
            return self._skip(bar_index, ts, f"no routing table in force: {exc}", reason="routing")
        self.metrics.routing_revision.set(table.revision)
        groups, orphans = self._router.acting(self.symbols)
        master_ref = self._router.master()
        specs = self._specs_in_use(groups, master_ref)
        try:
            snapshots = {key: service.on_bars(batch.bars) for key, service in self._features.items()}
        except FeatureError as exc:
            self._remember(batch.bars)
            return self._skip(bar_index, ts, f"features at {ts}: {exc}", reason="data")
        self._remember(batch.bars)
        self.alerts(ALERT_BAR_SKIPPED, None)
        safety = self._safety.check(groups, specs, snapshots, flags, providers, bar_index)
        self._run_master(master_ref, specs, snapshots, bar_index)
        gross = float(self._portfolio.get("gross_exposure", 0.0) or 0.0)  # type: ignore[arg-type]
        self._bar_obs, self._bar_inference_ms, self._bar_failures = [], 0.0, []
        self._bar_ref_ms, self._bar_failed_refs = {}, []
        decisions, used = self._decide(groups, specs, snapshots, gross, self._safety.no_new_risk(flags))
        acted_obs, inference_ms = list(self._bar_obs), self._bar_inference_ms
        shadows = self._score_shadows(specs, snapshots, decisions, gross)
        # Raised while any version failed this bar (even if the fallback then decided), cleared by a clean bar.
        self.alerts(ALERT_INFERENCE_FAILED, "; ".join(self._bar_failures)[:1000] if self._bar_failures else None)
        if not decisions:
            return replace(self._skip(bar_index, ts, f"no policy could decide any symbol at {ts} (orphans "
                                                     f"{orphans[:5]})", reason="inference"), safety=safety)
        main_ref = table.policies.get("production")
        batch_decisions = TimestepDecisions(
            timestep=ts.to_pydatetime(), bar_index=bar_index,
            policy_version=str(main_ref) if main_ref is not None else next(iter(used)),
            observation_checksum=_checksum(acted_obs),
            decisions=tuple(decisions), decision_latency_ms=(time.perf_counter() - t0) * 1000,
            triggers=tuple(DataTrigger(code=FEATURE_DRIFT, reason=reason[:2000]) for reason in safety.triggers),
            benchmark_price=_benchmark_price(batch),
        )
        for _ in batch_decisions.triggers:
            self.metrics.safety.data_triggers.labels(FEATURE_DRIFT).inc()
        safety = replace(safety, triggers=tuple(t.code for t in batch_decisions.triggers))
        outcome = self._send(batch_decisions, ts, t0, used, stop)
        if outcome is None:
            return None
        outcome = replace(outcome, safety=safety)
        detail = None
        if outcome.detail is not None:
            detail = replace(outcome.detail, variants={s: table.route_for(s).variant for s in self.symbols},
                             shadows=shadows, inference_ms=dict(self._bar_ref_ms),
                             failed=tuple(self._bar_failed_refs), routing_revision=table.revision,
                             prices=_closes(batch))
        return replace(outcome, inference_ms=inference_ms, detail=detail)

    def _specs_in_use(self, groups: dict[PolicyRef, list[str]], master_ref: PolicyRef | None) -> dict[PolicyRef, FeatureSpec]:
        """The feature spec of every version this bar may run (acting, fallback, shadows, master); each spec
        gets its feature service."""
        refs = [*groups, *self._router.shadows(self.symbols)]
        fallback = self._router.fallback()
        if fallback is not None:
            refs.append(fallback)
        if master_ref is not None and (self._master_factory is not None or self._publish_snapshot is not None):
            refs.append(master_ref)
        specs = {ref: self._router.info(ref).spec for ref in refs}
        for spec in specs.values():
            self._feature_service(spec)
        return specs

    def _decide(self, groups: dict[PolicyRef, list[str]], specs: dict[PolicyRef, FeatureSpec],
                snapshots: dict[str, MarketSnapshot], gross: float,
                no_new_risk: dict[str, str]) -> tuple[list[SymbolDecision], dict[str, int]]:
        """One Triton request per acting version; a version that fails this bar hands its symbols to the fallback.
        Symbols without features this bar are not decided (they hold); `no_new_risk` flags go with the decision."""
        decisions: list[SymbolDecision] = []
        used: dict[str, int] = {}
        fallback = self._router.fallback()
        for ref, members in groups.items():
            unavailable = snapshots[specs[ref].spec_hash()].unavailable
            if unavailable:
                members = [s for s in members if s not in unavailable]
                if not members:
                    continue
            actions = self._infer(ref, specs[ref], snapshots, members, gross)
            if actions is None and fallback is not None and fallback != ref:
                ref, actions = fallback, self._infer(fallback, specs[fallback], snapshots, members, gross)
            if actions is None:
                continue  # these symbols hold this bar; INFERENCE_FAILED is raised
            probabilities, chosen = actions
            prices = snapshots[specs[ref].spec_hash()].prices
            for i, symbol in enumerate(members):
                decisions.append(SymbolDecision(
                    symbol=symbol, action=int(chosen[i]), target_level=float(self._levels[int(chosen[i])]),
                    probabilities=tuple(float(p) for p in probabilities[i]), price=float(prices[symbol]),
                    policy_version=str(ref), no_new_risk=no_new_risk.get(symbol)))
            used[str(ref)] = used.get(str(ref), 0) + len(members)
            self.metrics.decisions.labels(ref.model, str(ref.version)).inc(len(members))
        return decisions, used

    def _infer(self, ref: PolicyRef, spec: FeatureSpec, snapshots: dict[str, MarketSnapshot], members: list[str],
               gross: float) -> tuple[np.ndarray, np.ndarray] | None:
        key = spec.spec_hash()
        snap = snapshots[key]
        levels = np.array([self.cursor.held_levels.get(s, 0.0) for s in members], dtype=np.float32)
        rows = snap.market_rows
        if len(members) != len(rows) or any(a != b for a, b in zip(rows.index, members)):
            rows = rows.loc[members]  # the whole universe in order (one group) needs no copy
        obs = self._builders[key].symbol_observations(rows, levels, gross)
        self._bar_obs.append(obs)
        t = time.perf_counter()
        try:
            out = self._router.client(ref).infer(obs)
        except InferenceError as exc:
            self._bar_failures.append(f"{ref}: {exc}")
            self._bar_failed_refs.append(str(ref))
            self._router.invalidate()  # Triton may have restarted and lost its models: sync again next bar
            return None
        elapsed = time.perf_counter() - t
        self._bar_ref_ms[str(ref)] = self._bar_ref_ms.get(str(ref), 0.0) + elapsed * 1000
        self._bar_inference_ms += elapsed * 1000
        self.metrics.inference.labels(ref.model, str(ref.version)).observe(elapsed)
        return np.asarray(out.probabilities), np.asarray(out.actions).reshape(-1)

    def _score_shadows(self, specs: dict[PolicyRef, FeatureSpec], snapshots: dict[str, MarketSnapshot],
                       decisions: list[SymbolDecision], gross: float) -> dict[str, tuple[str, int, tuple[float, ...]]]:
        """Shadow versions score the bar; nothing they choose is traded. Returns symbol -> (version, action, probs)."""
        acted = {d.symbol: d.action for d in decisions}
        scored: dict[str, tuple[str, int, tuple[float, ...]]] = {}
        for ref, members in self._router.shadows(self.symbols).items():
            members = [s for s in members if s in acted]
            if not members:
                continue
            result = self._infer(ref, specs[ref], snapshots, members, gross)
            if result is None:
                continue
            for i, (symbol, action) in enumerate(zip(members, result[1], strict=True)):
                self.metrics.shadow_agree.labels(ref.model, str(ref.version), str(int(action) == acted[symbol])).inc()
                scored[symbol] = (str(ref), int(action), tuple(float(p) for p in result[0][i]))
        return scored

    def _run_master(self, ref: PolicyRef | None, specs: dict[PolicyRef, FeatureSpec],
                    snapshots: dict[str, MarketSnapshot], bar_index: int) -> None:
        """The bar's market snapshot goes to the master agent: over the bus to `marlops master`, and/or
        to an in-process master (`master(ref, spec)` builds its snapshot handler)."""
        spec = specs.get(ref) if ref is not None else None
        snap = snapshots.get(spec.spec_hash()) if spec is not None else next(iter(snapshots.values()), None)
        if snap is None:
            return
        message = MarketSnapshotMessage(
            timestamp=snap.timestamp.to_pydatetime(), bar_index=bar_index,
            master_features={str(k): float(v) for k, v in snap.master_row.items()},
            regime_shift=snap.regime_shift, feature_spec_hash=spec.spec_hash() if spec is not None else "",
            published_at=datetime.now(UTC))
        if self._publish_snapshot is not None:
            self._publish(message)
        if ref is None or spec is None or self._master_factory is None:
            return
        if self._master is None or self._master[0] != ref:
            self._master = (ref, self._master_factory(ref, spec))
        self._master[1](message)

    def _feed_prices(self, batch: BarBatch) -> None:
        assert self._set_prices is not None
        try:
            self._set_prices(_closes(batch))
        except (MarlopsError, httpx.HTTPError) as exc:  # the simulated market lags; the bar is still decided
            self.alerts(ALERT_SIM_PRICES, f"the paper exchange did not take the bar's prices: {exc}")
            return
        self.alerts(ALERT_SIM_PRICES, None)

    def _publish(self, message: MarketSnapshotMessage) -> None:
        assert self._publish_snapshot is not None
        try:
            self._publish_snapshot(message)
        except ServingError as exc:  # the bus is down: the master's directives age out, the gateway goes defensive
            self.alerts(ALERT_SNAPSHOT_BUS_DOWN, str(exc))
            return
        self.alerts(ALERT_SNAPSHOT_BUS_DOWN, None)

    def _send(self, batch: TimestepDecisions, ts: pd.Timestamp, t0: float, used: dict[str, int],
              stop: threading.Event) -> BarOutcome | None:
        while True:
            try:
                response = self._gateway.post_decisions(batch)
                status = "decided"
                break
            except GatewayCallError as exc:
                code = exc.status_code
                if code == 409 and self._first_bar:
                    # Only the first bar after a start can be one the gateway already holds: the service died
                    # between sending it and saving its cursor.
                    logger.warning("%s: bar %d (%s) was already decided by the gateway (the service stopped after "
                                   "sending it); counted as decided", self.name, batch.bar_index, ts)
                    response, status = {}, "already_decided"
                    break
                if code == 409:
                    raise TradingServiceError(
                        f"{self.name}: the gateway has already decided later bars than bar {batch.bar_index} ({ts}) "
                        f"for these symbols: another trading service trades them, or this service's cursor was "
                        f"reset. Refusing to continue (nothing is sent twice). {exc}")
                if code is not None and 400 <= code < 500 and code not in (401, 403, 408, 429):
                    self.alerts(ALERT_BAR_REFUSED, f"gateway refused bar {batch.bar_index} ({ts}): {exc}")
                    self.metrics.skipped.labels("refused").inc()
                    response, status = {}, "refused"
                    break
                self.alerts(ALERT_GATEWAY_UNREACHABLE, str(exc))
                if stop.wait(self._retry_s):
                    return None
        self.alerts(ALERT_GATEWAY_UNREACHABLE, None)
        if status != "refused":
            self.alerts(ALERT_BAR_REFUSED, None)
        self._first_bar = False
        latency = time.perf_counter() - t0
        if response and not response.get("settled", True):
            response = self._settled(response)
        held = dict(self.cursor.held_levels)
        if status != "refused":
            held.update({d.symbol: d.target_level for d in batch.decisions})
        if response:
            self._portfolio = dict(response.get("portfolio") or self._portfolio)
        decided = status != "refused"
        self.cursor = self._state.save(replace(
            self.cursor, bar_index=batch.bar_index, bar_timestamp=ts,
            bars_decided=self.cursor.bars_decided + int(decided), held_levels=held, source=self._source.name,
            alerts=dict(self.alerts.active)))
        if status != "refused":
            self.metrics.bars.inc()
            self.metrics.latency.observe(latency)
        self.metrics.last_bar.set(ts.timestamp())
        orders = response.get("orders", []) if response else []
        return BarOutcome(
            bar_index=batch.bar_index, timestamp=ts, status=status, n_orders=len(orders), latency_ms=latency * 1000,
            policies=used, trading_state=str(response.get("trading_state", "")) if response else "",
            n_symbols=len(batch.decisions), n_filled=sum(1 for o in orders if float(o.get("filled_qty") or 0) > 0),
            n_denied=sum(1 for r in (response.get("risk", []) if response else []) if not r.get("approved", True)),
            observation_checksum=batch.observation_checksum,
            equity=float(self._portfolio.get("equity", 0.0) or 0.0),  # type: ignore[arg-type]
            detail=BarDetail(
                variants={}, decisions=batch.decisions, shadows={}, orders=tuple(orders),
                risk=tuple(response.get("risk", []) if response else ()),
                positions={str(sym): float(p.get("qty", 0.0)) for sym, p in
                           (self._portfolio.get("positions") or {}).items()},  # type: ignore[union-attr]
                prices={}, inference_ms={}, failed=(),
                directive_mode=str(((response or {}).get("directive") or {}).get("mode") or "")))

    def _settled(self, accepted: dict[str, object]) -> dict[str, object]:
        """The accepted answer with its orders and portfolio as they stand once the orders settled."""
        try:
            settled = self._gateway.timestep(str(accepted["timestep_id"]), wait_s=self._settle_wait_s)
        except GatewayCallError as exc:  # the decisions are accepted; only this bar's record lacks its fills
            self.alerts(ALERT_GATEWAY_UNREACHABLE, f"settled orders of bar {accepted.get('bar_index')}: {exc}")
            return accepted
        if not settled.get("settled"):
            logger.warning("%s: orders of bar %s not settled after %.0f s; recorded as they stand", self.name,
                           accepted.get("bar_index"), self._settle_wait_s)
        return {**accepted, "orders": settled["orders"], "portfolio": settled["portfolio"],
                "trading_state": settled["trading_state"], "settled": settled["settled"]}

    def _skip(self, bar_index: int, ts: pd.Timestamp, why: str, *, reason: str) -> BarOutcome:
        self.alerts(ALERT_BAR_SKIPPED, why)
        self.metrics.skipped.labels(reason).inc()
        self.cursor = self._state.save(replace(self.cursor, bar_index=bar_index, bar_timestamp=ts,
                                               alerts=dict(self.alerts.active)))
        return BarOutcome(bar_index=bar_index, timestamp=ts, status="skipped")

    def _call_gateway(self, stop: threading.Event, call: Callable[[], dict[str, object]]) -> dict[str, object] | None:
        while not stop.is_set():
            try:
                result = call()
                self.alerts(ALERT_GATEWAY_UNREACHABLE, None)
                return result
            except GatewayCallError as exc:
                self.alerts(ALERT_GATEWAY_UNREACHABLE, str(exc))
                stop.wait(self._retry_s)
        return None
