"""The gateway's work, without HTTP: reconcile, plan each timestep, audit, route orders, apply fills.

Order of operations for one timestep (the lock makes timesteps and kill-switch changes atomic
with respect to each other):
  1. pick up late fills of orders still open at the broker
  2. mark the portfolio to the decisions' prices
  3. plan (overlay + guardrails) with the directive live at the decision's timestep
  4. audit decisions, risk decisions and order intents in ONE transaction, before anything is sent
  5. send each intent; audit the broker's answer; audit and apply each fill
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from contracts.audit import AuditEvent, AuditKind
from contracts.decisions import MasterDirective, TimestepDecisions
from contracts.orders import Fill, OrderIntent, TradingState
from gateway.audit.store import AuditStore
from gateway.brokers.base import Broker, OrderResult
from gateway.directives import DirectiveBook
from gateway.domain.planner import TimestepPlan, plan_timestep
from gateway.domain.portfolio import Portfolio
from gateway.domain.trading_state import StateChange, TradingStateMachine
from gateway.errors import (
    BrokerRejectedError,
    BrokerUnavailableError,
    InvalidDecisionsError,
    StaleTimestepError,
)
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

_FILL_EPS = 1e-9


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class OrderOutcome:
    intent: OrderIntent
    status: str  # the broker's order status, or "rejected" / "unknown" when there is no broker order
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


@dataclass
class _OpenOrder:
    """An order sent but not finished: fills already applied, so later polls apply only the rest."""

    intent: OrderIntent
    applied_qty: float = 0.0
    applied_notional: float = 0.0
    acknowledged: bool = True  # False when the submit failed in transit: the broker may not have it
    fills: list[Fill] = field(default_factory=list)


class GatewayService:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        broker: Broker,
        audit: AuditStore,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.audit = audit
        self.metrics = metrics or GatewayMetrics()
        self.directives = DirectiveBook(settings.directive_ttl_seconds)
        self._clock = clock
        self._lock = threading.RLock()
        # The kill switch has its own lock: it must land at once, even while a timestep is routing.
        self._state_lock = threading.Lock()
        self._state = TradingStateMachine()
        self._portfolio = Portfolio(0.0)
        self._open: dict[str, _OpenOrder] = {}
        self._last_bar: dict[str, int] = {}
        self._started = False
        self._stopped = False

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Restore the kill-switch state from the audit trail and rebuild the book from the broker."""
        with self._lock:
            self._restore_trading_state()
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

    def reconcile(self) -> None:
        """Replace the book with the broker's account and positions (the broker is the truth)."""
        with self._lock:
            account = self.broker.get_account()
            positions = self.broker.get_positions()
            self._portfolio = Portfolio.from_broker(
                account.cash, {p.symbol: (p.qty, p.avg_entry_price) for p in positions}
            )
            payload = {
                "event": "reconciled",
                "cash": account.cash,
                "broker_equity": account.equity,
                "book_equity": self._portfolio.equity,
                "positions": {p.symbol: {"qty": p.qty, "avg_entry_price": p.avg_entry_price} for p in positions},
            }
            self._audit("state_change", payload, principal=self.settings.principal)
            logger.info("reconciled with broker: cash %.2f, %d positions, broker equity %.2f",
                        account.cash, len(positions), account.equity)
            self._update_portfolio_metrics()

    # ---- directives --------------------------------------------------------------------------
    def receive_directive(self, directive: MasterDirective) -> None:
        """Callback for the directive source: audit, then make it available to planning."""
        if self._stopped:
            logger.warning("gateway stopped; directive %s dropped", directive.directive_id)
            return
        self._audit("directive", directive.model_dump(mode="json"), principal=self.settings.principal)
        self.directives.add(directive)
        self.metrics.directives.labels(mode=directive.mode).inc()
        logger.info("directive %s (%s) issued %s, ttl %.0fs", directive.directive_id, directive.mode,
                    directive.issued_at.isoformat(), directive.ttl_seconds)

    # ---- trading state -----------------------------------------------------------------------
    @property
    def trading_state(self) -> TradingState:
        return self._state.state

    def change_state(self, target: TradingState, *, principal: str, reason: str) -> StateChange | None:
        """Takes effect immediately: a timestep already routing sends none of its remaining orders
        once the state is HALTED (they are audited as not_sent)."""
        with self._state_lock:
            change = self._state.change(target, principal=principal, reason=reason, at=self._clock())
            if change is None:
                return None
            self._audit("state_change", {"event": "trading_state", **change.payload()}, principal=principal)
            self.metrics.set_trading_state(change.current)
            logger.warning("trading state %s -> %s by %s: %s", change.previous.value, change.current.value,
                           principal, reason)
            return change

    # ---- portfolio ---------------------------------------------------------------------------
    def portfolio_summary(self) -> dict[str, Any]:
        with self._lock:
            book = self._portfolio
            return {
                "equity": book.equity,
                "cash": book.cash,
                "gross_exposure": book.gross_exposure,
                "drawdown": book.drawdown,
                "peak_equity": book.peak_equity,
                "positions": {
                    sym: {"qty": v.qty, "avg_price": v.avg_price, "mark": v.mark,
                          "market_value": v.market_value, "weight": v.weight}
                    for sym, v in book.view().items()
                },
                "open_orders": sorted(self._open),
            }

    def _update_portfolio_metrics(self) -> None:
        book = self._portfolio
        self.metrics.set_portfolio(book.equity, book.gross_exposure, book.drawdown)

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

    def handle_timestep(self, batch: TimestepDecisions) -> TimestepOutcome:
        self.validate(batch)
        started = time.perf_counter()
        with self._lock:
            self._check_not_replayed(batch)
            self._refresh_open_orders()
            self._portfolio.mark({d.symbol: d.price for d in batch.decisions})
            directive = self.directives.current(batch.timestep)
            state = self._state.state
            plan = plan_timestep(
                batch,
                directive=directive,
                portfolio=self._portfolio,
                trading_state=state,
                risk=self.settings.risk,
                max_directive_ttl_seconds=self.settings.directive_ttl_seconds,
                pending_symbols=frozenset(o.intent.symbol for o in self._open.values()),
            )
            self._audit_plan(batch, plan, state)
            for d in batch.decisions:
                self._last_bar[d.symbol] = batch.bar_index
            outcomes = tuple(self._route(intent) for intent in plan.intents)
            self._update_portfolio_metrics()
            summary = self.portfolio_summary()
        self._count(batch, plan)
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        return TimestepOutcome(batch, state, directive, plan, outcomes, summary)

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
                **context, "observation_checksum": batch.observation_checksum, **d.model_dump(mode="json"),
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
        self.audit.append_many(events)

    # ---- routing -----------------------------------------------------------------------------
    def _route(self, intent: OrderIntent) -> OrderOutcome:
        if self._state.state == TradingState.HALTED:
            note = "kill switch engaged while the timestep was routing; order not sent"
            self._audit_order(intent, "not_sent", None, error=note)
            return OrderOutcome(intent, "not_sent", None, note)
        try:
            result = self.broker.submit_market_order(intent)
        except BrokerRejectedError as exc:
            if exc.status_code == 422 and "client_order_id" in exc.message:
                existing = self.broker.get_order_by_client_id(intent.client_order_id)
                if existing is not None:
                    # Sent by an earlier run of this gateway: its fills are already in the broker's
                    # positions, which the book was reconciled from, so they are not applied again.
                    logger.warning("order %s already at the broker (%s); not sent again", intent.client_order_id,
                                   existing.status)
                    note = "duplicate client_order_id: order already at the broker, not sent again"
                    self._audit_order(intent, "duplicate", existing, error=note)
                    return OrderOutcome(intent, "duplicate", existing, note)
            self.metrics.orders_rejected.labels(reason=f"http_{exc.status_code}").inc()
            self._audit_order(intent, "rejected", None, error=exc.message, http_status=exc.status_code)
            return OrderOutcome(intent, "rejected", None, exc.message)
        except BrokerUnavailableError as exc:
            # The order may or may not have arrived: keep it open and look it up by client id later.
            self._open[intent.client_order_id] = _OpenOrder(intent, acknowledged=False)
            self.metrics.orders_rejected.labels(reason="unavailable").inc()
            self._audit_order(intent, "unknown", None, error=str(exc))
            return OrderOutcome(intent, "unknown", None, str(exc))
        self.metrics.orders_submitted.labels(side=intent.side.value).inc()
        return self._track(intent, result)

    def _track(self, intent: OrderIntent, result: OrderResult) -> OrderOutcome:
        tracked = _OpenOrder(intent)
        self._open[intent.client_order_id] = tracked
        answers = [self._order_event(intent, result.status, result)]
        final = result
        if not result.is_terminal:
            # Record the answer before waiting: if we die while polling, the trail says it was accepted.
            self.audit.append_many(answers)
            answers = []
            final = self._await_fill(intent, result)
            if final.status != result.status or final.filled_qty != result.filled_qty:
                answers.append(self._order_event(intent, final.status, final))
        self._apply_result(tracked, final, answers)
        return OrderOutcome(intent, final.status, final)

    def _await_fill(self, intent: OrderIntent, result: OrderResult) -> OrderResult:
        deadline = time.monotonic() + self.settings.fill_wait_s
        current = result
        delay = 0.05
        while not current.is_terminal and time.monotonic() < deadline:
            time.sleep(delay)  # polling the broker: a market order normally fills within moments
            delay = min(delay * 2, 0.5)
            found = self.broker.get_order_by_client_id(intent.client_order_id)
            if found is not None:
                current = found
        return current

    def _apply_result(self, tracked: _OpenOrder, result: OrderResult, answers: list[AuditEvent]) -> None:
        """Audit `answers` plus the not-yet-applied part of `result` as one fill (one transaction),
        then apply the fill; forget the order once it is done."""
        fill: Fill | None = None
        new_qty = result.filled_qty - tracked.applied_qty
        if new_qty > _FILL_EPS:
            if result.filled_avg_price is None or result.filled_avg_price <= 0:
                logger.error("order %s reports %.6f filled without a price; fill not applied",
                             result.client_order_id, new_qty)
            else:
                notional = result.filled_qty * result.filled_avg_price
                fill = Fill(
                    client_order_id=result.client_order_id,
                    broker_order_id=result.broker_order_id,
                    symbol=tracked.intent.symbol,
                    side=tracked.intent.side,
                    qty=new_qty,
                    price=(notional - tracked.applied_notional) / new_qty,
                    filled_at=result.filled_at or self._clock(),
                )
                fill_event = self._event("fill", fill.model_dump(mode="json"), principal=self.settings.principal)
                answers = [*answers, fill_event]
        self.audit.append_many(answers)
        if fill is not None:
            self._portfolio.apply_fill(fill)
            tracked.applied_qty = result.filled_qty
            tracked.applied_notional = result.filled_qty * (result.filled_avg_price or 0.0)
            tracked.fills.append(fill)
            self.metrics.orders_filled.inc()
        if result.is_terminal:
            self._open.pop(tracked.intent.client_order_id, None)

    def _refresh_open_orders(self) -> None:
        for client_order_id, tracked in list(self._open.items()):
            try:
                found = self.broker.get_order_by_client_id(client_order_id)
            except BrokerUnavailableError as exc:
                logger.warning("cannot refresh open order %s: %s", client_order_id, exc)
                continue
            if found is None:
                if not tracked.acknowledged:
                    # The submit never arrived: nothing was traded; the symbol is free again.
                    self._audit_order(tracked.intent, "not_received", None,
                                      error="broker has no order with this client_order_id")
                    self._open.pop(client_order_id, None)
                continue
            answers: list[AuditEvent] = []
            if not tracked.acknowledged:
                tracked.acknowledged = True
                answers.append(self._order_event(tracked.intent, found.status, found,
                                                 error="found after a failed submit"))
            elif found.filled_qty > tracked.applied_qty + _FILL_EPS or found.is_terminal:
                answers.append(self._order_event(tracked.intent, found.status, found))
            self._apply_result(tracked, found, answers)

    # ---- audit helpers -----------------------------------------------------------------------
    def _event(self, kind: AuditKind, payload: dict[str, Any], *, principal: str) -> AuditEvent:
        return AuditEvent(kind=kind, occurred_at=self._clock(), principal=principal, payload=payload)

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
            payload.update(broker_order_id=result.broker_order_id, filled_qty=result.filled_qty,
                           filled_avg_price=result.filled_avg_price)
        if error is not None:
            payload["error"] = error
        if http_status is not None:
            payload["http_status"] = http_status
        return self._event("order", payload, principal=self.settings.principal)

    def _audit_order(
        self, intent: OrderIntent, status: str, result: OrderResult | None, *, error: str | None = None,
        http_status: int | None = None,
    ) -> None:
        self.audit.append(self._order_event(intent, status, result, error=error, http_status=http_status))
