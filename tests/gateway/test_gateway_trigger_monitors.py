"""The pure trigger monitors and the safe-mode slice schedule."""

import math
from datetime import datetime, timezone

import pytest

from contracts.config import KillSwitchConfig, RiskOverlaysConfig, ShortSaleRule
from contracts.orders import TradingState
from gateway.domain.flatten import flatten_slices
from gateway.domain.triggers import (
    INTRADAY_DRAWDOWN,
    MAX_DRAWDOWN,
    DependencyMonitor,
    DrawdownMarks,
    LatencyMonitor,
    compliance_breaches,
    drawdown_triggers,
    session_of,
)

CFG = KillSwitchConfig(max_drawdown=0.30, intraday_drawdown=0.15)


def test_drawdown_when_below_both_limits_then_no_trigger_and_peaks_tracked() -> None:
    marks = DrawdownMarks()
    assert drawdown_triggers(marks, 100.0, "2024-01-02", CFG) == []
    assert drawdown_triggers(marks, 120.0, "2024-01-02", CFG) == []
    assert drawdown_triggers(marks, 110.0, "2024-01-02", CFG) == []
    assert (marks.peak_equity, marks.session_peak) == (120.0, 120.0)


def test_drawdown_when_new_session_then_session_peak_restarts() -> None:
    marks = DrawdownMarks()
    drawdown_triggers(marks, 120.0, "2024-01-02", CFG)
    # -16% from the previous session's peak, but the new session starts at this level: no intraday breach.
    assert drawdown_triggers(marks, 100.0, "2024-01-03", CFG) == []
    found = drawdown_triggers(marks, 84.5, "2024-01-03", CFG)  # -15.5% intraday, -29.6% from peak
    assert [t.code for t in found] == [INTRADAY_DRAWDOWN]
    assert found[0].target == TradingState.REDUCING and not found[0].safe_mode


def test_drawdown_when_thirty_percent_from_peak_then_safe_mode_halt() -> None:
    marks = DrawdownMarks(peak_equity=100.0, session="2024-01-01", session_peak=100.0)
    found = drawdown_triggers(marks, 70.0, "2024-01-05", CFG)
    assert [t.code for t in found] == [MAX_DRAWDOWN]
    assert found[0].target == TradingState.HALTED and found[0].safe_mode
    assert "30.0%" in found[0].reason


def test_drawdown_marks_when_round_tripped_through_dict_then_equal() -> None:
    marks = DrawdownMarks(123.0, "2024-01-02", 120.0)
    assert DrawdownMarks.from_dict(marks.as_dict()) == marks
    assert DrawdownMarks.from_dict(None) == DrawdownMarks()


def test_session_when_utc_evening_then_new_york_date() -> None:
    assert session_of(datetime(2024, 1, 3, 2, 0, tzinfo=timezone.utc), "America/New_York") == "2024-01-02"


def test_latency_when_streak_exceeds_limit_then_trigger_and_fast_interval_resets() -> None:
    monitor = LatencyMonitor(100.0, 3, TradingState.REDUCING)
    assert [monitor.observe(500.0) for _ in range(3)] == [None, None, None]
    assert monitor.observe(50.0) is None and monitor.streak == 0
    for _ in range(3):
        monitor.observe(500.0)
    trigger = monitor.observe(500.0)
    assert trigger is not None and trigger.target == TradingState.REDUCING and monitor.streak == 4


def test_dependency_when_failures_reach_limit_then_trigger_and_success_resets() -> None:
    monitor = DependencyMonitor(2, TradingState.HALTED)
    assert monitor.failure("broker", "refused") is None
    monitor.success("broker")
    assert monitor.failure("broker", "refused") is None
    trigger = monitor.failure("broker", "refused")
    assert trigger is not None and trigger.target == TradingState.HALTED and "broker" in trigger.reason


def test_compliance_when_book_breaks_rules_then_each_breach_named() -> None:
    risk = RiskOverlaysConfig(restricted_symbols=("BAD",), short_sale=ShortSaleRule(allowed=True, not_shortable=("HTB",)))
    positions = {"BAD": 1.0, "HTB": -5.0, "BIG": 100.0, "OK": 1.0}
    marks = {"BAD": 10.0, "HTB": 10.0, "BIG": 200.0, "OK": 10.0}
    found = compliance_breaches(positions, marks, 100_000.0, risk)
    text = " | ".join(found)
    assert "restricted symbol BAD" in text
    assert "HTB, which may not be shorted" in text
    assert "BIG is 20.0% of equity" in text  # cap 10% + 50% tolerance = 15%
    assert not any("OK" in line for line in found)


def test_compliance_when_within_limits_then_no_breach() -> None:
    assert compliance_breaches({"A": 50.0}, {"A": 100.0}, 100_000.0, RiskOverlaysConfig()) == []


def test_compliance_when_gross_far_above_limit_then_breach() -> None:
    risk = RiskOverlaysConfig(per_symbol_cap=1.0)
    found = compliance_breaches({"A": 1000.0, "B": 1000.0}, {"A": 100.0, "B": 100.0}, 100_000.0, risk)
    assert any("gross leverage 2.00x" in line for line in found)


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25, 0.1])
def test_flatten_slices_when_applied_repeatedly_then_flat_in_ceil_inverse_intervals(fraction: float) -> None:
    positions = {"A": 1001.0, "B": -37.0, "C": 1.0}
    slices = flatten_slices(positions, fraction)
    left = dict(positions)
    steps = 0
    while any(left.values()):
        steps += 1
        for sym, qty in left.items():
            left[sym] = math.copysign(max(0.0, abs(qty) - slices[sym]), qty) if qty else 0.0
    assert steps <= math.ceil(1 / fraction)
    assert all(slices[s] >= 1.0 for s in positions)
