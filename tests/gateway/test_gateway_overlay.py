from datetime import timedelta

import pytest
from gateway_builders import T0, directive

from contracts.config import RiskOverlaysConfig
from gateway.domain.overlay import apply_overlay, directive_is_live, reduce_only, resolve_overlay

RISK = RiskOverlaysConfig()


def test_resolve_overlay_when_directive_live_then_its_parameters_apply() -> None:
    overlay = resolve_overlay(directive("cautious", max_position_size=0.05, risk_scale=0.6), RISK, at=T0)
    assert not overlay.fallback
    assert overlay.directive_id == "d-1"
    assert overlay.size(RISK.per_symbol_cap) == pytest.approx(0.05 * 0.6)


def test_apply_overlay_when_normal_then_level_times_min_cap_and_size_times_scale() -> None:
    overlay = resolve_overlay(directive(max_position_size=0.3, risk_scale=0.5), RISK, at=T0)
    outcome = apply_overlay(-0.8, 0.0, overlay, RISK)
    assert outcome.target_weight == pytest.approx(-0.8 * min(0.10, 0.3) * 0.5)
    assert not outcome.defensive_clipped


def test_resolve_overlay_when_no_directive_then_fallback_preset_with_note() -> None:
    overlay = resolve_overlay(None, RISK, at=T0)
    preset = RISK.directive_presets[RISK.missing_directive_fallback]
    assert overlay.fallback
    assert overlay.mode == RISK.missing_directive_fallback
    assert (overlay.max_position_size, overlay.risk_scale, overlay.defensive) == (
        preset.max_position_size, preset.risk_scale, preset.defensive)
    assert "no live directive" in overlay.note


def test_resolve_overlay_when_directive_older_than_ttl_in_market_time_then_fallback() -> None:
    stale = directive(ttl_seconds=3600)
    overlay = resolve_overlay(stale, RISK, at=T0 + timedelta(seconds=3601))
    assert overlay.fallback
    assert "d-1 is not live" in overlay.note


def test_directive_is_live_when_max_ttl_smaller_than_directive_ttl_then_max_ttl_wins() -> None:
    d = directive(ttl_seconds=86400)
    assert directive_is_live(d, T0 + timedelta(seconds=500), max_ttl_seconds=600)
    assert not directive_is_live(d, T0 + timedelta(seconds=700), max_ttl_seconds=600)


def test_directive_is_live_when_issued_after_decision_time_then_not_live() -> None:
    assert not directive_is_live(directive(issued_at=T0 + timedelta(hours=1)), T0)


def test_apply_overlay_when_defensive_and_target_larger_then_held_at_current() -> None:
    overlay = resolve_overlay(directive("defensive", max_position_size=0.10, risk_scale=1.0), RISK, at=T0)
    outcome = apply_overlay(1.0, 0.03, overlay, RISK)
    assert outcome.target_weight == pytest.approx(0.03)
    assert outcome.defensive_clipped


def test_apply_overlay_when_defensive_and_target_reduces_then_allowed() -> None:
    overlay = resolve_overlay(directive("defensive", max_position_size=0.10, risk_scale=1.0), RISK, at=T0)
    outcome = apply_overlay(0.2, 0.05, overlay, RISK)
    assert outcome.target_weight == pytest.approx(0.02)
    assert not outcome.defensive_clipped


@pytest.mark.parametrize(("current", "target", "allowed", "clipped"), [
    (0.05, -0.03, 0.0, True),    # a flip is cut at flat
    (-0.05, -0.08, -0.05, True),  # a larger short is held
    (0.0, 0.02, 0.0, True),      # no new exposure
    (-0.05, -0.01, -0.01, False),
])
def test_reduce_only_when_target_given_then_only_moves_toward_zero(
    current: float, target: float, allowed: float, clipped: bool
) -> None:
    got, was_clipped = reduce_only(current, target)
    assert got == pytest.approx(allowed)
    assert was_clipped is clipped
