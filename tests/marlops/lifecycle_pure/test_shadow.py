import numpy as np
import pytest

from contracts.config import RiskOverlaysConfig
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.shadow import NO_SHADOW_DECISIONS, SIDE_METRICS, shadow_report

from . import bar, row

RISK = RiskOverlaysConfig()
LEVELS = (-1.0, 0.0, 1.0)  # action 0 = short, 1 = flat, 2 = long
SYMBOLS = ("AAA", "BBB", "CCC")


def _market(n_bars: int, *, action, shadow_action, seed: int = 0, drift: float = 0.01, **bar_fields) -> list:
    """Symbols whose price rises by `drift` a bar (plus seeded noise); action(t, s) acts, shadow_action(t, s) shadows."""
    rng = np.random.default_rng(seed)
    prices = {s: 100.0 for s in SYMBOLS}
    bars = []
    for t in range(n_bars):
        rows = []
        for s in SYMBOLS:
            prices[s] *= 1.0 + drift + float(rng.normal(0.0, 0.002))
            rows.append(row(s, t, action=action(t, s), price=prices[s], shadow_action=shadow_action(t, s),
                            shadow_version="symbol_agent/4", shadow_probabilities=(0.2, 0.3, 0.5)))
        bars.append(bar(t, rows, **bar_fields))
    return bars


def test_shadow_report_when_shadow_agrees_then_no_difference_and_full_agreement() -> None:
    bars = _market(12, action=lambda t, s: (t + len(s)) % 3, shadow_action=lambda t, s: (t + len(s)) % 3)
    report = shadow_report(bars, RISK, action_levels=LEVELS)
    assert report.agreement == 1.0
    assert report.difference == {k: 0.0 for k in SIDE_METRICS}
    assert report.production["orders"] > 0  # something was traded, so the zero difference means something
    assert (report.bars, report.symbol_bars) == (12, 36)
    assert report.shadow_version == "symbol_agent/4" and report.production_version == "symbol_agent/3"


def test_shadow_report_when_shadow_sells_in_rising_market_then_lower_return() -> None:
    bars = _market(20, action=lambda t, s: 2, shadow_action=lambda t, s: 0)
    report = shadow_report(bars, RISK, action_levels=LEVELS)
    assert report.production["total_return"] > 0
    assert report.shadow["total_return"] < 0
    assert report.difference["total_return"] == pytest.approx(
        report.shadow["total_return"] - report.production["total_return"])
    assert report.shadow["max_drawdown"] > report.production["max_drawdown"]
    assert report.agreement == 0.0
    assert all(v["shadow"] < 0 < v["production"] for v in report.per_symbol.values())


def test_shadow_report_when_replayed_then_per_symbol_pnl_sums_to_account_pnl() -> None:
    rng = np.random.default_rng(11)
    choices = rng.integers(0, 3, size=(15, len(SYMBOLS), 2))
    bars = _market(15, action=lambda t, s: int(choices[t, SYMBOLS.index(s), 0]),
                   shadow_action=lambda t, s: int(choices[t, SYMBOLS.index(s), 1]), drift=0.0, seed=3)
    report = shadow_report(bars, RISK, action_levels=LEVELS, initial_equity=250_000.0)
    for side in ("production", "shadow"):
        assert sum(v[side] for v in report.per_symbol.values()) == pytest.approx(getattr(report, side)["pnl"])
        assert getattr(report, side)["cost"] > 0
    expected = float(np.mean(choices[..., 0] == choices[..., 1]))
    assert report.agreement == pytest.approx(expected)


def test_shadow_report_when_only_some_symbols_shadowed_then_only_those_replayed() -> None:
    bars = _market(5, action=lambda t, s: 2, shadow_action=lambda t, s: 1 if s == "AAA" else None)
    report = shadow_report(bars, RISK, action_levels=LEVELS)
    assert list(report.per_symbol) == ["AAA"]
    assert report.symbol_bars == 5


def test_shadow_report_when_no_shadow_decisions_then_lifecycle_error_says_how_to_route() -> None:
    bars = _market(3, action=lambda t, s: 2, shadow_action=lambda t, s: None)
    with pytest.raises(LifecycleError) as caught:
        shadow_report(bars, RISK, action_levels=LEVELS)
    assert str(caught.value) == NO_SHADOW_DECISIONS
    assert "marlops route set '*' --variant production --shadow candidate" in str(caught.value)


def test_shadow_report_when_shadow_action_not_a_level_then_lifecycle_error() -> None:
    bars = _market(2, action=lambda t, s: 2, shadow_action=lambda t, s: 5)
    with pytest.raises(LifecycleError, match="shadow action 5"):
        shadow_report(bars, RISK, action_levels=LEVELS)


def test_shadow_report_when_rendered_then_markdown_and_dict_carry_the_numbers() -> None:
    report = shadow_report(_market(4, action=lambda t, s: 2, shadow_action=lambda t, s: 1), RISK,
                           action_levels=LEVELS)
    text = report.to_markdown()
    assert "symbol_agent/4 vs symbol_agent/3" in text
    assert all(f"| {metric} |" in text for metric in SIDE_METRICS)
    assert "| AAA |" in text
    assert report.as_dict()["per_symbol"]["AAA"]["production"] == report.per_symbol["AAA"]["production"]


def test_shadow_report_when_defensive_directive_recorded_then_no_new_exposure_on_either_side() -> None:
    bars = _market(4, action=lambda t, s: 2, shadow_action=lambda t, s: 0, extra={"directive_mode": "defensive"})
    report = shadow_report(bars, RISK, action_levels=LEVELS)
    assert report.production["orders"] == 0 and report.shadow["orders"] == 0
