import math
from dataclasses import replace

import pytest

from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.health import (
    CANARY_COST_RATIO,
    CANARY_DENIAL_RATE,
    CANARY_DRAWDOWN,
    CANARY_ERROR_RATE,
    CANARY_LATENCY,
    CANARY_PNL_INFERIOR,
    METRIC_KEYS,
    MODEL_ACTION_COLLAPSE,
    MODEL_ERROR_RATE,
    MODEL_OUTPUT_NAN,
    MODEL_OUTPUT_RANGE,
    AnomalyRules,
    CanaryHealthRules,
    canary_health,
    cohort_metrics,
    model_anomalies,
)

from . import VERSIONS, bar, row, simulate

SYMBOLS = [f"S{i:02d}" for i in range(20)]
CANARY = {"S03", "S11"}
ROUTES = {s: ("candidate" if s in CANARY else "production") for s in SYMBOLS}


DEFAULT_RULES = CanaryHealthRules()


def _codes(bars, rules: CanaryHealthRules = DEFAULT_RULES) -> set[str]:
    return {f.code for f in canary_health(bars, rules).findings}


def test_canary_health_when_cohorts_alike_then_healthy_without_findings() -> None:
    health = canary_health(simulate(ROUTES, 30, seed=1))
    assert health.healthy
    assert health.findings == ()
    assert health.bars == 30
    assert set(health.metrics["canary"]) == set(METRIC_KEYS)
    assert health.metrics["canary"]["symbol_bars"] == 60 and health.metrics["control"]["symbol_bars"] == 540
    assert health.metrics["pnl_test"]["applied"] == 1.0  # the test ran and found nothing
    assert health.as_dict()["healthy"] is True


def test_canary_health_when_no_bars_then_healthy_with_zero_bars() -> None:
    health = canary_health([])
    assert health.healthy and health.bars == 0 and health.findings == ()
    assert health.metrics["canary"]["symbol_bars"] == 0.0


def test_canary_health_when_canary_fails_often_then_error_rate_breach_from_first_bar() -> None:
    bars = simulate(ROUTES, 1, seed=2, overrides=lambda t, s, v: {"error": s == "S03"})
    health = canary_health(bars, CanaryHealthRules(min_bars=10))  # comparisons not yet, hard limit already
    assert [f.code for f in health.findings] == [CANARY_ERROR_RATE]
    assert health.findings[0].canary == pytest.approx(0.5)
    assert not health.healthy


def test_canary_health_when_canary_denied_more_than_control_then_denial_breach() -> None:
    bars = simulate(ROUTES, 6, seed=3, overrides=lambda t, s, v: {"denied": v == "candidate" and t % 2 == 0})
    assert _codes(bars) == {CANARY_DENIAL_RATE}


def test_canary_health_when_one_denial_of_two_then_not_significant_and_no_breach() -> None:
    # A defensive directive denies every buy: one canary buy denied on the first bar is no evidence (Fisher p=0.1).
    canary = [row("C1", 0, variant="candidate", denied=True), row("C2", 0, variant="candidate")]
    control = [row(f"P{i:02d}", 0) for i in range(18)]
    health = canary_health([bar(0, canary + control)])
    assert health.healthy and health.metrics["denial_test"]["p_value"] == pytest.approx(0.1)


def test_canary_health_when_denials_follow_the_defensive_directive_then_not_held_against_the_canary() -> None:
    # A defensive day denies every buy of whoever asks; the canary asked more often than the control.
    canary = [row(f"C{i}", 0, variant="candidate", denied=True, denial_code="DEFENSIVE_MODE") for i in range(4)]
    control = [row(f"P{i:02d}", 0) for i in range(36)]
    assert canary_health([bar(0, canary + control)]).healthy
    capped = [replace(r, denial_code="PER_SYMBOL_CAP") for r in canary]
    assert {f.code for f in canary_health([bar(0, capped + control)]).findings} == {CANARY_DENIAL_RATE}


def test_canary_health_when_fewer_bars_than_min_bars_then_comparisons_wait() -> None:
    bars = simulate(ROUTES, 6, seed=3, overrides=lambda t, s, v: {"denied": v == "candidate" and t % 2 == 0})
    assert _codes(bars, CanaryHealthRules(min_bars=7)) == set()
    assert _codes(bars, CanaryHealthRules(min_bars=6)) == {CANARY_DENIAL_RATE}


def test_canary_health_when_canary_pays_more_per_notional_then_cost_breach() -> None:
    bars = simulate(ROUTES, 5, seed=4, overrides=lambda t, s, v: {"cost": 2.0 if v == "candidate" else 0.5})
    health = canary_health(bars)
    assert {f.code for f in health.findings} == {CANARY_COST_RATIO}
    assert health.metrics["canary"]["cost_ratio"] / health.metrics["control"]["cost_ratio"] == pytest.approx(4.0)


def test_canary_health_when_canary_inference_slow_then_latency_breach() -> None:
    bars = simulate(ROUTES, 5, seed=5, overrides=lambda t, s, v: {"inference_ms": 9.0 if v == "candidate" else 2.0})
    health = canary_health(bars)
    assert {f.code for f in health.findings} == {CANARY_LATENCY}
    assert health.findings[0].canary == 9.0 and health.findings[0].control == 2.0


def test_canary_health_when_slow_on_fewer_bars_than_min_latency_bars_then_no_latency_breach() -> None:
    # Two slow bars on a busy host are noise, not a slow model.
    bars = simulate(ROUTES, 2, seed=5, overrides=lambda t, s, v: {"inference_ms": 9.0 if v == "candidate" else 2.0})
    assert CANARY_LATENCY not in {f.code for f in canary_health(bars).findings}


def test_canary_health_when_canary_crashes_once_then_drawdown_breach() -> None:
    # One bar loses 8% of the cohort's capital (2/20 of 100_000) and the next wins it back: a drawdown, but no
    # lasting P&L difference for the t-test to see.
    def crash(t: int, s: str, v: str) -> dict:
        if v != "candidate" or t not in (3, 4):
            return {}
        return {"pnl": -400.0 if t == 3 else 400.0}

    health = canary_health(simulate(ROUTES, 10, seed=6, overrides=crash))
    assert {f.code for f in health.findings} == {CANARY_DRAWDOWN}
    assert health.metrics["canary"]["drawdown"] == pytest.approx(0.08, abs=0.01)


def test_canary_health_when_canary_earns_less_with_enough_data_then_pnl_inferior() -> None:
    bars = simulate(ROUTES, 20, seed=7, mean_return={"candidate": -0.002, "production": 0.002}, volatility=0.001)
    health = canary_health(bars)
    assert CANARY_PNL_INFERIOR in {f.code for f in health.findings}
    assert health.metrics["pnl_test"]["p_value"] < 0.01
    assert health.metrics["canary"]["pnl_per_risk"] < health.metrics["control"]["pnl_per_risk"]


def test_canary_health_when_fewer_pnl_observations_than_minimum_then_no_pnl_test() -> None:
    # 4 bars x 2 canary symbols = 8 symbol-bars, but the first comes in flat: 6 returns < 8.
    bars = simulate(ROUTES, 4, seed=7, mean_return={"candidate": -0.002, "production": 0.002}, volatility=0.001)
    health = canary_health(bars)
    assert CANARY_PNL_INFERIOR not in {f.code for f in health.findings}
    assert health.metrics["pnl_test"] == pytest.approx({**health.metrics["pnl_test"], "applied": 0.0,
                                                        "canary_observations": 6.0})
    # The same data with a lower bar does breach: the minimum, not a lack of effect, kept the test quiet.
    assert CANARY_PNL_INFERIOR in _codes(bars, CanaryHealthRules(min_pnl_observations=6))


def test_cohort_metrics_when_positions_held_then_definitions_hold() -> None:
    bars = [
        bar(0, [row("A", 0, variant="candidate", position_value=1_000.0, cost=1.0, traded_notional=1_000.0),
                row("B", 0, position_value=1_000.0)]),
        bar(1, [row("A", 1, variant="candidate", position_value=3_000.0, pnl=50.0, cost=2.0, traded_notional=2_000.0,
                    inference_ms=4.0),
                row("B", 1, position_value=1_000.0)]),
        bar(2, [row("A", 2, variant="candidate", position_value=3_000.0, pnl=-150.0, denied=True, error=True,
                    inference_ms=6.0),
                row("B", 2, position_value=1_000.0)]),
    ]
    m = cohort_metrics(bars, "candidate")
    assert m["pnl"] == -100.0
    assert m["pnl_per_risk"] == pytest.approx(-100.0 / ((1_000 + 3_000 + 3_000) / 3))
    assert m["cost_ratio"] == pytest.approx(3.0 / 3_000.0)
    assert m["inference_p50_ms"] == 4.0
    assert m["drawdown"] == pytest.approx(150.0 / (0.5 * 100_000.0))  # peak +50 -> trough -100, half the symbols
    assert m["error_rate"] == pytest.approx(1 / 3) and m["denial_rate"] == pytest.approx(1 / 3)
    assert m["symbol_bars"] == 3.0


def test_canary_health_rules_when_invalid_then_lifecycle_error() -> None:
    with pytest.raises(LifecycleError, match="min_pnl_observations"):
        CanaryHealthRules(min_pnl_observations=1)
    with pytest.raises(LifecycleError, match="pnl_alpha"):
        CanaryHealthRules(pnl_alpha=1.0)


# ---- model anomalies --------------------------------------------------------------------------------------------
CERTAIN = (0.996, 0.001, 0.001, 0.001, 0.001)


def _window(n_bars: int = 3, **candidate_fields) -> list:
    """Production answers normally; the candidate's symbol-bars carry `candidate_fields`."""
    return [bar(t, [row(s, t, variant="production", action=t % 5) for s in ("P1", "P2")]
                + [row(s, t, variant="candidate", **candidate_fields) for s in ("C1", "C2")])
            for t in range(n_bars)]


def test_model_anomalies_when_outputs_sane_then_none() -> None:
    assert model_anomalies(_window(action=1)) == ()


def test_model_anomalies_when_probability_nan_then_output_nan() -> None:
    found = model_anomalies(_window(probabilities=(math.nan, 0.5, 0.5, 0.0, 0.0)))
    assert [(a.code, a.policy_version) for a in found] == [(MODEL_OUTPUT_NAN, VERSIONS["candidate"])]
    assert found[0].value == 6.0


@pytest.mark.parametrize("fields", [{"probabilities": (0.5, 0.5, 0.5, 0.0, 0.0)},
                                    {"probabilities": (1.2, -0.2, 0.0, 0.0, 0.0)},
                                    {"action": 7},
                                    {"probabilities": ()}])
def test_model_anomalies_when_probabilities_out_of_range_then_output_range(fields: dict) -> None:
    found = model_anomalies(_window(**fields))
    assert [(a.code, a.policy_version) for a in found] == [(MODEL_OUTPUT_RANGE, VERSIONS["candidate"])]


def test_model_anomalies_when_certain_of_one_action_everywhere_then_collapse() -> None:
    found = model_anomalies(_window(action=0, probabilities=CERTAIN))
    assert [(a.code, a.policy_version) for a in found] == [(MODEL_ACTION_COLLAPSE, VERSIONS["candidate"])]
    assert found[0].value == 0.0


def test_model_anomalies_when_same_action_but_uncertain_then_no_collapse() -> None:
    # A flat market may make a sound policy pick "hold" everywhere; it is not collapsed while it still weighs others.
    assert model_anomalies(_window(action=2, probabilities=(0.1, 0.2, 0.4, 0.2, 0.1))) == ()


def test_model_anomalies_when_one_symbol_bar_then_no_collapse_judgment() -> None:
    bars = [bar(0, [row("C1", 0, variant="candidate", action=0, probabilities=CERTAIN)])]
    assert model_anomalies(bars) == ()
    assert [a.code for a in model_anomalies(bars + [bar(1, [row("C1", 1, variant="candidate", action=0,
                                                                probabilities=CERTAIN)])])] == [MODEL_ACTION_COLLAPSE]


def test_model_anomalies_when_candidate_fails_then_error_rate_blames_candidate_not_fallback() -> None:
    bars = _window(action=1)
    bars[-1] = bar(2, [row("C1", 2, variant="candidate", error=True, policy_version=VERSIONS["sl_fallback"],
                           action=0, probabilities=(1.0, 0.0, 0.0, 0.0, 0.0)),
                       row("C2", 2, variant="candidate", action=1)])
    found = model_anomalies(bars)
    assert [(a.code, a.policy_version) for a in found] == [(MODEL_ERROR_RATE, VERSIONS["candidate"])]
    assert found[0].value == pytest.approx(1 / 6)  # 1 failed of 6 candidate symbol-bars in 3 bars


def test_model_anomalies_when_defect_older_than_window_then_not_reported() -> None:
    bars = _window(n_bars=6, action=1)
    bars[0] = bar(0, [row("C1", 0, variant="candidate", probabilities=(math.nan,) * 5)])
    assert model_anomalies(bars, AnomalyRules(window_bars=3)) == ()
    assert [a.code for a in model_anomalies(bars, AnomalyRules(window_bars=6))] == [MODEL_OUTPUT_NAN]


def test_model_anomalies_when_variant_not_watched_then_ignored() -> None:
    bars = _window(probabilities=(math.nan,) * 5)
    assert model_anomalies(bars, variants=("production",)) == ()
