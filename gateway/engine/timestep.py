"""One timestep, as the order flow reads:

  validate -> (book lock) refuse a replayed bar -> mark the book -> live directive -> plan (overlay,
  guardrails, safe-mode slices) -> commit decisions, risk decisions and intents with the last-bar and
  ledger sections of GatewayState in ONE transaction -> hand the intents to execution -> answer.

The answer does not wait for the broker: routing, fills and the kill-switch triggers that read the
book afterwards (drawdown, latency, compliance) run on execution's coordinator. A caller that needs
the fills waits on the timestep's RoutingTicket (`settled`).
"""

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contracts.audit import AuditEvent, DecisionRecord, RiskDecisionRecord
from contracts.decisions import MasterDirective, TimestepDecisions
from contracts.logs import correlation
from contracts.orders import OrderStatus, TradingState
from gateway.audit.store import AuditStore
from gateway.directives import DirectiveBook
from gateway.domain.planner import TimestepPlan, plan_timestep
from gateway.domain.triggers import Trigger
from gateway.engine.clock import Clock
from gateway.engine.execution import Book, Execution, OrderOutcome, RoutingTicket, reduces_risk
from gateway.engine.kill_switch import KillSwitch
from gateway.engine.latency import LatencyRecorder
from gateway.engine.market_hours import MarketHours
from gateway.engine.state import GatewayState
from gateway.errors import InvalidDecisionsError, StaleTimestepError
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

TICKETS_KEPT = 512


@dataclass(frozen=True)
class TimestepOutcome:
    batch: TimestepDecisions
    timestep_id: str
    trading_state: TradingState
    directive: MasterDirective | None
    plan: TimestepPlan
    orders: tuple[OrderOutcome, ...]
    portfolio: dict[str, Any]
    settled: bool


def timestep_id(batch: TimestepDecisions) -> str:
    """Names one timestep of one set of symbols (two services may send the same bar for different symbols)."""
    symbols = ",".join(sorted(d.symbol for d in batch.decisions))
    return f"{batch.bar_index}-{hashlib.sha256(symbols.encode()).hexdigest()[:12]}"


def validate(batch: TimestepDecisions) -> None:
    seen: set[str] = set()
    duplicates: list[str] = []
    for d in batch.decisions:
        if d.symbol in seen and d.symbol not in duplicates:
            duplicates.append(d.symbol)
        seen.add(d.symbol)
    if duplicates:
        raise InvalidDecisionsError([f"decisions: symbol {s!r} appears more than once in one timestep"
                                     for s in duplicates])


class Timesteps:
    def __init__(self, state: GatewayState, book: Book, *, settings: GatewaySettings, audit: AuditStore,
                 metrics: GatewayMetrics, clock: Clock, kill_switch: KillSwitch, execution: Execution,
                 directives: DirectiveBook, market_hours: MarketHours, latency: LatencyRecorder,
                 portfolio_summary: Callable[[], dict[str, Any]]) -> None:
        self._state = state
        self._book = book
        self._settings = settings
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        self._ks = kill_switch
        self._execution = execution
        self._directives = directives
        self._market_hours = market_hours
        self._latency = latency
        self._portfolio_summary = portfolio_summary
        self._tickets: OrderedDict[str, RoutingTicket] = OrderedDict()
        self._tickets_lock = threading.Lock()

    def accept(self, batch: TimestepDecisions) -> tuple[TimestepOutcome, RoutingTicket]:
        # Every line logged for this timestep (here and, via the copied context, while its orders route) carries both.
        with correlation(bar=batch.timestep, timestep=timestep_id(batch)):
            return self._accept(batch)

    def _accept(self, batch: TimestepDecisions) -> tuple[TimestepOutcome, RoutingTicket]:
        validate(batch)
        received = self._clock.monotonic()
        book = self._book
        with book.lock:
            self._check_not_replayed(batch)
            self._apply_data_triggers(batch)
            book.portfolio.mark({d.symbol: d.price for d in batch.decisions})
            directive = self._directives.current(batch.timestep)
            trading_state = self._ks.trading_state
            safe_mode = self._ks.safe_mode if trading_state == TradingState.HALTED else None
            budget = self._settings.risk.order_rate.max_orders - self._execution.rate.count()
            plan = plan_timestep(
                batch, directive=directive, portfolio=book.portfolio, trading_state=trading_state,
                risk=self._settings.risk, max_directive_ttl_seconds=self._settings.directive_ttl_seconds,
                pending_symbols=self._execution.pending_symbols(), market_open=self._market_hours.is_open(),
                order_budget=max(0, budget), flatten=safe_mode.slices if safe_mode is not None else None,
                override=self._ks.defensive_override,
            )
            for d in batch.decisions:
                self._state.last_bar[d.symbol] = batch.bar_index
            self._execution.register(plan.intents)
            self._audit.append_many(self._plan_events(batch, plan, trading_state), state={
                **self._state.last_bar_section(),
                **self._state.inflight_section(*(i.client_order_id for i in plan.intents))})
            self._execution.mark_durable(plan.intents)
            positions = {s: p.qty for s, p in book.portfolio.positions().items()}
            reducing = frozenset(i.client_order_id for i in plan.intents
                                 if reduces_risk(i, positions.get(i.symbol, 0.0)))
            ticket = RoutingTicket(timestep_id(batch), plan.intents, received)
            ticket.outcomes.update({i.client_order_id: OrderOutcome(i, OrderStatus.INTENT) for i in plan.intents})
            latency_ms = batch.decision_latency_ms
            ticket.context = {"timestep": batch.timestep, "latency_ms": latency_ms,
                              "benchmark_price": self._benchmark_price(batch)}
            self._execution.dispatch(ticket, frozenset(i.client_order_id for i in plan.flatten), reducing)
            summary = self._portfolio_summary()
        self._remember(ticket)
        self._latency.observe("decision", self._clock.monotonic() - received)
        self._count(batch, plan)
        outcome = TimestepOutcome(batch, ticket.timestep_id, trading_state, directive, plan,
                                  tuple(ticket.outcomes[i.client_order_id] for i in plan.intents), summary, False)
        return outcome, ticket

    def after_routing(self, ticket: RoutingTicket) -> None:
        """On the coordinator, once a timestep's orders have their answers: the triggers that read the book."""
        context = ticket.context
        if context is None:
            return
        book = self._book
        with book.lock:
            positions = {s: p.qty for s, p in book.portfolio.positions().items()}
            marks = {s: book.portfolio.mark_of(s) for s in positions}
            equity = book.portfolio.equity
        latency_ms = context["latency_ms"]
        if latency_ms is None:
            latency_ms = (self._clock.monotonic() - ticket.received_at) * 1000
        self._ks.observe_timestep(equity=equity, timestep=context["timestep"], latency_ms=latency_ms,
                                  positions=positions)
        self._ks.check_compliance(positions, marks, equity)
        if not any(positions.values()):
            self._ks.book_is_flat()
        # The performance, cost and risk gauges (after the triggers: they only report).
        self._execution.performance.settled(timestep=context["timestep"], equity=equity,
                                            benchmark_price=context.get("benchmark_price"), positions=positions,
                                            marks=marks)

    def _benchmark_price(self, batch: TimestepDecisions) -> float | None:
        """The benchmark's price at this bar: sent with the timestep, or the benchmark symbol's decision price."""
        if batch.benchmark_price is not None:
            return batch.benchmark_price
        symbol = self._settings.benchmark_symbol
        return next((d.price for d in batch.decisions if d.symbol == symbol), None)

    def ticket(self, timestep_id: str) -> RoutingTicket | None:
        with self._tickets_lock:
            return self._tickets.get(timestep_id)

    def _remember(self, ticket: RoutingTicket) -> None:
        with self._tickets_lock:
            self._tickets[ticket.timestep_id] = ticket
            while len(self._tickets) > TICKETS_KEPT:
                self._tickets.popitem(last=False)

    def _apply_data_triggers(self, batch: TimestepDecisions) -> None:
        """Data-safety triggers the trading service saw on this bar (FEATURE_DRIFT): HALTED before the timestep
        is planned, so none of its orders is sent. Only ever tightens; an operator resumes."""
        for seen in batch.triggers:
            self._ks.apply(Trigger(code=seen.code, target=TradingState.HALTED,
                                   reason=f"bar {batch.bar_index} ({batch.timestep.isoformat()}): {seen.reason}"))

    def _check_not_replayed(self, batch: TimestepDecisions) -> None:
        last = self._state.last_bar
        stale = [f"symbol {d.symbol!r} was already decided at bar_index {last[d.symbol]} "
                 f"(got bar_index {batch.bar_index})"
                 for d in batch.decisions if last.get(d.symbol, -1) >= batch.bar_index]
        if stale:
            raise StaleTimestepError(stale)

    def _plan_events(self, batch: TimestepDecisions, plan: TimestepPlan, state: TradingState) -> list[AuditEvent]:
        now = self._clock.now()
        who = self._settings.principal
        events: list[AuditEvent] = []
        # The inputs were validated (request schema, planner): the records are built without validating again.
        context = {"bar_index": batch.bar_index, "timestep": batch.timestep}
        for d in batch.decisions:
            decision = DecisionRecord.model_construct(
                **d.__dict__, **context, observation_checksum=batch.observation_checksum,
                decision_latency_ms=batch.decision_latency_ms)
            decision.__dict__["policy_version"] = d.policy_version or batch.policy_version
            events.append(AuditEvent.of("decision", decision, occurred_at=now, principal=who))
        overlay = plan.overlay.as_dict()
        for r in plan.risk:
            risk = RiskDecisionRecord.model_construct(**r.__dict__, **context, policy_version=batch.policy_version,
                                                      trading_state=state, overlay=overlay)
            events.append(AuditEvent.of("risk_decision", risk, occurred_at=now, principal=who))
        events.extend(self._execution.intent_event(intent, now) for intent in plan.intents)
        return events

    def _count(self, batch: TimestepDecisions, plan: TimestepPlan) -> None:
        self._metrics.timesteps.inc()
        self._metrics.decisions.inc(len(batch.decisions))
        if plan.directive_fallback:
            self._metrics.directive_fallbacks.inc()
        for decision in plan.risk:
            if decision.reason_code is None:
                continue
            counter = self._metrics.risk_adjustments if decision.approved else self._metrics.risk_denials
            counter.labels(reason=decision.reason_code).inc()
