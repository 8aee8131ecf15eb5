"""The gateway without HTTP: a facade over the engine's parts (gateway/engine/).

  GatewayState     everything restored at start, committed with the audit rows that justify it
  KillSwitch       trading state, triggers, safe mode, alerts (one lock)
  Execution        the in-flight ledger: route concurrently (risk-reducing first), track, fill, recover
  Reconciliation   adopt the broker's book, audit mismatches
  Timesteps        validate -> plan -> commit intents -> hand to execution -> answer
  Queries          read-only views

A timestep is answered once overlay and risk checks are done and its intents are durable; orders
are routed afterwards and fills update the book as they arrive. `handle_timestep(settle=True)` (the
default for Python callers) waits for the timestep's orders to settle; the HTTP API answers at
acceptance unless asked to wait.

On start: restore GatewayState; look up every order left in flight (found -> its answer and fills
are audited; absent once the settle window has passed -> audited as not sent); rebuild the book
from the broker.
"""

import hashlib
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

from contracts.audit import AuditEvent, ConfigChangeRecord
from contracts.decisions import MasterDirective, TimestepDecisions
from contracts.orders import TradingState
from contracts.urls import redact_url
from gateway.audit.store import AuditStore
from gateway.brokers.base import Broker
from gateway.directives import DirectiveBook
from gateway.domain.flatten import FlattenPlan
from gateway.domain.overlay import DefensiveOverride
from gateway.domain.trading_state import StateChange
from gateway.engine.alerts import AlertBook
from gateway.engine.clock import Clock, SystemClock
from gateway.engine.execution import Book, Execution, RoutingTicket
from gateway.engine.kill_switch import SAFE_MODE, KillSwitch
from gateway.engine.latency import LatencyRecorder
from gateway.engine.market_hours import MarketHours
from gateway.engine.queries import Queries
from gateway.engine.reconciliation import RECONCILE_MISMATCH, Reconciliation
from gateway.engine.state import LEGACY_KEYS, GatewayState
from gateway.engine.timestep import Timesteps, TimestepOutcome, validate
from gateway.errors import BrokerUnavailableError
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

# Raised while the gateway's own subscription to the Redis directive bus is down (settings.directive_bus_url).
DIRECTIVE_BUS_DOWN = "DIRECTIVE_BUS_DOWN"
__all__ = ["DIRECTIVE_BUS_DOWN", "RECONCILE_MISMATCH", "SAFE_MODE", "GatewayService", "TimestepOutcome"]


class GatewayService:
    def __init__(self, settings: GatewaySettings, *, broker: Broker, audit: AuditStore,
                 metrics: GatewayMetrics | None = None, clock: Clock | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self.audit = audit
        self.metrics = metrics or GatewayMetrics()
        self.clock: Clock = clock or SystemClock()
        audit.now = self.clock.now  # the store's own timestamps (state updates, checkpoints) on the same clock
        self.directives = DirectiveBook(settings.directive_ttl_seconds)
        self.latency = LatencyRecorder(self.metrics)
        self._alerts = AlertBook(self.metrics, self.clock.now)
        self._book = Book()
        self._state = GatewayState()
        self._started = False
        self._stopped = False
        # The Redis directive subscription's health and the last propagation latency (None: no bus configured).
        self._directive_bus: dict[str, Any] | None = None
        self._wire(self._state)

    def _wire(self, state: GatewayState) -> None:
        """Build the parts around one GatewayState (again after it is restored at start)."""
        common = {"settings": self.settings, "audit": self.audit, "metrics": self.metrics, "clock": self.clock}
        self._state = state
        self.kill_switch = KillSwitch(state, alerts=self._alerts, **common)
        self.execution = Execution(state, self._book, broker=self.broker, kill_switch=self.kill_switch,
                                   latency=self.latency, on_settled=self._after_routing, **common)
        self.reconciliation = Reconciliation(state, self._book, broker=self.broker, kill_switch=self.kill_switch,
                                             alerts=self._alerts, **common)
        self.market_hours = MarketHours(self.settings, self.broker, self.clock, self.kill_switch.broker_failure)
        self.queries = Queries(state, self._book, settings=self.settings, kill_switch=self.kill_switch,
                               execution=self.execution, reconciliation=self.reconciliation,
                               directive_bus=lambda: self._directive_bus)
        self.timesteps = Timesteps(state, self._book, kill_switch=self.kill_switch, execution=self.execution,
                                   directives=self.directives, market_hours=self.market_hours, latency=self.latency,
                                   portfolio_summary=self.queries.portfolio_summary, **common)

    def _after_routing(self, ticket: RoutingTicket) -> None:
        self.timesteps.after_routing(ticket)
        self._publish_portfolio()

    def _publish_portfolio(self) -> None:
        summary = self.queries.portfolio_summary()
        self.metrics.set_portfolio(summary["equity"], summary["gross_exposure"], summary["drawdown"])

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Restore GatewayState, recover in-flight orders, rebuild the book from the broker."""
        stored = self.audit.read_state()
        state, legacy = GatewayState.restore(stored, self._legacy_trading_state)
        self.execution.close()
        self._wire(state)
        if legacy:
            # Written before GatewayState had sections: rewrite it once as sections, drop the old keys.
            self.audit.append_many([], state={**state.all_sections(), **{k: None for k in LEGACY_KEYS}})
            logger.warning("gateway state converted to sections (%d symbols, %d orders in flight)",
                           len(state.last_bar), len(state.inflight))
        elif "gateway_state/kill_switch" not in stored:
            self.audit.append_many([], state=state.kill_switch_section())
        logger.info("gateway state restored: %s, %d symbols decided, %d orders in flight, peak equity %.2f",
                    state.trading_state.value, len(state.last_bar), len(state.inflight), state.marks.peak_equity)
        self.kill_switch.restored()
        self._audit_config_change()
        self.execution.recover()
        self.reconciliation.run(compare=False)
        self._publish_portfolio()
        self._started = True

    def stop(self) -> None:
        """Stop taking work; orders already handed to execution finish; late directives are dropped."""
        self._started = False
        self._stopped = True
        self.execution.close()

    @property
    def started(self) -> bool:
        return self._started

    def _legacy_trading_state(self) -> TradingState | None:
        """A trail from before GatewayState: the last audited trading-state change."""
        before: int | None = None
        while True:
            page = self.audit.list(kind="state_change", limit=200, before_seq=before)
            for event in page:
                if event["payload"].get("event") == "trading_state":
                    return TradingState(event["payload"]["current"])
            if len(page) < 200:
                return None
            before = page[-1]["seq"]

    def _audit_config_change(self) -> None:
        text = self.settings.risk.model_dump_json()
        digest = hashlib.sha256(text.encode()).hexdigest()
        previous = self.audit.read_state_key("config_hash")
        if previous == digest:
            return
        record = ConfigChangeRecord(config="risk_overlays", previous_hash=previous, hash=digest,
                                    values=self.settings.risk.model_dump(mode="json"))
        self.audit.append(AuditEvent.of("config_change", record, occurred_at=self.clock.now(),
                                        principal=self.settings.principal), state={"config_hash": digest})
        logger.info("risk configuration %s recorded in the audit trail (was %s)", digest[:12], (previous or "none")[:12])

    # ---- timesteps ----------------------------------------------------------------------------
    validate = staticmethod(validate)

    def handle_timestep(self, batch: TimestepDecisions, *, settle: bool = True) -> TimestepOutcome:
        """Accept a timestep (overlay, risk, intents durable); with `settle`, also wait for its orders' answers."""
        outcome, ticket = self.timesteps.accept(batch)
        if not settle:
            return outcome
        return self._settled(outcome, ticket, self.settings.settle_timeout_s)

    def timestep(self, timestep_id: str, *, wait_s: float = 0.0) -> dict[str, Any] | None:
        """Where a recent timestep's orders stand (waiting up to `wait_s` for them to settle); None if unknown."""
        ticket = self.timesteps.ticket(timestep_id)
        if ticket is None:
            return None
        settled = ticket.wait(wait_s)
        return {"timestep_id": timestep_id, "settled": settled,
                "orders": [o.as_dict() for o in ticket.ordered_outcomes()],
                "trading_state": self.trading_state.value, "portfolio": self.portfolio_summary()}

    def _settled(self, outcome: TimestepOutcome, ticket: RoutingTicket, timeout_s: float) -> TimestepOutcome:
        settled = ticket.wait(timeout_s)
        if ticket.errors:
            raise ticket.errors[0]
        return replace(outcome, orders=ticket.ordered_outcomes(), portfolio=self.portfolio_summary(),
                       trading_state=self.trading_state, settled=settled)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no order is being routed (tests, shutdown, reconciliation)."""
        with self._book.lock:
            return self._book.idle.wait_for(lambda: self._book.routing == 0, timeout=timeout_s)

    def market_open(self) -> bool:
        return self.market_hours.is_open()

    # ---- reconciliation -----------------------------------------------------------------------
    def reconcile(self, *, requested_by: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Replace the book with the broker's account and positions (the broker is the truth); audit what differed."""
        report = self.reconciliation.run(compare=self._started, requested_by=requested_by, reason=reason)
        self._publish_portfolio()
        return report

    def reconcile_now(self, *, principal: str, reason: str = "periodic") -> dict[str, Any]:
        """Refresh open orders, rebuild the book from the broker, and check compliance on the result."""
        logger.info("reconciliation requested by %s: %s", principal, reason)
        try:
            self.execution.refresh_open_orders()
            report = self.reconcile(requested_by=principal, reason=reason)
        except BrokerUnavailableError as exc:
            self.kill_switch.broker_failure(str(exc))
            raise
        with self._book.lock:
            book = self._book.portfolio
            positions = {s: p.qty for s, p in book.positions().items()}
            marks = {s: book.mark_of(s) for s in positions}
            equity = book.equity
        self.kill_switch.check_compliance(positions, marks, equity)
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
        self.audit.append(AuditEvent.of("directive", directive, occurred_at=self.clock.now(),
                                        principal=self.settings.principal))
        self.directives.add(directive)
        self.metrics.directives.labels(mode=directive.mode).inc()
        logger.info("directive %s (%s) issued %s, ttl %.0fs", directive.directive_id, directive.mode,
                    directive.issued_at.isoformat(), directive.ttl_seconds)

    def receive_published_directive(self, directive: MasterDirective, published_at: datetime | None) -> None:
        """Callback for the Redis directive subscription: apply it, then record the propagation latency
        (publish time, wall clock -> in the DirectiveBook) when the publisher stamped it."""
        if self._stopped:
            logger.warning("gateway stopped; directive %s dropped", directive.directive_id)
            return
        self.receive_directive(directive)
        applied = self.clock.now()
        seconds: float | None = None
        if published_at is not None:
            stamped = published_at if published_at.tzinfo is not None else published_at.replace(tzinfo=applied.tzinfo)
            seconds = max(0.0, (applied - stamped).total_seconds())
            self.latency.observe("directive", seconds)
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
        bus = self._directive_bus
        if bus is not None:
            bus.update(connected=True, since=self.clock.now().isoformat())
        self._alerts.clear(DIRECTIVE_BUS_DOWN)

    def directive_bus_down(self, reason: str) -> None:
        """Redis unreachable: alert. Directives already received stay live until their TTL (market time);
        after that the missing-directive fallback (defensive) applies."""
        bus = self._directive_bus
        if bus is not None:
            if bus["connected"] or bus["since"] is None:
                bus["since"] = self.clock.now().isoformat()
            bus.update(connected=False, last_error=reason)
        where = f"{bus['url']} channel {bus['channel']}" if bus is not None else "directive bus"
        self._alerts.raise_(DIRECTIVE_BUS_DOWN, "warning", f"{where} unreachable: {reason}; directives past "
                                                           "their TTL fall back to the defensive preset")

    # ---- trading state -----------------------------------------------------------------------
    @property
    def trading_state(self) -> TradingState:
        return self.kill_switch.trading_state

    @property
    def safe_mode(self) -> FlattenPlan | None:
        return self.kill_switch.safe_mode

    def change_state(self, target: TradingState, *, principal: str, reason: str,
                     trigger: str = "manual") -> StateChange | None:
        """Takes effect immediately: orders of a timestep still routing are not sent once HALTED (audited
        as not_sent). Moving to ACTIVE or REDUCING ends safe mode."""
        return self.kill_switch.change(target, principal=principal, reason=reason, trigger=trigger)

    def flatten(self, *, principal: str, reason: str, trigger: str = "manual",
                fraction: float | None = None) -> StateChange | None:
        """Safe mode: HALTED for new orders, and every position closed gradually, a slice per interval
        (`fraction` per interval; None = the configured one; 1.0 unwinds at the next interval)."""
        return self.kill_switch.start_safe_mode(self._book.positions(), principal=principal, reason=reason,
                                                trigger=trigger, fraction=fraction)

    def set_defensive_override(self, *, principal: str, reason: str, trigger: str = "manual",
                               max_position_size: float | None = None,
                               risk_scale: float | None = None) -> DefensiveOverride:
        """Defensive mode under the master from the next timestep, until an operator clears it."""
        with self._book.lock:  # never half-way through planning a timestep
            return self.kill_switch.set_defensive_override(principal=principal, reason=reason, trigger=trigger,
                                                           max_position_size=max_position_size,
                                                           risk_scale=risk_scale)

    def clear_defensive_override(self, *, principal: str, reason: str) -> DefensiveOverride | None:
        with self._book.lock:
            return self.kill_switch.clear_defensive_override(principal=principal, reason=reason)

    # ---- reads -------------------------------------------------------------------------------
    def alerts(self) -> list[dict[str, Any]]:
        return self._alerts.active()

    def portfolio_summary(self) -> dict[str, Any]:
        return self.queries.portfolio_summary()

    def exposure_by_sector(self) -> dict[str, Any]:
        return self.queries.exposure_by_sector()

    def status(self) -> dict[str, Any]:
        return self.queries.status()

    def inflight_order_ids(self) -> list[str]:
        """Orders between intent and final answer (the ledger GatewayState persists)."""
        return sorted(self._state.inflight)

    def latency_summary(self, last: int | None = None) -> dict[str, Any]:
        return self.latency.summary(last)
