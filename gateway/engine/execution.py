"""Execution: the in-flight ledger and everything that moves an order from intent to final answer.

  register   intents enter the ledger (the timestep commits them, with its decisions, before any send)
  dispatch   a timestep's orders are routed by a bounded pool of workers, risk-reducing orders first
             (every order that only shrinks a position is answered before any order that adds risk is
             sent); the caller gets a RoutingTicket at once and may wait on it
  route      submit with the intent's deterministic client_order_id; a 422 duplicate is looked up, a
             5xx / timeout / 429 left after retries is "in doubt" (unknown) and looked up later
  track      wait up to fill_wait_s for a market order's fill, apply fills as they arrive
  recover    at start, every order left in the ledger by the previous run is looked up at the broker
  refresh    orders still open (or in doubt) are looked up after each timestep's routing

Every answer is audited together with the order's ledger key (GatewayState) in one transaction
before it changes the book. Fills are applied to the book under the book lock as they arrive.
"""

import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts.audit import AuditEvent, FillRecord, OrderRecord
from contracts.logs import correlation
from contracts.orders import Fill, OrderIntent, OrderSide, OrderStatus
from gateway.audit.group_commit import GroupCommit
from gateway.audit.store import AuditStore
from gateway.brokers.base import Broker, OrderResult
from gateway.domain.costs import BPS
from gateway.domain.performance import closing_gross_pnl
from gateway.domain.portfolio import Portfolio
from gateway.engine.clock import Clock
from gateway.engine.kill_switch import KillSwitch
from gateway.engine.latency import LatencyRecorder
from gateway.engine.performance import PerformanceTracker
from gateway.engine.state import GatewayState
from gateway.errors import BrokerRejectedError, BrokerUnavailableError
from gateway.inflight import InflightOrder
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

_FILL_EPS = 1e-9


def realized_cost(side: OrderSide, qty: float, price: float, reference_price: float, commission_bps: float) -> float:
    """What the fill cost against the decision's price: adverse price move plus commission. SIGNED: a favourable
    fill (bought below / sold above the decision price by more than the commission) is a negative cost."""
    sign = 1.0 if side == OrderSide.BUY else -1.0
    return sign * (price - reference_price) * qty + commission_bps * BPS * qty * price


def reduces_risk(intent: OrderIntent, position_qty: float) -> bool:
    """An order that only moves the position towards zero (never through it)."""
    if intent.side == OrderSide.SELL:
        return position_qty > 0 and intent.qty <= position_qty + _FILL_EPS
    return position_qty < 0 and intent.qty <= -position_qty + _FILL_EPS


@dataclass(frozen=True)
class OrderOutcome:
    intent: OrderIntent
    status: OrderStatus
    result: OrderResult | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "client_order_id": self.intent.client_order_id,
            "symbol": self.intent.symbol,
            "side": self.intent.side.value,
            "qty": self.intent.qty,
            "status": self.status.value,
            "filled_qty": r.filled_qty if r else 0.0,
            "filled_avg_price": r.filled_avg_price if r else None,
            "broker_order_id": r.broker_order_id if r else None,
            "estimated_cost": self.intent.estimated_cost,
            "error": self.error,
        }


class Book:
    """The portfolio and the lock every reader and writer of it (and of the ledger) takes.

    `routing` counts orders handed to the workers and not yet finished; reconciliation waits for it
    to reach zero (`idle`), so a fill is never both in the broker's positions it adopts and applied again.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.idle = threading.Condition(self.lock)
        self.portfolio = Portfolio(0.0)
        self.routing = 0

    def positions(self) -> dict[str, float]:
        with self.lock:
            return {s: p.qty for s, p in self.portfolio.positions().items()}


@dataclass
class RoutingTicket:
    """One timestep's orders on their way; `done` is set once every one has its answer for now."""

    timestep_id: str
    intents: tuple[OrderIntent, ...]
    received_at: float  # monotonic
    outcomes: dict[str, OrderOutcome] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    context: dict[str, Any] | None = None  # what the after-routing triggers read (the timestep, its latency)
    errors: list[BaseException] = field(default_factory=list)  # unexpected failures while routing (re-raised to a
    # caller waiting for the settled answer)

    def wait(self, timeout_s: float | None) -> bool:
        return self.done.wait(timeout_s)

    def ordered_outcomes(self) -> tuple[OrderOutcome, ...]:
        return tuple(self.outcomes[i.client_order_id] for i in self.intents if i.client_order_id in self.outcomes)


class OrderRateWindow:
    """Orders sent in the rolling window of the order-rate rule (monotonic clock)."""

    def __init__(self, window_s: float, clock: Clock) -> None:
        self._window_s = window_s
        self._clock = clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def record(self) -> None:
        with self._lock:
            self._sent.append(self._clock.monotonic())

    def count(self) -> int:
        with self._lock:
            horizon = self._clock.monotonic() - self._window_s
            while self._sent and self._sent[0] < horizon:
                self._sent.popleft()
            return len(self._sent)


class Execution:
    def __init__(self, state: GatewayState, book: Book, *, settings: GatewaySettings, broker: Broker,
                 audit: AuditStore, metrics: GatewayMetrics, clock: Clock, kill_switch: KillSwitch,
                 latency: LatencyRecorder, on_settled: Callable[[RoutingTicket], None] | None = None) -> None:
        self._state = state
        self.book = book
        self._settings = settings
        self.broker = broker
        # Answers of concurrently routed orders share transactions (each still durable before its fill applies).
        self._audit = GroupCommit(audit)
        self._metrics = metrics
        self._clock = clock
        self._ks = kill_switch
        self._latency = latency
        self._on_settled = on_settled
        self.rate = OrderRateWindow(settings.risk.order_rate.window_seconds, clock)
        self.performance = PerformanceTracker(settings, metrics)
        # Lookups of open orders run after each timestep's routing AND from reconciliation's thread: one at a time,
        # or two threads could both see the same new fill quantity and apply it twice.
        self._refresh_lock = threading.Lock()
        self._workers = ThreadPoolExecutor(max_workers=settings.routing_concurrency,
                                           thread_name_prefix="gateway-route")
        # One coordinator: timesteps are routed in the order they were accepted.
        self._coordinator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-routing")

    def close(self, wait_s: float = 30.0) -> None:
        """Stop taking timesteps; orders already handed over finish (their answers are audited)."""
        self._coordinator.shutdown(wait=True, cancel_futures=False)
        self._workers.shutdown(wait=True, cancel_futures=False)

    # ---- the ledger ---------------------------------------------------------------------------
    def pending_symbols(self) -> frozenset[str]:
        with self.book.lock:
            return frozenset(o.intent.symbol for o in self._state.inflight.values())

    def open_order_ids(self) -> list[str]:
        with self.book.lock:
            return sorted(cid for cid, o in self._state.inflight.items() if o.acknowledged or o.sent or o.routing)

    def register(self, intents: Iterable[OrderIntent]) -> None:
        """Intents join the ledger (caller holds the book lock and commits them in the same step)."""
        now = self._clock.now()
        for intent in intents:
            self._state.inflight[intent.client_order_id] = InflightOrder(intent, recorded_at=now)

    def mark_durable(self, intents: Iterable[OrderIntent]) -> None:
        at = self._clock.monotonic()
        for intent in intents:
            order = self._state.inflight.get(intent.client_order_id)
            if order is not None:
                order.durable_at = at

    # ---- dispatch -----------------------------------------------------------------------------
    def dispatch(self, ticket: RoutingTicket, closing: frozenset[str], reducing: frozenset[str]) -> RoutingTicket:
        """Hand a committed timestep's orders to the workers; returns at once (wait on the ticket)."""
        with self.book.lock:
            for intent in ticket.intents:
                self._state.inflight[intent.client_order_id].routing = True
            self.book.routing += len(ticket.intents)
        # The coordinator and the workers run in a copy of the caller's context: its correlation ids (bar, timestep).
        self._coordinator.submit(contextvars.copy_context().run, self._route_timestep, ticket, closing, reducing)
        return ticket

    def _route_timestep(self, ticket: RoutingTicket, closing: frozenset[str], reducing: frozenset[str]) -> None:
        try:
            first = [i for i in ticket.intents if i.client_order_id in reducing or i.client_order_id in closing]
            rest = [i for i in ticket.intents if i not in first]
            for phase in (first, rest):
                futures = [self._workers.submit(contextvars.copy_context().run, self._route_one, ticket, intent,
                                                intent.client_order_id in closing)
                           for intent in phase]
                wait(futures)
                for future in futures:
                    error = future.exception()
                    if error is not None:  # e.g. the audit store failed: the order stays in the ledger for recovery
                        logger.error("routing worker failed: %s", error, exc_info=error)
                        ticket.errors.append(error)
            # Orders still open or in doubt (this timestep's and earlier ones) are looked up now, so the next
            # timestep plans with them settled where the broker has settled them.
            self.refresh_open_orders()
            if self._on_settled is not None:
                self._on_settled(ticket)
        except Exception:  # noqa: BLE001 - a worker thread has no caller to raise to; the order stays in the ledger
            logger.exception("routing timestep %s failed; its open orders are looked up again at the next "
                             "timestep and at reconciliation", ticket.timestep_id)
        finally:
            self._latency.observe("timestep_settle", self._clock.monotonic() - ticket.received_at)
            ticket.done.set()

    def _route_one(self, ticket: RoutingTicket, intent: OrderIntent, closing: bool) -> None:
        order = self._state.inflight.get(intent.client_order_id)
        try:
            if order is None:  # settled meanwhile by a reconciliation's refresh
                return
            with correlation(client_order_id=intent.client_order_id):
                ticket.outcomes[intent.client_order_id] = self.route(order, closing=closing)
        finally:
            with self.book.lock:
                if order is not None:
                    order.routing = False
                self.book.routing -= 1
                if self.book.routing == 0:
                    self.book.idle.notify_all()

    # ---- one order ----------------------------------------------------------------------------
    def route(self, order: InflightOrder, *, closing: bool) -> OrderOutcome:
        intent = order.intent
        if not self._ks.may_send(closing=closing):
            note = "kill switch engaged while the timestep was routing; order not sent"
            self._finish_unsent(order, OrderStatus.NOT_SENT, note)
            return OrderOutcome(intent, OrderStatus.NOT_SENT, None, note)
        order.sent = True
        try:
            result = self.broker.submit_market_order(intent)
        except BrokerRejectedError as exc:
            if exc.status_code == 422 and "client_order_id" in exc.message:
                existing = self.broker.get_order_by_client_id(intent.client_order_id)
                if existing is not None:
                    # Sent by an earlier run of this gateway: its fills are in the broker's positions,
                    # which the book was reconciled from.
                    logger.warning("order %s already at the broker (%s); not sent again", intent.client_order_id,
                                   existing.status)
                    order.acknowledged = True
                    order.applied_qty = existing.filled_qty
                    order.applied_notional = existing.filled_qty * (existing.filled_avg_price or 0.0)
                    note = "duplicate client_order_id: order already at the broker, not sent again"
                    self._apply_result(order, existing, [self._order_event(intent, OrderStatus.DUPLICATE, existing,
                                                                            error=note)], apply_to_book=False)
                    return OrderOutcome(intent, OrderStatus.DUPLICATE, existing, note)
            if exc.status_code is not None and (exc.status_code >= 500 or exc.status_code == 429):
                # A 5xx (or a 429 left after the retries) does not say the order was NOT taken.
                return self._in_doubt(order, f"HTTP {exc.status_code}: {exc.message}", exc.status_code)
            self._metrics.orders_rejected.labels(reason=f"http_{exc.status_code}").inc()
            self._finish_unsent(order, OrderStatus.REJECTED, exc.message, http_status=exc.status_code)
            return OrderOutcome(intent, OrderStatus.REJECTED, None, exc.message)
        except BrokerUnavailableError as exc:
            return self._in_doubt(order, str(exc), None)
        self._ks.broker_ok()
        self.rate.record()
        self._metrics.orders_submitted.labels(side=intent.side.value).inc()
        return self._track(order, result)

    def _acknowledged(self, order: InflightOrder) -> float | None:
        """Mark the first broker answer; returns the action-to-order latency (ms) when measured."""
        order.acknowledged = True
        now = self._clock.monotonic()
        if order.acknowledged_at is not None:
            return None
        order.acknowledged_at = now
        if order.durable_at is None:
            return None
        seconds = now - order.durable_at
        self._latency.observe("action_to_order", seconds)
        return seconds * 1000

    def _in_doubt(self, order: InflightOrder, error: str, http_status: int | None) -> OrderOutcome:
        """The order may or may not have arrived: keep it in the ledger and look it up by client id later."""
        self._metrics.orders_rejected.labels(reason="unavailable").inc()
        self.rate.record()
        self._audit.append(self._order_event(order.intent, OrderStatus.UNKNOWN, None, error=error,
                                             http_status=http_status),
                           state=self._state.inflight_section(order.client_order_id))
        self._ks.broker_failure(error)
        return OrderOutcome(order.intent, OrderStatus.UNKNOWN, None, error)

    def _finish_unsent(self, order: InflightOrder, status: OrderStatus, note: str, *,
                       http_status: int | None = None) -> None:
        with self.book.lock:
            self._state.inflight.pop(order.client_order_id, None)
            section = self._state.inflight_section(order.client_order_id)
        self._audit.append(self._order_event(order.intent, status, None, error=note, http_status=http_status),
                           state=section)
        self._metrics.inflight_orders.set(len(self._state.inflight))

    def _track(self, order: InflightOrder, result: OrderResult) -> OrderOutcome:
        intent = order.intent
        a2o = self._acknowledged(order)
        answers = [self._order_event(intent, result.status, result, action_to_order_ms=a2o)]
        final = result
        if not result.is_terminal:
            # Record the answer before waiting: if we die while polling, the trail says it was accepted.
            self._audit.append_many(answers, state=self._state.inflight_section(order.client_order_id))
            answers = []
            final = self._await_fill(intent, result)
            if final.status != result.status or final.filled_qty != result.filled_qty:
                answers.append(self._order_event(intent, final.status, final))
        self._apply_result(order, final, answers)
        return OrderOutcome(intent, final.status, final)

    def _await_fill(self, intent: OrderIntent, result: OrderResult) -> OrderResult:
        deadline = self._clock.monotonic() + self._settings.fill_wait_s
        current = result
        delay = 0.05
        while not current.is_terminal and self._clock.monotonic() < deadline:
            self._clock.sleep(delay)  # polling the broker: a market order normally fills within moments
            delay = min(delay * 2, 0.5)
            try:
                found = self.broker.get_order_by_client_id(intent.client_order_id)
            except BrokerUnavailableError as exc:
                logger.warning("cannot poll order %s: %s", intent.client_order_id, exc)
                break
            if found is not None:
                current = found
        return current

    def _apply_result(self, order: InflightOrder, result: OrderResult, answers: list[AuditEvent], *,
                      apply_to_book: bool = True) -> None:
        """Audit `answers` plus the not-yet-applied part of `result` as one fill, with the order's ledger key
        (one transaction); then apply the fill to the book; forget the order once it is done."""
        fill: Fill | None = None
        new_qty = result.filled_qty - order.applied_qty
        intent = order.intent
        cost = 0.0
        if new_qty > _FILL_EPS:
            if result.filled_avg_price is None or result.filled_avg_price <= 0:
                logger.error("order %s reports %.6f filled without a price; fill not applied",
                             result.client_order_id, new_qty)
            else:
                notional = result.filled_qty * result.filled_avg_price
                price = (notional - order.applied_notional) / new_qty
                fill = Fill(client_order_id=result.client_order_id, broker_order_id=result.broker_order_id,
                            symbol=intent.symbol, side=intent.side, qty=new_qty, price=price,
                            filled_at=result.filled_at or self._clock.now())
                cost = realized_cost(intent.side, new_qty, price, intent.reference_price,
                                     self._settings.risk.commission_bps)
                record = FillRecord(**fill.model_dump(), reference_price=intent.reference_price, realized_cost=cost,
                                    estimated_cost=intent.estimated_cost * new_qty / intent.qty,
                                    applied_to_book=apply_to_book)
                answers = [*answers, AuditEvent.of("fill", record, occurred_at=self._clock.now(),
                                                   principal=self._settings.principal)]
                order.applied_qty = result.filled_qty
                order.applied_notional = notional
                order.fills.append(fill)
        with self.book.lock:
            if result.is_terminal:
                self._state.inflight.pop(order.client_order_id, None)
            section = self._state.inflight_section(order.client_order_id)
        if answers or result.is_terminal:
            self._audit.append_many(answers, state=section)
        gross_pnl: float | None = None  # realized P&L before costs; None: the fill closed nothing in the book
        with self.book.lock:
            if fill is not None and apply_to_book:
                held = self.book.portfolio.positions().get(fill.symbol)
                if held is not None:
                    gross_pnl = closing_gross_pnl(held.qty, held.avg_price, fill.side == OrderSide.BUY, fill.qty,
                                                  intent.reference_price)
                self.book.portfolio.apply_fill(fill)
        self._metrics.inflight_orders.set(len(self._state.inflight))
        if result.status == OrderStatus.FILLED and order.acknowledged_at is not None:
            self._latency.observe("order_to_fill", self._clock.monotonic() - order.acknowledged_at)
        if fill is not None:
            self._metrics.orders_filled.inc()
            self._metrics.estimated_cost.inc(intent.estimated_cost * fill.qty / intent.qty)
            if cost > 0:  # the counter is monotonic: adverse costs only; the signed sum is a gauge
                self._metrics.realized_cost.inc(cost)
            self.performance.fill(notional=fill.qty * fill.price, signed_cost=cost, gross_pnl=gross_pnl)

    # ---- lookups ------------------------------------------------------------------------------
    def refresh_open_orders(self) -> None:
        """Look up orders still open or in doubt (not those a worker owns right now)."""
        with self._refresh_lock:
            self._refresh_open_orders()

    def _refresh_open_orders(self) -> None:
        with self.book.lock:
            candidates = [o for o in self._state.inflight.values()
                          if not o.routing and (o.sent or o.acknowledged)]
        for order in candidates:
            if order.client_order_id not in self._state.inflight:
                continue  # settled by a previous lookup
            cid = order.client_order_id
            try:
                found = self.broker.get_order_by_client_id(cid)
            except BrokerUnavailableError as exc:
                logger.warning("cannot refresh open order %s: %s", cid, exc)
                self._ks.broker_failure(str(exc))
                continue
            if found is None:
                # A submit in doubt may still be on its way to the broker: "never arrived" only once the intent
                # is older than the settle window (the same rule as recovery after a restart).
                settled = (self._clock.now() - order.recorded_at).total_seconds() >= self._settings.recovery_settle_s
                if not order.acknowledged and settled:
                    # The submit never arrived: nothing was traded; the symbol is free again.
                    self._finish_unsent(order, OrderStatus.NOT_RECEIVED, "broker has no order with this client_order_id")
                continue
            answers: list[AuditEvent] = []
            if not order.acknowledged:
                self._acknowledged(order)
                answers.append(self._order_event(order.intent, found.status, found, error="found after a failed submit"))
            elif found.filled_qty > order.applied_qty + _FILL_EPS or found.is_terminal:
                answers.append(self._order_event(order.intent, found.status, found))
            with correlation(client_order_id=cid):
                self._apply_result(order, found, answers)

    def recover(self) -> None:
        """At start: settle every order the previous run left in the ledger (the book is rebuilt from the
        broker afterwards, so fills found here are audited, not applied)."""
        inflight = self._state.inflight
        if not inflight:
            return
        logger.warning("recovering %d in-flight orders from the previous run", len(inflight))
        for cid, order in sorted(inflight.items(), key=lambda kv: kv[1].recorded_at):
            found = self.broker.get_order_by_client_id(cid)
            if found is None:
                # A request in flight when the process died may still be processed by the broker:
                # declare "not sent" only once the intent is older than the settle window.
                age = (self._clock.now() - order.recorded_at).total_seconds()
                wait_s = self._settings.recovery_settle_s - age
                if wait_s > 0:
                    self._clock.sleep(wait_s)
                found = self.broker.get_order_by_client_id(cid)
            if found is None:
                self._finish_unsent(order, OrderStatus.NOT_SENT,
                                    "gateway restarted before this order reached the broker; the broker has no order "
                                    "with this client_order_id")
                logger.warning("order %s (%s %s %g) was never sent; audited as not_sent", cid, order.intent.symbol,
                               order.intent.side.value, order.intent.qty)
                continue
            order.acknowledged = True
            answers = [self._order_event(order.intent, OrderStatus.RECOVERED, found,
                                         error=f"found at the broker after a restart (status {found.status})")]
            with correlation(client_order_id=cid):
                self._apply_result(order, found, answers, apply_to_book=False)
            logger.warning("order %s found at the broker after restart: %s, filled %g", cid, found.status,
                           found.filled_qty)

    # ---- audit rows ---------------------------------------------------------------------------
    def _order_event(self, intent: OrderIntent, status: OrderStatus, result: OrderResult | None, *,
                     error: str | None = None, http_status: int | None = None,
                     action_to_order_ms: float | None = None) -> AuditEvent:
        record = OrderRecord(
            status=status, client_order_id=intent.client_order_id, symbol=intent.symbol, side=intent.side,
            qty=intent.qty, bar_index=intent.bar_index, policy_version=intent.policy_version,
            broker_order_id=result.broker_order_id if result else None,
            broker_status=result.status if result else None,
            filled_qty=result.filled_qty if result else None,
            filled_avg_price=result.filled_avg_price if result else None,
            error=error, http_status=http_status, action_to_order_ms=action_to_order_ms,
        )
        return AuditEvent.of("order", record, occurred_at=self._clock.now(), principal=self._settings.principal)

    def intent_event(self, intent: OrderIntent, occurred_at: datetime) -> AuditEvent:
        record = OrderRecord.model_construct(status=OrderStatus.INTENT, **intent.__dict__)  # a validated intent
        return AuditEvent.of("order", record, occurred_at=occurred_at, principal=self._settings.principal)
