"""The gateway's work, without HTTP: recover, reconcile, plan each timestep, audit, route orders,
apply fills, and watch the kill-switch triggers.

Order of operations for one timestep (the lock makes timesteps, reconciliations and kill-switch
changes atomic with respect to each other):
  1. pick up late fills of orders still open at the broker
  2. mark the portfolio to the decisions' prices
  3. plan (overlay + guardrails + safe-mode slices) with the directive live at the decision's timestep
  4. audit decisions, risk decisions and order intents in ONE transaction, together with the
     durable state (last bar per symbol, in-flight orders), before anything is sent
  5. send each intent (retries reuse its client_order_id); audit the broker's answer and each fill
     together with the in-flight set
  6. feed the triggers (drawdown, intraday drawdown, latency, compliance) and act on a breach

On start: restore the trading state, the durable state and the high-water marks; look up every
in-flight order at the broker (found -> its answer and fills are audited; absent once the settle
window has passed -> audited as not sent); then rebuild the book from the broker.
"""

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from contracts.audit import AuditEvent, AuditKind
from contracts.decisions import MasterDirective, TimestepDecisions
from contracts.orders import Fill, OrderIntent, OrderSide, TradingState
from contracts.urls import redact_url
from gateway.audit.store import AuditStore
from gateway.brokers.base import Broker, OrderResult
from gateway.directives import DirectiveBook
from gateway.domain.costs import BPS
from gateway.domain.flatten import FlattenPlan, flatten_slices
from gateway.domain.planner import TimestepPlan, plan_timestep
from gateway.domain.portfolio import Portfolio
from gateway.domain.trading_state import StateChange, TradingStateMachine, escalates
from gateway.domain.triggers import (
    DEPENDENCY_LOST,
    DependencyMonitor,
    DrawdownMarks,
    LatencyMonitor,
    Trigger,
    compliance_breaches,
    compliance_trigger,
    drawdown_triggers,
    session_of,
)
from gateway.errors import (
    BrokerError,
    BrokerRejectedError,
    BrokerUnavailableError,
    InvalidDecisionsError,
    StaleTimestepError,
)
from gateway.inflight import InflightOrder, decode_inflight, encode_inflight
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

_FILL_EPS = 1e-9
NOT_AT_BROKER = frozenset({"not_sent", "rejected", "not_received"})
RECONCILE_MISMATCH = "RECONCILE_MISMATCH"
SAFE_MODE = "SAFE_MODE"
# Raised while the gateway's own subscription to the Redis directive bus is down (settings.directive_bus_url).
DIRECTIVE_BUS_DOWN = "DIRECTIVE_BUS_DOWN"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class OrderOutcome:
    intent: OrderIntent
    status: str  # the broker's order status, or a gateway status: rejected / unknown / not_sent / duplicate
    result: OrderResult | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "client_order_id": self.intent.client_order_id,
            "symbol": self.intent.symbol,
            "side": self.intent.side.value,
            "qty": self.intent.qty,
            "status": self.status,
            "filled_qty": r.filled_qty if r else 0.0,
            "filled_avg_price": r.filled_avg_price if r else None,
            "broker_order_id": r.broker_order_id if r else None,
            "estimated_cost": self.intent.estimated_cost,
            "error": self.error,
        }


@dataclass(frozen=True)
class TimestepOutcome:
    batch: TimestepDecisions
    trading_state: TradingState
    directive: MasterDirective | None
    plan: TimestepPlan
    orders: tuple[OrderOutcome, ...]
    portfolio: dict[str, Any]


@dataclass(frozen=True)
class Alert:
    code: str
    severity: str  # warning | critical
    since: datetime
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.code, "severity": self.severity, "since": self.since.isoformat(), "detail": self.detail}


def realized_cost(side: OrderSide, qty: float, price: float, reference_price: float, commission_bps: float) -> float:
    """What the fill cost against the decision's price: adverse price move plus commission."""
    sign = 1.0 if side == OrderSide.BUY else -1.0
    return sign * (price - reference_price) * qty + commission_bps * BPS * qty * price


class GatewayService:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        broker: Broker,
        audit: AuditStore,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.audit = audit
        self.metrics = metrics or GatewayMetrics()
        self.directives = DirectiveBook(settings.directive_ttl_seconds)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        # The kill switch has its own lock: it must land at once, even while a timestep is routing.
        self._state_lock = threading.Lock()
        self._state = TradingStateMachine()
        self._portfolio = Portfolio(0.0)
        self._inflight: dict[str, InflightOrder] = {}
        self._last_bar: dict[str, int] = {}
        ks = settings.risk.kill_switch
        self._marks = DrawdownMarks()
        self._latency = LatencyMonitor(ks.latency.threshold_ms, ks.latency.consecutive_intervals,
                                       TradingState(ks.latency.action))
        self._deps = DependencyMonitor(ks.dependencies.broker_failures, TradingState(ks.dependencies.action))
        self._safe_mode: FlattenPlan | None = None
        self._sent_at: deque[float] = deque()
        self._alerts: dict[str, Alert] = {}
        self._alert_names: set[str] = set()
        self._market_clock: tuple[float, bool] | None = None
        self._last_reconcile: dict[str, Any] | None = None
        # The Redis directive subscription's health and the last propagation latency (None: no bus configured).
        self._directive_bus: dict[str, Any] | None = None
        self._started = False
        self._stopped = False

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Restore state from the audit store, recover in-flight orders, rebuild the book from the broker."""
        with self._lock:
            self._restore_trading_state()
            self._restore_durable_state()
            self._audit_config_change()
            self._recover_inflight()
            self.reconcile()
            self._started = True

    def stop(self) -> None:
        """Stop taking work; directives still arriving from a source that cannot unsubscribe are dropped."""
        with self._lock:
            self._started = False
            self._stopped = True

    @property
    def started(self) -> bool:
        return self._started

    def _restore_trading_state(self) -> None:
        # A halt must survive a restart: the last audited state change wins.
        before: int | None = None
        while True:
            page = self.audit.list(kind="state_change", limit=200, before_seq=before)
            for event in page:
                payload = event["payload"]
                if payload.get("event") == "trading_state":
                    self._state = TradingStateMachine(TradingState(payload["current"]))
                    logger.warning("trading state restored from audit seq %d: %s (by %s: %s)", event["seq"],
                                   payload["current"], payload.get("principal"), payload.get("reason"))
                    self.metrics.set_trading_state(self._state.state)
                    return
            if len(page) < 200:
                break
            before = page[-1]["seq"]
        self.metrics.set_trading_state(self._state.state)

    def _restore_durable_state(self) -> None:
        state = self.audit.read_state()
        self._last_bar = {str(k): int(v) for k, v in (state.get("last_bar") or {}).items()}
        self._inflight = decode_inflight(state.get("inflight"))
        self._marks = DrawdownMarks.from_dict(state.get("drawdown_marks"))
        self._latency.streak = int(state.get("latency_streak") or 0)
        safe = state.get("safe_mode")
        self._safe_mode = FlattenPlan.from_dict(safe) if safe else None
        if self._safe_mode is not None:
            self._raise_alert(SAFE_MODE, "critical", f"safe mode since {self._safe_mode.started_at.isoformat()}: "
                                                     f"{self._safe_mode.reason}")
        if self._state.state != TradingState.ACTIVE:
            self._raise_alert("TRADING_" + self._state.state.value, "critical",
                              f"trading state restored as {self._state.state.value}")
        logger.info("durable state restored: %d symbols decided, %d orders in flight, peak equity %.2f",
                    len(self._last_bar), len(self._inflight), self._marks.peak_equity)

    def _durable_state(self) -> dict[str, Any]:
        return {
            "last_bar": dict(self._last_bar),
            "inflight": encode_inflight(self._inflight),
            "drawdown_marks": self._marks.as_dict(),
            "latency_streak": self._latency.streak,
            "safe_mode": self._safe_mode.as_dict() if self._safe_mode else None,
        }

    def _audit_config_change(self) -> None:
        text = self.settings.risk.model_dump_json()
        digest = hashlib.sha256(text.encode()).hexdigest()
        previous = self.audit.read_state_key("config_hash")
        if previous == digest:
            return
        self.audit.append(
            self._event("config_change", {"config": "risk_overlays", "previous_hash": previous, "hash": digest,
                                          "values": self.settings.risk.model_dump(mode="json")},
                        principal=self.settings.principal),
            state={"config_hash": digest},
        )
        logger.info("risk configuration %s recorded in the audit trail (was %s)", digest[:12],
                    (previous or "none")[:12])

    # ---- recovery ----------------------------------------------------------------------------
    def _recover_inflight(self) -> None:
        """Settle every order that was in flight when the previous run stopped."""
        if not self._inflight:
            return
        logger.warning("recovering %d in-flight orders from the previous run", len(self._inflight))
        for cid, order in sorted(self._inflight.items(), key=lambda kv: kv[1].recorded_at):
            found = self.broker.get_order_by_client_id(cid)
            if found is None:
                # A request in flight when the process died may still be processed by the broker:
                # declare "not sent" only once the intent is older than the settle window.
                age = (self._clock() - order.recorded_at).total_seconds()
                wait = self.settings.recovery_settle_s - age
                if wait > 0:
                    self._sleep(wait)
                found = self.broker.get_order_by_client_id(cid)
            if found is None:
                del self._inflight[cid]
                self._append(
                    [self._order_event(order.intent, "not_sent", None,
                                       error="gateway restarted before this order reached the broker; "
                                             "the broker has no order with this client_order_id")],
                    state={"inflight": encode_inflight(self._inflight)},
                )
                logger.warning("order %s (%s %s %g) was never sent; audited as not_sent", cid, order.intent.symbol,
                               order.intent.side.value, order.intent.qty)
                continue
            order.acknowledged = True
            answers = [self._order_event(order.intent, "recovered", found,
                                         error=f"found at the broker after a restart (status {found.status})")]
            # The book is rebuilt from the broker's positions after recovery: these fills are
            # audited, not applied.
            self._apply_result(order, found, answers, apply_to_book=False)
            logger.warning("order %s found at the broker after restart: %s, filled %g", cid, found.status,
                           found.filled_qty)

    def reconcile(self, *, requested_by: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Replace the book with the broker's account and positions (the broker is the truth) and
        audit what differed."""
        with self._lock:
            account = self.broker.get_account()
            positions = self.broker.get_positions()
            broker_qty = {p.symbol: p.qty for p in positions}
            book_qty = {s: p.qty for s, p in self._portfolio.positions().items()} if self._started else None
            mismatches: list[dict[str, Any]] = []
            if book_qty is not None:
                tol = self.settings.risk.kill_switch.compliance.reconcile_tolerance_qty
                for sym in sorted(set(broker_qty) | set(book_qty)):
                    b, g = broker_qty.get(sym, 0.0), book_qty.get(sym, 0.0)
                    if abs(b - g) > tol:
                        mismatches.append({"symbol": sym, "book_qty": g, "broker_qty": b})
            marks = self._portfolio.marks() if self._started else {}
            self._portfolio = Portfolio.from_broker(
                account.cash, {p.symbol: (p.qty, p.avg_entry_price) for p in positions}
            )
            if marks:
                self._portfolio.mark({s: m for s, m in marks.items() if s in broker_qty})
            payload = {
                "event": "reconciled",
                "cash": account.cash,
                "broker_equity": account.equity,
                "book_equity": self._portfolio.equity,
                "positions": {p.symbol: {"qty": p.qty, "avg_entry_price": p.avg_entry_price} for p in positions},
                "mismatches": mismatches,
                "inflight": sorted(self._inflight),
                "requested_by": requested_by,
                "reason": reason,
            }
            self._append([self._event("state_change", payload, principal=self.settings.principal)])
            if mismatches:
                self.metrics.reconcile_mismatches.inc(len(mismatches))
                self._raise_alert(RECONCILE_MISMATCH, "warning",
                                  f"book and broker disagreed on {len(mismatches)} symbols; broker adopted: "
                                  + ", ".join(f"{m['symbol']} {m['book_qty']:g}->{m['broker_qty']:g}"
                                              for m in mismatches[:10]))
                logger.error("reconciliation found %d mismatches: %s", len(mismatches), mismatches[:10])
            self._deps.success("broker")
            logger.info("reconciled with broker: cash %.2f, %d positions, broker equity %.2f",
                        account.cash, len(positions), account.equity)
            self._update_portfolio_metrics()
            report = {"at": self._clock().isoformat(), "cash": account.cash, "broker_equity": account.equity,
                      "positions": len(positions), "mismatches": mismatches, "inflight": len(self._inflight)}
            self._last_reconcile = report
            return report

    def reconcile_now(self, *, principal: str, reason: str = "periodic") -> dict[str, Any]:
        """Refresh open orders, rebuild the book from the broker, and check compliance on the result."""
        with self._lock:
            logger.info("reconciliation requested by %s: %s", principal, reason)
            try:
                self._refresh_open_orders()
                report = self.reconcile(requested_by=principal, reason=reason)
            except BrokerUnavailableError as exc:
                self._dependency_failure("broker", str(exc))
                raise
            self._check_compliance()
            return {**report, "requested_by": principal, "trading_state": self.trading_state.value}

    # ---- directives --------------------------------------------------------------------------
    def receive_directive(self, directive: MasterDirective) -> None:
        """Callback for the directive source: audit, then make it available to planning."""
        if self._stopped:
            logger.warning("gateway stopped; directive %s dropped", directive.directive_id)
            return
        if self.directives.holds(directive):
            logger.info("directive %s received again: already applied, ignored", directive.directive_id)
            return
        self._audit("directive", directive.model_dump(mode="json"), principal=self.settings.principal)
        self.directives.add(directive)
        self.metrics.directives.labels(mode=directive.mode).inc()
        logger.info("directive %s (%s) issued %s, ttl %.0fs", directive.directive_id, directive.mode,
                    directive.issued_at.isoformat(), directive.ttl_seconds)

    def receive_published_directive(self, directive: MasterDirective, published_at: datetime | None) -> None:
        """Callback for the Redis directive subscription: apply the directive (receive_directive), then record
        the propagation latency, publish time (wall clock) -> in the DirectiveBook, when the publisher stamped it."""
        if self._stopped:
            logger.warning("gateway stopped; directive %s dropped", directive.directive_id)
            return
        self.receive_directive(directive)
        applied = datetime.now(timezone.utc)
        seconds: float | None = None
        if published_at is not None:
            stamped = published_at if published_at.tzinfo is not None else published_at.replace(tzinfo=timezone.utc)
            seconds = max(0.0, (applied - stamped).total_seconds())
            self.metrics.directive_propagation_seconds.observe(seconds)
        bus = self._directive_bus
        if bus is not None:
            bus.update(last_directive_id=directive.directive_id, last_applied_at=applied.isoformat(),
                       last_propagation_seconds=seconds, directives_received=bus["directives_received"] + 1)
        logger.info("directive %s applied %s after publication", directive.directive_id,
                    "?" if seconds is None else f"{seconds * 1000:.1f} ms")

    def directive_bus_configured(self, url: str, channel: str) -> None:
        """The gateway subscribes to a directive bus itself: report it (down until the first subscription)."""
        self._directive_bus = {"url": redact_url(url), "channel": channel, "connected": False, "since": None,
                               "last_error": None, "last_directive_id": None, "last_applied_at": None,
                               "last_propagation_seconds": None, "directives_received": 0}

    def directive_bus_up(self) -> None:
        with self._state_lock:
            if self._directive_bus is not None:
                self._directive_bus.update(connected=True, since=self._clock().isoformat())
            self._clear_alert(DIRECTIVE_BUS_DOWN)

    def directive_bus_down(self, reason: str) -> None:
        """Redis unreachable: alert. Directives already received stay live until their TTL (market time);
        after that the missing-directive fallback (defensive) applies."""
        with self._state_lock:
            bus = self._directive_bus
            if bus is not None:
                if bus["connected"] or bus["since"] is None:
                    bus["since"] = self._clock().isoformat()
                bus.update(connected=False, last_error=reason)
            where = f"{bus['url']} channel {bus['channel']}" if bus is not None else "directive bus"
            self._raise_alert(DIRECTIVE_BUS_DOWN, "warning", f"{where} unreachable: {reason}; directives past "
                                                             "their TTL fall back to the defensive preset")

    # ---- trading state -----------------------------------------------------------------------
    @property
    def trading_state(self) -> TradingState:
        return self._state.state

    @property
    def safe_mode(self) -> FlattenPlan | None:
        return self._safe_mode

    def change_state(
        self, target: TradingState, *, principal: str, reason: str, trigger: str = "manual"
    ) -> StateChange | None:
        """Takes effect immediately: a timestep already routing sends none of its remaining orders
        once the state is HALTED (they are audited as not_sent). Moving to ACTIVE or REDUCING ends
        safe mode."""
        with self._state_lock:
            change = self._state.change(target, principal=principal, reason=reason, at=self._clock(), trigger=trigger)
            if change is None:
                return None
            ended_safe_mode = self._safe_mode is not None and target != TradingState.HALTED
            if ended_safe_mode:
                self._safe_mode = None
            self._append(
                [self._event("state_change", {"event": "trading_state", **change.payload(),
                                              "safe_mode_ended": ended_safe_mode}, principal=principal)],
                state={"safe_mode": None} if ended_safe_mode else None,
            )
            self.metrics.set_trading_state(change.current)
            for code in ("TRADING_REDUCING", "TRADING_HALTED"):
                self._clear_alert(code)
            if change.current != TradingState.ACTIVE:
                self._raise_alert("TRADING_" + change.current.value, "critical",
                                  f"{change.current.value} since {change.occurred_at.isoformat()} by {principal} "
                                  f"({trigger}): {reason}")
            else:
                # The operator resumed: the breaches that led here are acknowledged.
                self._alerts.clear()
                self._publish_alerts()
            self.metrics.trading_state_changes.labels(trigger=trigger, state=change.current.value).inc()
            if ended_safe_mode:
                self._clear_alert(SAFE_MODE)
            logger.warning("trading state %s -> %s by %s (%s): %s", change.previous.value, change.current.value,
                           principal, trigger, reason)
            return change

    def flatten(self, *, principal: str, reason: str, trigger: str = "manual") -> StateChange | None:
        """Safe mode: HALTED for new orders, and every position closed gradually, a slice per interval."""
        with self._lock:
            fraction = self.settings.risk.kill_switch.safe_mode.flatten_fraction_per_interval
            positions = {s: p.qty for s, p in self._portfolio.positions().items()}
            plan = FlattenPlan(self._clock(), fraction, flatten_slices(positions, fraction), principal, reason)
            change = self.change_state(TradingState.HALTED, principal=principal, reason=reason, trigger=trigger)
            self._safe_mode = plan
            self._append([self._event("state_change", {"event": "safe_mode", "action": "start", "trigger": trigger,
                                                       "principal": principal, "reason": reason,
                                                       **plan.as_dict()}, principal=principal)],
                         state={"safe_mode": plan.as_dict()})
            self._raise_alert(SAFE_MODE, "critical", f"safe mode by {principal} ({trigger}): {reason}; closing "
                                                     f"{len(plan.slices)} positions, {fraction:.0%} per interval")
            logger.warning("safe mode started by %s (%s): %d positions, %.0f%% per interval", principal, trigger,
                           len(plan.slices), fraction * 100)
            return change

    def _apply_trigger(self, trigger: Trigger) -> None:
        self._raise_alert(trigger.code, "critical" if trigger.target == TradingState.HALTED else "warning",
                          trigger.reason)
        if trigger.safe_mode:
            if self._safe_mode is None:
                self.flatten(principal=self.settings.principal, reason=trigger.reason, trigger=trigger.name)
            return
        if escalates(self._state.state, trigger.target):
            self.change_state(trigger.target, principal=self.settings.principal, reason=trigger.reason,
                              trigger=trigger.name)

    def _dependency_failure(self, name: str, detail: str) -> None:
        trigger = self._deps.failure(name, detail)
        if trigger is not None:
            self._apply_trigger(trigger)
        else:
            self._raise_alert(DEPENDENCY_LOST, "warning", f"{name}: {detail}")

    # ---- alerts ------------------------------------------------------------------------------
    def _raise_alert(self, code: str, severity: str, detail: str) -> None:
        existing = self._alerts.get(code)
        since = existing.since if existing is not None else self._clock()
        self._alerts[code] = Alert(code, severity, since, detail)
        self._publish_alerts()

    def _clear_alert(self, code: str) -> None:
        self._alerts.pop(code, None)
        self._publish_alerts()

    def _publish_alerts(self) -> None:
        active = set(self._alerts)
        self._alert_names |= active
        self.metrics.set_alerts(active, self._alert_names)

    def alerts(self) -> list[dict[str, Any]]:
        return [a.as_dict() for a in sorted(self._alerts.values(), key=lambda a: a.since)]

    # ---- portfolio ---------------------------------------------------------------------------
    def portfolio_summary(self) -> dict[str, Any]:
        with self._lock:
            book = self._portfolio
            return {
                "equity": book.equity,
                "cash": book.cash,
                "gross_exposure": book.gross_exposure,
                "drawdown": self._drawdown(book.equity),
                "peak_equity": max(self._marks.peak_equity, book.peak_equity),
                "positions": {
                    sym: {"qty": v.qty, "avg_price": v.avg_price, "mark": v.mark,
                          "market_value": v.market_value, "weight": v.weight,
                          "sector": self.settings.sectors.get(sym, "unclassified")}
                    for sym, v in book.view().items()
                },
                "open_orders": sorted(cid for cid, o in self._inflight.items() if o.acknowledged or o.sent),
            }

    def _drawdown(self, equity: float) -> float:
        peak = max(self._marks.peak_equity, self._portfolio.peak_equity)
        return 0.0 if peak <= 0 else max(0.0, 1.0 - equity / peak)

    def exposure_by_sector(self) -> dict[str, Any]:
        with self._lock:
            equity = self._portfolio.equity
            sectors: dict[str, dict[str, float]] = {}
            for sym, view in self._portfolio.view().items():
                name = self.settings.sectors.get(sym, "unclassified")
                row = sectors.setdefault(name, {"long": 0.0, "short": 0.0, "gross": 0.0, "net": 0.0})
                value = view.market_value
                if value >= 0:
                    row["long"] += value
                else:
                    row["short"] += value
                row["gross"] += abs(value)
                row["net"] += value
            for row in sectors.values():
                row["gross_weight"] = row["gross"] / equity if equity > 0 else 0.0
                row["net_weight"] = row["net"] / equity if equity > 0 else 0.0
            return {"equity": equity, "sectors": dict(sorted(sectors.items()))}

    def status(self) -> dict[str, Any]:
        with self._lock:
            plan = self._safe_mode
            safe: dict[str, Any] | None = None
            if plan is not None:
                remaining = {s: p.qty for s, p in self._portfolio.positions().items() if p.qty != 0}
                safe = {**plan.as_dict(), "remaining_positions": len(remaining), "flat": not remaining}
            return {
                "trading_state": self.trading_state.value,
                "safe_mode": safe,
                "triggers": {
                    "peak_equity": self._marks.peak_equity,
                    "session": self._marks.session,
                    "session_peak_equity": self._marks.session_peak,
                    "drawdown": self._drawdown(self._portfolio.equity),
                    "latency_streak": self._latency.streak,
                    "broker_failures": self._deps.failures.get("broker", 0),
                },
                "alerts": self.alerts(),
                "last_reconcile": self._last_reconcile,
                "directive_bus": dict(self._directive_bus) if self._directive_bus is not None else None,
                "inflight_orders": len(self._inflight),
                "orders_in_rate_window": len(self._sent_at),
            }

    def _update_portfolio_metrics(self) -> None:
        book = self._portfolio
        self.metrics.set_portfolio(book.equity, book.gross_exposure, self._drawdown(book.equity))

    # ---- one timestep ------------------------------------------------------------------------
    @staticmethod
    def validate(batch: TimestepDecisions) -> None:
        seen: set[str] = set()
        duplicates: list[str] = []
        for d in batch.decisions:
            if d.symbol in seen and d.symbol not in duplicates:
                duplicates.append(d.symbol)
            seen.add(d.symbol)
        if duplicates:
            raise InvalidDecisionsError(
                [f"decisions: symbol {s!r} appears more than once in one timestep" for s in duplicates]
            )

    def _check_not_replayed(self, batch: TimestepDecisions) -> None:
        stale = [
            f"symbol {d.symbol!r} was already decided at bar_index {self._last_bar[d.symbol]} "
            f"(got bar_index {batch.bar_index})"
            for d in batch.decisions
            if self._last_bar.get(d.symbol, -1) >= batch.bar_index
        ]
        if stale:
            raise StaleTimestepError(stale)

    def _order_budget(self) -> int:
        rule = self.settings.risk.order_rate
        horizon = time.monotonic() - rule.window_seconds
        while self._sent_at and self._sent_at[0] < horizon:
            self._sent_at.popleft()
        return max(0, rule.max_orders - len(self._sent_at))

    def market_open(self) -> bool:
        rule = self.settings.risk.market_hours
        if rule.source == "off":
            return True
        if rule.source == "session":
            local = self._clock().astimezone(ZoneInfo(rule.timezone))
            hhmm = local.strftime("%H:%M")
            return local.weekday() < 5 and rule.open <= hhmm < rule.close
        cached = self._market_clock
        now = time.monotonic()
        if cached is not None and now - cached[0] < rule.clock_cache_seconds:
            return cached[1]
        get_clock = getattr(self.broker, "get_clock", None)
        if get_clock is None:
            logger.warning("broker %s has no clock; market hours not enforced", type(self.broker).__name__)
            self._market_clock = (now, True)
            return True
        try:
            is_open = bool(get_clock().is_open)
        except BrokerError as exc:
            # Unknown is closed: no orders on a guess.
            logger.warning("broker clock unavailable (%s); treating the market as closed", exc)
            if isinstance(exc, BrokerUnavailableError):
                self._dependency_failure("broker", str(exc))
            return False
        self._market_clock = (now, is_open)
        return is_open

    def handle_timestep(self, batch: TimestepDecisions) -> TimestepOutcome:
        self.validate(batch)
        started = time.perf_counter()
        with self._lock:
            self._check_not_replayed(batch)
            self._refresh_open_orders()
            self._portfolio.mark({d.symbol: d.price for d in batch.decisions})
            directive = self.directives.current(batch.timestep)
            state = self._state.state
            safe_mode = self._safe_mode if state == TradingState.HALTED else None
            market_open = self.market_open()
            plan = plan_timestep(
                batch,
                directive=directive,
                portfolio=self._portfolio,
                trading_state=state,
                risk=self.settings.risk,
                max_directive_ttl_seconds=self.settings.directive_ttl_seconds,
                pending_symbols=frozenset(o.intent.symbol for o in self._inflight.values()),
                market_open=market_open,
                order_budget=self._order_budget(),
                flatten=safe_mode.slices if safe_mode is not None else None,
            )
            for d in batch.decisions:
                self._last_bar[d.symbol] = batch.bar_index
            now = self._clock()
            for intent in plan.intents:
                self._inflight[intent.client_order_id] = InflightOrder(intent, recorded_at=now)
            self._audit_plan(batch, plan, state)
            # Safe-mode closing orders go out while HALTED; nothing else does.
            closing = {i.client_order_id for i in plan.flatten}
            outcomes = tuple(self._route(intent, safe_mode=intent.client_order_id in closing) for intent in plan.intents)
            self._update_portfolio_metrics()
            self._after_timestep(batch, started)
            summary = self.portfolio_summary()
        self._count(batch, plan)
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        return TimestepOutcome(batch, state, directive, plan, outcomes, summary)

    def _after_timestep(self, batch: TimestepDecisions, started: float) -> None:
        """Feed the triggers with what this timestep left behind."""
        equity = self._portfolio.equity
        session = session_of(batch.timestep, self.settings.risk.market_hours.timezone)
        triggers = drawdown_triggers(self._marks, equity, session, self.settings.risk.kill_switch)
        latency_ms = batch.decision_latency_ms
        if latency_ms is None:
            latency_ms = (time.perf_counter() - started) * 1000
        latency = self._latency.observe(latency_ms)
        if latency is not None:
            triggers.append(latency)
        self._append([], state={"drawdown_marks": self._marks.as_dict(), "latency_streak": self._latency.streak})
        for trigger in triggers:
            self._apply_trigger(trigger)
        self._check_compliance()
        if self._safe_mode is not None and not any(p.qty for p in self._portfolio.positions().values()):
            self._raise_alert(SAFE_MODE, "critical", "safe mode: book is flat; trading stays HALTED until resumed")

    def _check_compliance(self) -> None:
        positions = {s: p.qty for s, p in self._portfolio.positions().items()}
        breaches = compliance_breaches(positions, {s: self._portfolio.mark_of(s) for s in positions}, self._portfolio.equity, self.settings.risk)
        trigger = compliance_trigger(breaches, self.settings.risk)
        if trigger is not None:
            self._apply_trigger(trigger)

    def _count(self, batch: TimestepDecisions, plan: TimestepPlan) -> None:
        self.metrics.timesteps.inc()
        self.metrics.decisions.inc(len(batch.decisions))
        if plan.directive_fallback:
            self.metrics.directive_fallbacks.inc()
        for decision in plan.risk:
            if decision.reason_code is None:
                continue
            counter = self.metrics.risk_adjustments if decision.approved else self.metrics.risk_denials
            counter.labels(reason=decision.reason_code).inc()

    def _audit_plan(self, batch: TimestepDecisions, plan: TimestepPlan, state: TradingState) -> None:
        now = self._clock()
        who = self.settings.principal
        context = {"policy_version": batch.policy_version, "bar_index": batch.bar_index,
                   "timestep": batch.timestep.isoformat()}
        events: list[AuditEvent] = []
        for d in batch.decisions:
            events.append(AuditEvent(kind="decision", occurred_at=now, principal=who, payload={
                **context, "observation_checksum": batch.observation_checksum,
                "decision_latency_ms": batch.decision_latency_ms, **d.model_dump(mode="json"),
                "policy_version": d.policy_version or batch.policy_version,
            }))
        for r in plan.risk:
            events.append(AuditEvent(kind="risk_decision", occurred_at=now, principal=who, payload={
                **context, "trading_state": state.value, "overlay": plan.overlay.as_dict(),
                **r.model_dump(mode="json"),
            }))
        for intent in plan.intents:
            events.append(AuditEvent(kind="order", occurred_at=now, principal=who, payload={
                "status": "intent", **intent.model_dump(mode="json"),
            }))
        self._append(events, state={"last_bar": dict(self._last_bar), "inflight": encode_inflight(self._inflight)})

    # ---- routing -----------------------------------------------------------------------------
    def _route(self, intent: OrderIntent, *, safe_mode: bool) -> OrderOutcome:
        order = self._inflight[intent.client_order_id]
        if self._state.state == TradingState.HALTED and not safe_mode:
            note = "kill switch engaged while the timestep was routing; order not sent"
            self._finish_unsent(order, "not_sent", note)
            return OrderOutcome(intent, "not_sent", None, note)
        order.sent = True
        try:
            result = self.broker.submit_market_order(intent)
        except BrokerRejectedError as exc:
            if exc.status_code == 422 and "client_order_id" in exc.message:
                existing = self.broker.get_order_by_client_id(intent.client_order_id)
                if existing is not None:
                    # Sent by an earlier run of this gateway and found already: its fills are in
                    # the broker's positions, which the book was reconciled from.
                    logger.warning("order %s already at the broker (%s); not sent again", intent.client_order_id,
                                   existing.status)
                    order.acknowledged = True
                    order.applied_qty = existing.filled_qty
                    order.applied_notional = existing.filled_qty * (existing.filled_avg_price or 0.0)
                    note = "duplicate client_order_id: order already at the broker, not sent again"
                    self._apply_result(order, existing, [self._order_event(intent, "duplicate", existing, error=note)],
                                       apply_to_book=False)
                    return OrderOutcome(intent, "duplicate", existing, note)
            if exc.status_code is not None and (exc.status_code >= 500 or exc.status_code == 429):
                # A 5xx (or a 429 left after the retries) does not say the order was NOT taken: it is
                # in doubt exactly like a timeout.
                return self._in_doubt(order, f"HTTP {exc.status_code}: {exc.message}", exc.status_code)
            self.metrics.orders_rejected.labels(reason=f"http_{exc.status_code}").inc()
            self._finish_unsent(order, "rejected", exc.message, http_status=exc.status_code)
            return OrderOutcome(intent, "rejected", None, exc.message)
        except BrokerUnavailableError as exc:
            return self._in_doubt(order, str(exc), None)
        self._deps.success("broker")
        self._sent_at.append(time.monotonic())
        self.metrics.orders_submitted.labels(side=intent.side.value).inc()
        return self._track(order, result)

    def _in_doubt(self, order: InflightOrder, error: str, http_status: int | None) -> OrderOutcome:
        """The order may or may not have arrived: keep it in flight and look it up by client id later."""
        self.metrics.orders_rejected.labels(reason="unavailable").inc()
        self._sent_at.append(time.monotonic())
        self._append([self._order_event(order.intent, "unknown", None, error=error, http_status=http_status)],
                     state={"inflight": encode_inflight(self._inflight)})
        self._dependency_failure("broker", error)
        return OrderOutcome(order.intent, "unknown", None, error)


    def _finish_unsent(self, order: InflightOrder, status: str, note: str, *, http_status: int | None = None) -> None:
        self._inflight.pop(order.client_order_id, None)
        self._append([self._order_event(order.intent, status, None, error=note, http_status=http_status)],
                     state={"inflight": encode_inflight(self._inflight)})

    def _track(self, order: InflightOrder, result: OrderResult) -> OrderOutcome:
        order.acknowledged = True
        intent = order.intent
        answers = [self._order_event(intent, result.status, result)]
        final = result
        if not result.is_terminal:
            # Record the answer before waiting: if we die while polling, the trail says it was accepted.
            self._append(answers, state={"inflight": encode_inflight(self._inflight)})
            answers = []
            final = self._await_fill(intent, result)
            if final.status != result.status or final.filled_qty != result.filled_qty:
                answers.append(self._order_event(intent, final.status, final))
        self._apply_result(order, final, answers)
        return OrderOutcome(intent, final.status, final)

    def _await_fill(self, intent: OrderIntent, result: OrderResult) -> OrderResult:
        deadline = time.monotonic() + self.settings.fill_wait_s
        current = result
        delay = 0.05
        while not current.is_terminal and time.monotonic() < deadline:
            self._sleep(delay)  # polling the broker: a market order normally fills within moments
            delay = min(delay * 2, 0.5)
            try:
                found = self.broker.get_order_by_client_id(intent.client_order_id)
            except BrokerUnavailableError as exc:
                logger.warning("cannot poll order %s: %s", intent.client_order_id, exc)
                break
            if found is not None:
                current = found
        return current

    def _apply_result(
        self, order: InflightOrder, result: OrderResult, answers: list[AuditEvent], *, apply_to_book: bool = True
    ) -> None:
        """Audit `answers` plus the not-yet-applied part of `result` as one fill, together with the
        in-flight set (one transaction); then apply the fill; forget the order once it is done."""
        fill: Fill | None = None
        new_qty = result.filled_qty - order.applied_qty
        intent = order.intent
        if new_qty > _FILL_EPS:
            if result.filled_avg_price is None or result.filled_avg_price <= 0:
                logger.error("order %s reports %.6f filled without a price; fill not applied",
                             result.client_order_id, new_qty)
            else:
                notional = result.filled_qty * result.filled_avg_price
                price = (notional - order.applied_notional) / new_qty
                fill = Fill(
                    client_order_id=result.client_order_id,
                    broker_order_id=result.broker_order_id,
                    symbol=intent.symbol,
                    side=intent.side,
                    qty=new_qty,
                    price=price,
                    filled_at=result.filled_at or self._clock(),
                )
                cost = realized_cost(intent.side, new_qty, price, intent.reference_price,
                                     self.settings.risk.commission_bps)
                payload = {**fill.model_dump(mode="json"), "reference_price": intent.reference_price,
                           "realized_cost": cost,
                           "estimated_cost": intent.estimated_cost * new_qty / intent.qty,
                           "applied_to_book": apply_to_book}
                answers = [*answers, self._event("fill", payload, principal=self.settings.principal)]
                order.applied_qty = result.filled_qty
                order.applied_notional = notional
                order.fills.append(fill)
        if result.is_terminal:
            self._inflight.pop(order.client_order_id, None)
        self._append(answers, state={"inflight": encode_inflight(self._inflight)})
        self.metrics.inflight_orders.set(len(self._inflight))
        if fill is not None:
            if apply_to_book:
                self._portfolio.apply_fill(fill)
            self.metrics.orders_filled.inc()
            self.metrics.estimated_cost.inc(intent.estimated_cost * fill.qty / intent.qty)
            cost = realized_cost(intent.side, fill.qty, fill.price, intent.reference_price,
                                 self.settings.risk.commission_bps)
            if cost > 0:
                self.metrics.realized_cost.inc(cost)

    def _refresh_open_orders(self) -> None:
        for client_order_id, order in list(self._inflight.items()):
            if not order.sent and not order.acknowledged:
                continue  # committed in this process but not yet routed: nothing to ask
            try:
                found = self.broker.get_order_by_client_id(client_order_id)
            except BrokerUnavailableError as exc:
                logger.warning("cannot refresh open order %s: %s", client_order_id, exc)
                self._dependency_failure("broker", str(exc))
                continue
            if found is None:
                if not order.acknowledged:
                    # The submit never arrived: nothing was traded; the symbol is free again.
                    self._finish_unsent(order, "not_received", "broker has no order with this client_order_id")
                continue
            answers: list[AuditEvent] = []
            if not order.acknowledged:
                order.acknowledged = True
                answers.append(self._order_event(order.intent, found.status, found,
                                                 error="found after a failed submit"))
            elif found.filled_qty > order.applied_qty + _FILL_EPS or found.is_terminal:
                answers.append(self._order_event(order.intent, found.status, found))
            self._apply_result(order, found, answers)

    # ---- audit helpers -----------------------------------------------------------------------
    def _event(self, kind: AuditKind, payload: dict[str, Any], *, principal: str) -> AuditEvent:
        return AuditEvent(kind=kind, occurred_at=self._clock(), principal=principal, payload=payload)

    def _append(self, events: list[AuditEvent], *, state: dict[str, Any] | None = None) -> list[int]:
        if not events and not state:
            return []
        return self.audit.append_many(events, state=state)

    def _audit(self, kind: AuditKind, payload: dict[str, Any], *, principal: str) -> int:
        return self.audit.append(self._event(kind, payload, principal=principal))

    def _order_event(
        self, intent: OrderIntent, status: str, result: OrderResult | None, *, error: str | None = None,
        http_status: int | None = None,
    ) -> AuditEvent:
        payload: dict[str, Any] = {
            "status": status,
            "client_order_id": intent.client_order_id,
            "symbol": intent.symbol,
            "side": intent.side.value,
            "qty": intent.qty,
            "bar_index": intent.bar_index,
            "policy_version": intent.policy_version,
        }
        if result is not None:
            payload.update(broker_order_id=result.broker_order_id, broker_status=result.status,
                           filled_qty=result.filled_qty, filled_avg_price=result.filled_avg_price)
        if error is not None:
            payload["error"] = error
        if http_status is not None:
            payload["http_status"] = http_status
        return self._event("order", payload, principal=self.settings.principal)
