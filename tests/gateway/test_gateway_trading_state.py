import pytest
from gateway_builders import T0

from contracts.orders import TradingState
from gateway.domain.trading_state import TradingStateMachine, escalates
from gateway.errors import TradingStateError


def test_change_when_kill_switch_then_event_names_principal_reason_and_states() -> None:
    machine = TradingStateMachine()
    event = machine.change(TradingState.HALTED, principal="alice", reason="feed outage", at=T0)
    assert machine.state == TradingState.HALTED
    assert event is not None
    assert event.payload() == {"previous": "ACTIVE", "current": "HALTED", "principal": "alice",
                               "reason": "feed outage", "trigger": "manual"}


def test_change_when_automatic_trigger_then_event_names_the_trigger() -> None:
    machine = TradingStateMachine()
    event = machine.change(TradingState.REDUCING, principal="gateway", reason="slow", at=T0, trigger="latency")
    assert event is not None and event.payload()["trigger"] == "latency"


def test_escalates_when_tightening_then_true_and_loosening_false() -> None:
    assert escalates(TradingState.ACTIVE, TradingState.REDUCING)
    assert escalates(TradingState.REDUCING, TradingState.HALTED)
    assert not escalates(TradingState.HALTED, TradingState.REDUCING)
    assert not escalates(TradingState.REDUCING, TradingState.REDUCING)


def test_change_when_already_in_target_state_then_no_event() -> None:
    machine = TradingStateMachine(TradingState.REDUCING)
    assert machine.change(TradingState.REDUCING, principal="bob", reason="again", at=T0) is None


@pytest.mark.parametrize(("principal", "reason", "missing"), [(" ", "why", "principal"), ("alice", "", "reason")])
def test_change_when_principal_or_reason_blank_then_error_names_it(principal: str, reason: str, missing: str) -> None:
    machine = TradingStateMachine()
    with pytest.raises(TradingStateError, match=missing):
        machine.change(TradingState.HALTED, principal=principal, reason=reason, at=T0)
    assert machine.state == TradingState.ACTIVE
