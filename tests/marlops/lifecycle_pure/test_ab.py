import pytest

from market_data.synthetic import symbol_names, synthetic_sectors
from marlops.lifecycle.ab import TEST_NONE, TEST_PAIRED, TEST_WELCH, ab_report
from marlops.lifecycle.cohorts import ab_assignment
from marlops.lifecycle.errors import LifecycleError

from . import bar, row, simulate

SYMBOLS = symbol_names(12)
SECTORS = synthetic_sectors(SYMBOLS)
VARIANT = {"A": "production", "B": "candidate"}


def _rotation(bars_per_period: int, symbols=SYMBOLS):
    sectors = synthetic_sectors(symbols)
    return lambda t: {s: VARIANT[v] for s, v in
                      ab_assignment(symbols, sectors, period=t // bars_per_period, seed="ab").items()}


def test_ab_report_when_b_is_better_with_many_observations_then_significant() -> None:
    bars = simulate(_rotation(10), 40, seed=21, mean_return={"candidate": 0.002, "production": -0.001})
    report = ab_report(bars)
    assert report.test == TEST_PAIRED
    assert report.significant and report.p_value < 0.05
    assert report.difference > 0
    assert report.observations == {"A": 240, "B": 240, "paired_symbols": 12}
    assert report.conclusion.startswith("B earned +")
    assert "more than A; significant (p=" in report.conclusion
    assert set(report.per_symbol["SYM00"]) == {"A", "B"}
    assert report.variants["B"]["pnl"] > report.variants["A"]["pnl"]


def test_ab_report_when_sample_tiny_then_not_yet_significant_keep_rotating() -> None:
    symbols = SYMBOLS[:2]
    bars = simulate(_rotation(2, symbols), 4, seed=22, mean_return={"candidate": 0.002, "production": -0.001})
    report = ab_report(bars)
    assert not report.significant
    assert report.test == TEST_WELCH  # 2 symbols ran both: too few for a signed-rank test to ever reach 0.05
    assert "not yet significant (p=" in report.conclusion
    assert ">= 0.05, 4 symbol-bars per variant" in report.conclusion
    assert report.conclusion.endswith(": keep rotating")


def test_ab_report_when_too_few_returns_for_any_test_then_p_is_one_and_not_significant() -> None:
    bars = [bar(0, [row("X", 0, variant="production", pnl=5.0, position_value=100.0),
                    row("Y", 0, variant="candidate", pnl=-5.0, position_value=100.0)])]
    report = ab_report(bars)
    assert (report.test, report.p_value, report.significant) == (TEST_NONE, 1.0, False)
    assert "not yet significant (too few observations" in report.conclusion
    assert report.conclusion.startswith("B earned 10.00% per unit risk less than A")


def test_ab_report_when_variants_equal_then_not_significant() -> None:
    bars = simulate(_rotation(10), 40, seed=23)
    report = ab_report(bars)
    assert report.test == TEST_PAIRED
    assert report.p_value >= 0.05 and not report.significant


def test_ab_report_when_variant_of_given_then_it_labels_symbol_bars() -> None:
    bars = simulate({s: "production" for s in SYMBOLS}, 12, seed=24)
    report = ab_report(bars, variant_of=lambda r: "even" if r.bar_index % 2 == 0 else "odd")
    assert list(report.variants) == ["even", "odd"]
    assert report.observations["even"] == 72 and report.observations["odd"] == 72
    assert "odd earned" in report.conclusion


def test_ab_report_when_variant_names_given_then_first_name_is_baseline() -> None:
    bars = simulate(_rotation(5), 20, seed=25)
    report = ab_report(bars, variant_names={"candidate": "new", "production": "old"})
    assert list(report.variants) == ["new", "old"]
    assert report.difference == pytest.approx(report.variants["old"]["pnl_per_risk"]
                                              - report.variants["new"]["pnl_per_risk"])


def test_ab_report_when_one_variant_only_then_lifecycle_error() -> None:
    with pytest.raises(LifecycleError, match="two variants"):
        ab_report(simulate({s: "production" for s in SYMBOLS}, 5, seed=26))


def test_ab_report_when_sl_fallback_bars_present_then_left_out() -> None:
    bars = simulate(_rotation(5), 10, seed=27)
    bars.append(bar(10, [row("ZZZ", 10, variant="sl_fallback", pnl=1e6, position_value=1.0)]))
    report = ab_report(bars)
    assert "ZZZ" not in report.per_symbol
    assert report.variants["A"]["pnl"] + report.variants["B"]["pnl"] < 1e5


def test_ab_report_when_rendered_then_markdown_holds_conclusion_and_symbols() -> None:
    report = ab_report(simulate(_rotation(5), 20, seed=28))
    text = report.to_markdown()
    assert report.conclusion in text
    assert "| SYM11 |" in text
    assert report.as_dict()["observations"] == report.observations
