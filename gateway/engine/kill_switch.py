"""The kill switch: the trading state machine, the automatic triggers, safe mode and the alerts they
raise, under ONE lock, so a manual halt lands at once even while a timestep is routing.

Automatic triggers only tighten (`escalates`); loosening is an operator's decision. Every change is
committed with its state_change row and the kill-switch section of GatewayState in one transaction.
Routing workers ask `may_send()` before each order: once HALTED, only safe-mode closing orders go out.
"""

import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from contracts.audit import AuditEvent, DefensiveOverrideRecord, SafeModeRecord, TradingStateRecord
from contracts.orders import TradingState
from gateway.audit.store import AuditStore
from gateway.domain.flatten import FlattenPlan, flatten_slices
from gateway.domain.overlay import DefensiveOverride
from gateway.domain.performance import drawdown
from gateway.domain.trading_state import StateChange, TradingStateMachine, escalates
from gateway.domain.triggers import (
    DEPENDENCY_LOST,
    DependencyMonitor,
    LatencyMonitor,
    Trigger,
    compliance_breaches,
    compliance_trigger,
    drawdown_triggers,
    session_of,
)
from gateway.engine.alerts import AlertBook
from gateway.engine.clock import Clock
from gateway.engine.state import GatewayState
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

SAFE_MODE = "SAFE_MODE"
DEFENSIVE_OVERRIDE = "DEFENSIVE_OVERRIDE"
STATE_ALERTS = ("TRADING_REDUCING", "TRADING_HALTED")


class KillSwitch:
    def __init__(self, state: GatewayState, *, settings: GatewaySettings, audit: AuditStore,
                 metrics: GatewayMetrics, clock: Clock, alerts: AlertBook) -> None:
        self._state = state
        self._settings = settings
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        self.alerts = alerts
        self.lock = threading.RLock()
        ks = settings.risk.kill_switch
        self._machine = TradingStateMachine(state.trading_state)
        self._latency = LatencyMonitor(ks.latency.threshold_ms, ks.latency.consecutive_intervals,
                                       TradingState(ks.latency.action), streak=state.latency_streak)
        self._deps = DependencyMonitor(ks.dependencies.broker_failures, TradingState(ks.dependencies.action))

    # ---- reads --------------------------------------------------------------------------------
    @property
    def trading_state(self) -> TradingState:
        return self._machine.state

    @property
    def safe_mode(self) -> FlattenPlan | None:
        return self._state.safe_mode

    @property
    def defensive_override(self) -> DefensiveOverride | None:
        return self._state.defensive_override

    def may_send(self, *, closing: bool) -> bool:
        """Whether an order may go to the broker now: anything unless HALTED; safe-mode closing orders always."""
        return closing or self._machine.state != TradingState.HALTED

    def status(self) -> dict[str, Any]:
        with self.lock:
            marks = self._state.marks
            return {"peak_equity": marks.peak_equity, "session": marks.session,
                    "session_peak_equity": marks.session_peak, "latency_streak": self._latency.streak,
                    "broker_failures": self._deps.failures.get("broker", 0)}

    # ---- start --------------------------------------------------------------------------------
    def restored(self) -> None:
        """Re-raise what the restored state means: a halt or a safe mode outlives a restart."""
        with self.lock:
            self._metrics.set_trading_state(self._machine.state)
            plan = self._state.safe_mode
            if plan is not None:
                self.alerts.raise_(SAFE_MODE, "critical",
                                   f"safe mode since {plan.started_at.isoformat()}: {plan.reason}")
            if self._machine.state != TradingState.ACTIVE:
                self.alerts.raise_("TRADING_" + self._machine.state.value, "critical",
                                   f"trading state restored as {self._machine.state.value}")
            if self._state.defensive_override is not None:
                self._raise_override_alert(self._state.defensive_override)

    # ---- operator and trigger changes ----------------------------------------------------------
    def change(self, target: TradingState, *, principal: str, reason: str,
               trigger: str = "manual") -> StateChange | None:
        """Takes effect at once; moving to ACTIVE or REDUCING ends safe mode; resuming clears the alerts."""
        with self.lock:
            change = self._machine.change(target, principal=principal, reason=reason, at=self._clock.now(),
                                          trigger=trigger)
            if change is None:
                return None
            ended_safe_mode = self._state.safe_mode is not None and target != TradingState.HALTED
            if ended_safe_mode:
                self._state.safe_mode = None
            self._state.trading_state = change.current
            record = TradingStateRecord(previous=change.previous, current=change.current, principal=principal,
                                        reason=reason, trigger=trigger, safe_mode_ended=ended_safe_mode)
            self._audit.append(AuditEvent.of("state_change", record, occurred_at=change.occurred_at,
                                             principal=principal), state=self._state.kill_switch_section())
            self._metrics.set_trading_state(change.current)
            self._metrics.trading_state_changes.labels(trigger=trigger, state=change.current.value).inc()
            self.alerts.clear(*STATE_ALERTS)
            if change.current != TradingState.ACTIVE:
                self.alerts.raise_("TRADING_" + change.current.value, "critical",
                                   f"{change.current.value} since {change.occurred_at.isoformat()} by {principal} "
                                   f"({trigger}): {reason}")
            else:
                self.alerts.clear_all()  # the operator resumed: the breaches that led here are acknowledged
                if self._state.defensive_override is not None:  # a separate decision: it stands until cleared
                    self._raise_override_alert(self._state.defensive_override)
            if ended_safe_mode:
                self.alerts.clear(SAFE_MODE)
            logger.warning("trading state %s -> %s by %s (%s): %s", change.previous.value, change.current.value,
                           principal, trigger, reason)
            return change

    def start_safe_mode(self, positions: Mapping[str, float], *, principal: str, reason: str,
                        trigger: str = "manual", fraction: float | None = None) -> StateChange | None:
        """HALTED for new orders, and every position closed gradually, a slice per decision interval
        (`fraction` of each position per interval; default the configured one, 1.0 = unwind at the next)."""
        with self.lock:
            if fraction is None:
                fraction = self._settings.risk.kill_switch.safe_mode.flatten_fraction_per_interval
            plan = FlattenPlan(self._clock.now(), fraction, flatten_slices(positions, fraction), principal, reason)
            change = self.change(TradingState.HALTED, principal=principal, reason=reason, trigger=trigger)
            self._state.safe_mode = plan
            record = SafeModeRecord(trigger=trigger, principal=principal, reason=reason, started_at=plan.started_at,
                                    fraction=plan.fraction, slices=dict(plan.slices))
            self._audit.append(AuditEvent.of("state_change", record, occurred_at=plan.started_at, principal=principal),
                               state=self._state.kill_switch_section())
            self.alerts.raise_(SAFE_MODE, "critical", f"safe mode by {principal} ({trigger}): {reason}; closing "
                                                      f"{len(plan.slices)} positions, {fraction:.0%} per interval")
            logger.warning("safe mode started by %s (%s): %d positions, %.0f%% per interval", principal, trigger,
                           len(plan.slices), fraction * 100)
            return change

    def set_defensive_override(self, *, principal: str, reason: str, trigger: str = "manual",
                               max_position_size: float | None = None,
                               risk_scale: float | None = None) -> DefensiveOverride:
        """Force defensive mode under the master; caps default to the `defensive` preset and only ever tighten an
        override already in force (an automatic trigger setting it twice cannot loosen what an operator set)."""
        with self.lock:
            preset = self._settings.risk.directive_presets["defensive"]
            size = preset.max_position_size if max_position_size is None else max_position_size
            scale = preset.risk_scale if risk_scale is None else risk_scale
            current = self._state.defensive_override
            if current is not None:
                size, scale = min(size, current.max_position_size), min(scale, current.risk_scale)
            override = DefensiveOverride(principal, reason, self._clock.now(), size, scale, trigger)
            self._state.defensive_override = override
            record = DefensiveOverrideRecord(action="set", trigger=trigger, principal=principal, reason=reason,
                                             max_position_size=size, risk_scale=scale)
            self._audit.append(AuditEvent.of("state_change", record, occurred_at=override.since, principal=principal),
                               state=self._state.kill_switch_section())
            self._raise_override_alert(override)
            logger.warning("defensive override by %s (%s): max position %.3f, risk scale %.2f: %s", principal,
                           trigger, size, scale, reason)
            return override

    def clear_defensive_override(self, *, principal: str, reason: str) -> DefensiveOverride | None:
        """An operator's decision: the master's directives apply again. Returns the override cleared (None: none)."""
        with self.lock:
            current = self._state.defensive_override
            if current is None:
                return None
            self._state.defensive_override = None
            record = DefensiveOverrideRecord(action="clear", trigger="manual", principal=principal, reason=reason)
            self._audit.append(AuditEvent.of("state_change", record, occurred_at=self._clock.now(),
                                             principal=principal), state=self._state.kill_switch_section())
            self.alerts.clear(DEFENSIVE_OVERRIDE)
            logger.warning("defensive override cleared by %s: %s", principal, reason)
            return current

    def _raise_override_alert(self, override: DefensiveOverride) -> None:
        self.alerts.raise_(DEFENSIVE_OVERRIDE, "warning",
                           f"defensive override since {override.since.isoformat()} by {override.principal} "
                           f"({override.trigger}): max position {override.max_position_size:g}, risk scale "
                           f"{override.risk_scale:g}: {override.reason}")

    def apply(self, trigger: Trigger, positions: Mapping[str, float] | None = None) -> None:
        """Act on a breach: alert, then tighten (safe mode needs the book's `positions`)."""
        with self.lock:
            self.alerts.raise_(trigger.code, "critical" if trigger.target == TradingState.HALTED else "warning",
                               trigger.reason)
            principal = self._settings.principal
            if trigger.safe_mode:
                if self._state.safe_mode is None:
                    self.start_safe_mode(positions or {}, principal=principal, reason=trigger.reason,
                                         trigger=trigger.name)
                return
            if escalates(self._machine.state, trigger.target):
                self.change(trigger.target, principal=principal, reason=trigger.reason, trigger=trigger.name)

    # ---- signals ------------------------------------------------------------------------------
    def observe_timestep(self, *, equity: float, timestep: datetime, latency_ms: float,
                         positions: Mapping[str, float]) -> None:
        """Drawdown (from the peak and intraday) on the marked book, and the decision latency streak."""
        with self.lock:
            session = session_of(timestep, self._settings.risk.market_hours.timezone)
            marks = self._state.marks
            triggers = drawdown_triggers(marks, equity, session, self._settings.risk.kill_switch)
            self._metrics.set_drawdowns(from_peak=drawdown(equity, marks.peak_equity),
                                        intraday=drawdown(equity, marks.session_peak))
            latency = self._latency.observe(latency_ms)
            if latency is not None:
                triggers.append(latency)
            self._state.latency_streak = self._latency.streak
            self._audit.append_many([], state=self._state.kill_switch_section())
            for trigger in triggers:
                self.apply(trigger, positions)

    def check_compliance(self, positions: Mapping[str, float], marks: Mapping[str, float], equity: float) -> None:
        trigger = compliance_trigger(compliance_breaches(positions, marks, equity, self._settings.risk),
                                     self._settings.risk)
        if trigger is not None:
            self.apply(trigger, positions)

    def book_is_flat(self) -> None:
        with self.lock:
            if self._state.safe_mode is not None:
                self.alerts.raise_(SAFE_MODE, "critical", "safe mode: book is flat; trading stays HALTED until resumed")

    def broker_ok(self) -> None:
        with self.lock:
            self._deps.success("broker")

    def broker_failure(self, detail: str) -> None:
        """A broker call found it unreachable: counted; enough in a row trip the dependency trigger."""
        with self.lock:
            trigger = self._deps.failure("broker", detail)
            if trigger is not None:
                self.apply(trigger)
            else:
                self.alerts.raise_(DEPENDENCY_LOST, "warning", f"broker: {detail}")
