"""The kill switch: ACTIVE | REDUCING | HALTED. Every change is an event naming who and why."""

from dataclasses import dataclass
from datetime import datetime

from contracts.orders import TradingState
from gateway.errors import TradingStateError


@dataclass(frozen=True)
class StateChange:
    previous: TradingState
    current: TradingState
    principal: str
    reason: str
    occurred_at: datetime
    trigger: str = "manual"  # manual | max_drawdown | intraday_drawdown | latency | compliance | dependency

    def payload(self) -> dict[str, str]:
        return {
            "previous": self.previous.value,
            "current": self.current.value,
            "principal": self.principal,
            "reason": self.reason,
            "trigger": self.trigger,
        }


SEVERITY: dict[TradingState, int] = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


def escalates(current: TradingState, target: TradingState) -> bool:
    """Automatic triggers only ever tighten the state; loosening it is an operator's decision."""
    return SEVERITY[target] > SEVERITY[current]


class TradingStateMachine:
    """Any state may move to any other; an operator's word is the only input it accepts.

    Not thread-safe by itself: the gateway serialises changes with its timestep lock, so a
    kill switch never lands half-way through planning a timestep.
    """

    def __init__(self, initial: TradingState = TradingState.ACTIVE) -> None:
        self._state = initial

    @property
    def state(self) -> TradingState:
        return self._state

    def change(
        self, target: TradingState, *, principal: str, reason: str, at: datetime, trigger: str = "manual"
    ) -> StateChange | None:
        """Move to `target`; returns the change, or None when already there (nothing to audit)."""
        if not principal.strip():
            raise TradingStateError("a trading state change needs a principal (who asked for it)")
        if not reason.strip():
            raise TradingStateError("a trading state change needs a reason")
        if target == self._state:
            return None
        event = StateChange(self._state, TradingState(target), principal, reason, at, trigger)
        self._state = TradingState(target)
        return event
