import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from contracts.config import GoNoGoThresholds, load_evaluation

from agents.errors import InputShapeError
from agents.report import (
    StrategyTrack,
    build_report,
    buy_and_hold_track,
    go_no_go,
    plot_report,
    strategy_metrics,
    write_report,
)

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# The rules on the policy's own series only; the fold and baseline rules need build_report (tested below).
OWN_RULES = GoNoGoThresholds(min_fold_sharpe=None, min_sharpe_margin_vs_benchmark=None, min_sharpe_margin_vs_fallback=None)


def _days(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2024-01-01", periods=n)


def _track(name: str, returns: np.ndarray, *, costs: np.ndarray | None = None, weights: np.ndarray | None = None,
           turnover: np.ndarray | None = None) -> StrategyTrack:
    n = returns.size
    return StrategyTrack(
        name=name,
        timestamps=_days(n),
        returns=returns,
        costs=np.zeros(n) if costs is None else costs,
        turnover=np.zeros(n) if turnover is None else turnover,
        weights=np.full((n, 2), 0.5) if weights is None else weights,
    )


def _noisy(mean: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, 0.01, n)


def _passing_metrics() -> dict[str, float]:
    return {"sharpe": 2.0, "max_drawdown": 0.1, "profit_factor": 1.5, "n_bars": 300.0, "probabilistic_sharpe": 0.99}


# ---- metrics ---------------------------------------------------------------------------------------------------


def test_metrics_when_small_series_then_match_hand_computation() -> None:
    r = [0.01, -0.02, 0.03, 0.0, 0.01]
    b = [0.005, -0.01, 0.01, 0.002, 0.0]
    costs = [0.001, 0.0, 0.002, 0.0, 0.0]
    turnover = [0.5, 0.0, 1.0, 0.0, 0.25]
    track = _track("p", np.array(r), costs=np.array(costs), turnover=np.array(turnover))
    m = strategy_metrics(track, np.array(b), periods_per_year=252)

    equity = [1.0]
    for x in r:
        equity.append(equity[-1] * (1 + x))
    active = [x - y for x, y in zip(r, b)]
    assert m["sharpe"] == pytest.approx(statistics.mean(r) / statistics.stdev(r) * math.sqrt(252))
    assert m["max_drawdown"] == pytest.approx(1 - equity[2] / equity[1])  # the only fall: bar 2 from the bar-1 peak
    assert m["profit_factor"] == pytest.approx((0.01 + 0.03 + 0.01) / 0.02)
    assert m["win_rate"] == pytest.approx(3 / 4)  # the zero bar does not count
    assert m["total_return"] == pytest.approx(equity[-1] - 1)
    assert m["annual_return"] == pytest.approx(equity[-1] ** (252 / 5) - 1)
    assert m["volatility"] == pytest.approx(statistics.stdev(r) * math.sqrt(252))
    assert m["turnover"] == pytest.approx(sum(turnover) / 5 * 252)
    assert m["cost_ratio"] == pytest.approx(0.003 / (sum(r) + 0.003))
    assert m["tracking_error"] == pytest.approx(statistics.stdev(active) * math.sqrt(252))
    assert m["active_return"] == pytest.approx(statistics.mean(active) * 252)
    assert m["information_ratio"] == pytest.approx(statistics.mean(active) / statistics.stdev(active) * math.sqrt(252))
    assert m["benchmark_correlation"] == pytest.approx(statistics.correlation(r, b))
    assert m["beta"] == pytest.approx(statistics.covariance(r, b) / statistics.variance(b))
    assert m["n_bars"] == 5.0
    assert all(isinstance(value, float) for value in m.values())


def test_metrics_when_buy_and_hold_then_no_turnover_no_costs_and_full_concentration() -> None:
    asset = _noisy(0.0005, 50, seed=1)
    m = strategy_metrics(buy_and_hold_track("bh", _days(50), asset), asset)
    assert m["turnover"] == 0.0 and m["cost_ratio"] == 0.0
    assert m["herfindahl"] == pytest.approx(1.0)
    assert m["beta"] == pytest.approx(1.0) and m["benchmark_correlation"] == pytest.approx(1.0)
    assert m["tracking_error"] == pytest.approx(0.0) and m["information_ratio"] == 0.0


@pytest.mark.parametrize("k", [1, 2, 4, 10])
def test_herfindahl_when_equal_weights_over_k_names_then_one_over_k(k: int) -> None:
    weights = np.full((6, 10), 0.0)
    weights[:, :k] = 0.8 / k
    weights[2] = 0.0  # a flat bar is left out of the mean, not counted as 0
    m = strategy_metrics(_track("p", _noisy(0.0, 6, seed=2), weights=weights), np.zeros(6))
    assert m["herfindahl"] == pytest.approx(1.0 / k)


def test_herfindahl_when_never_exposed_then_zero() -> None:
    m = strategy_metrics(_track("p", np.zeros(5), weights=np.zeros((5, 3))), np.zeros(5))
    assert m["herfindahl"] == 0.0


def test_cost_ratio_when_costs_exceed_gross_pnl_then_inf() -> None:
    track = _track("p", np.array([-0.01, 0.002]), costs=np.array([0.001, 0.001]))
    assert math.isinf(strategy_metrics(track, np.zeros(2))["cost_ratio"])


def test_win_rate_when_no_nonzero_bars_then_zero() -> None:
    m = strategy_metrics(_track("p", np.zeros(4)), np.zeros(4))
    assert m["win_rate"] == 0.0 and m["benchmark_correlation"] == 0.0 and m["beta"] == 0.0


def test_psr_when_skewed_series_then_matches_scipy_formula() -> None:
    r = np.random.default_rng(3).lognormal(-5.0, 0.8, 300) - 0.006  # skewed, small positive mean
    sr = r.mean() / r.std(ddof=1)
    skew = stats.skew(r)
    kurt = stats.kurtosis(r, fisher=False)
    expected = stats.norm.cdf(sr * math.sqrt(r.size - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))
    assert strategy_metrics(_track("p", r), np.zeros(r.size))["probabilistic_sharpe"] == pytest.approx(expected)


def test_psr_when_long_strongly_positive_series_then_near_one() -> None:
    m = strategy_metrics(_track("p", _noisy(0.003, 1000, seed=4)), np.zeros(1000))
    assert m["probabilistic_sharpe"] > 0.999


def test_psr_when_zero_mean_series_then_one_half() -> None:
    r = _noisy(0.0, 500, seed=5)
    r = r - r.mean()
    assert strategy_metrics(_track("p", r), np.zeros(500))["probabilistic_sharpe"] == pytest.approx(0.5, abs=1e-9)


def test_psr_when_strongly_negative_series_then_near_zero() -> None:
    m = strategy_metrics(_track("p", _noisy(-0.003, 1000, seed=6)), np.zeros(1000))
    assert m["probabilistic_sharpe"] < 0.001


# ---- input checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("weights", {"weights": np.zeros((4, 2))}),
        ("weights", {"weights": np.zeros(5)}),
        ("costs", {"costs": np.array([0.0, -0.001, 0.0, 0.0, 0.0])}),
        ("costs", {"costs": np.zeros(4)}),
        ("turnover", {"turnover": np.array([0.0, 0.0, np.nan, 0.0, 0.0])}),
        ("returns", {"returns": np.array([0.0, np.inf, 0.0, 0.0, 0.0])}),
        ("returns", {"returns": np.array([0.0, -1.5, 0.0, 0.0, 0.0])}),
        ("timestamps", {"timestamps": _days(4)}),
        ("timestamps", {"timestamps": _days(5)[::-1]}),
        ("name", {"name": ""}),
    ],
)
def test_track_when_field_invalid_then_error_names_field(field: str, kwargs: dict[str, object]) -> None:
    values: dict[str, object] = {"name": "p", "timestamps": _days(5), "returns": np.zeros(5), "costs": np.zeros(5),
                                 "turnover": np.zeros(5), "weights": np.zeros((5, 2))}
    values.update(kwargs)
    with pytest.raises(InputShapeError, match=rf"^{field}"):
        StrategyTrack(**values)  # type: ignore[arg-type]


def test_metrics_when_benchmark_length_differs_then_error_names_it() -> None:
    with pytest.raises(InputShapeError, match="benchmark_returns"):
        strategy_metrics(_track("p", np.zeros(5)), np.zeros(4))


def test_track_when_built_then_arrays_are_read_only_copies() -> None:
    returns = np.zeros(3)
    track = _track("p", returns)
    returns[0] = 0.5
    assert track.returns[0] == 0.0
    with pytest.raises(ValueError):
        track.returns[0] = 1.0


# ---- Go/No-Go --------------------------------------------------------------------------------------------------


def test_go_no_go_when_strong_long_series_then_go() -> None:
    r = _noisy(0.003, 500, seed=7)
    verdict = go_no_go(strategy_metrics(_track("p", r), np.zeros(500)), OWN_RULES)
    assert verdict.passed and verdict.failed() == ()
    assert {c.name for c in verdict.checks} == {"min_sharpe", "max_drawdown", "min_profit_factor", "min_holdout_bars",
                                                 "min_probabilistic_sharpe"}


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"sharpe": 0.5}, "min_sharpe"),
        ({"max_drawdown": 0.45}, "max_drawdown"),
        ({"profit_factor": 1.05}, "min_profit_factor"),
        ({"n_bars": 59.0}, "min_holdout_bars"),
        ({"probabilistic_sharpe": 0.7}, "min_probabilistic_sharpe"),
    ],
)
def test_go_no_go_when_one_metric_weak_then_no_go_names_that_threshold(change: dict[str, float], failing: str) -> None:
    verdict = go_no_go({**_passing_metrics(), **change}, OWN_RULES)
    assert not verdict.passed
    assert [c.name for c in verdict.failed()] == [failing]


def test_go_no_go_when_series_short_then_min_holdout_bars_fails() -> None:
    r = _noisy(0.003, 30, seed=8)
    verdict = go_no_go(strategy_metrics(_track("p", r), np.zeros(30)), OWN_RULES)
    assert "min_holdout_bars" in {c.name for c in verdict.failed()}


def test_go_no_go_when_series_has_a_crash_then_max_drawdown_fails() -> None:
    r = _noisy(0.003, 500, seed=9)
    r[250] = -0.4
    verdict = go_no_go(strategy_metrics(_track("p", r), np.zeros(500)), OWN_RULES)
    assert "max_drawdown" in {c.name for c in verdict.failed()}


def test_go_no_go_when_metric_nan_then_fails_and_says_so() -> None:
    verdict = go_no_go({**_passing_metrics(), "sharpe": math.nan}, OWN_RULES)
    (failed,) = verdict.failed()
    assert failed.name == "min_sharpe" and "NaN" in failed.detail


def test_go_no_go_when_psr_threshold_zero_then_check_skipped() -> None:
    verdict = go_no_go({**_passing_metrics(), "probabilistic_sharpe": 0.1},
                       OWN_RULES.model_copy(update={"min_probabilistic_sharpe": 0.0}))
    assert verdict.passed and "min_probabilistic_sharpe" not in {c.name for c in verdict.checks}


def test_go_no_go_when_profit_factor_inf_then_passes() -> None:
    assert go_no_go({**_passing_metrics(), "profit_factor": math.inf}, OWN_RULES).passed


def test_go_no_go_when_config_threshold_changes_then_verdict_changes(tmp_path: Path) -> None:
    metrics = {**_passing_metrics(), "sharpe": 1.0}
    metrics.update({"min_fold_sharpe": 1.0, "sharpe_vs_benchmark": 1.0, "sharpe_vs_fallback": 1.0})
    shipped = load_evaluation(REPO / "config" / "rl" / "evaluation.yaml")
    assert go_no_go(metrics, shipped.go_no_go).passed
    stricter = tmp_path / "evaluation.yaml"
    text = (REPO / "config" / "rl" / "evaluation.yaml").read_text()
    stricter.write_text(text.replace("min_sharpe: 0.8 ", "min_sharpe: 1.5 "))
    verdict = go_no_go(metrics, load_evaluation(stricter).go_no_go)
    assert [c.name for c in verdict.failed()] == ["min_sharpe"]
    assert verdict.failed()[0].threshold == 1.5


# ---- report ----------------------------------------------------------------------------------------------------


def _report_inputs(n: int = 120) -> tuple[StrategyTrack, list[StrategyTrack], np.ndarray]:
    asset = _noisy(0.0003, n, seed=10)
    policy = _track("ppo", _noisy(0.002, n, seed=11), costs=np.full(n, 1e-4), turnover=np.full(n, 0.1))
    # A baseline with no losing bar: profit factor inf, which the JSON must still carry.
    always_up = _track("always_up", np.full(n, 0.0001))
    return policy, [buy_and_hold_track("buy_and_hold", _days(n), asset), always_up], asset


def test_report_when_built_then_every_strategy_has_metrics_and_comparisons() -> None:
    policy, baselines, asset = _report_inputs()
    report = build_report(policy, baselines, asset, GoNoGoThresholds(), n_folds=3)
    assert set(report.metrics) == {"ppo", "buy_and_hold", "always_up"}
    assert set(report.comparisons) == {"buy_and_hold", "always_up"}
    for name, diff in report.comparisons.items():
        own, other = report.metrics["ppo"]["sharpe"], report.metrics[name]["sharpe"]
        assert diff["sharpe_diff"] == pytest.approx(own - other)
        assert diff["beats"] == (1.0 if own > other else 0.0)
    assert report.held_out_start == _days(120)[0].isoformat() and report.held_out_end == _days(120)[-1].isoformat()


def test_report_when_three_folds_then_consecutive_non_empty_windows_covering_all_bars() -> None:
    policy, baselines, asset = _report_inputs(10)
    report = build_report(policy, baselines, asset, GoNoGoThresholds(), n_folds=3)
    assert [f["n_bars"] for f in report.folds] == [4, 3, 3]
    days = _days(10)
    assert [f["start"] for f in report.folds] == [days[0].isoformat(), days[4].isoformat(), days[7].isoformat()]
    assert [f["end"] for f in report.folds] == [days[3].isoformat(), days[6].isoformat(), days[9].isoformat()]
    middle = report.folds[1]["strategies"]["ppo"]  # type: ignore[index]
    assert middle["total_return"] == pytest.approx(np.prod(1 + policy.returns[4:7]) - 1)


def test_report_when_fewer_bars_than_folds_then_one_fold_per_bar() -> None:
    policy, baselines, asset = _report_inputs(2)
    report = build_report(policy, baselines, asset, GoNoGoThresholds(), n_folds=5)
    assert [f["n_bars"] for f in report.folds] == [1, 1]


def test_report_when_baseline_timestamps_differ_then_error_names_timestamps() -> None:
    policy, _, asset = _report_inputs()
    shifted = buy_and_hold_track("bh", pd.bdate_range("2023-01-02", periods=120), asset)
    with pytest.raises(InputShapeError, match="timestamps"):
        build_report(policy, [shifted], asset, GoNoGoThresholds(), n_folds=3)


def test_report_when_baseline_name_repeats_policy_then_refused() -> None:
    policy, _, asset = _report_inputs()
    with pytest.raises(InputShapeError, match="'ppo'"):
        build_report(policy, [buy_and_hold_track("ppo", _days(120), asset)], asset, GoNoGoThresholds(), n_folds=3)


def test_report_json_when_metrics_hold_inf_then_round_trips_without_nan() -> None:
    policy, baselines, asset = _report_inputs()
    report = build_report(policy, baselines, asset, GoNoGoThresholds(), n_folds=3)
    text = json.dumps(report.as_dict(), allow_nan=False)
    loaded = json.loads(text)
    assert loaded == report.as_dict()
    assert loaded["metrics"]["always_up"]["profit_factor"] == "inf"
    assert loaded["verdict"]["passed"] == report.verdict.passed
    assert loaded["metrics"]["ppo"]["sharpe"] == pytest.approx(report.metrics["ppo"]["sharpe"])


def test_report_markdown_when_rendered_then_names_every_strategy_threshold_and_fold() -> None:
    policy, baselines, asset = _report_inputs()
    report = build_report(policy, baselines, asset, GoNoGoThresholds(min_sharpe=50.0), n_folds=3)
    text = report.to_markdown()
    for name in ("ppo", "buy_and_hold", "always_up"):
        assert name in text
    for check in report.verdict.checks:
        assert f"| {check.name} |" in text
    assert "| min_sharpe |" in text and "FAIL" in text and "NO-GO" in text
    for fold in report.folds:
        assert str(fold["start"]) in text


def test_plot_when_written_then_valid_deterministic_png(tmp_path: Path) -> None:
    policy, baselines, _ = _report_inputs()
    first = plot_report([policy, *baselines], tmp_path / "a" / "equity.png", title="held-out")
    second = plot_report([policy, *baselines], tmp_path / "b.png", title="held-out")
    data = first.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    assert data == second.read_bytes()


def test_plot_when_no_tracks_then_refused(tmp_path: Path) -> None:
    with pytest.raises(InputShapeError, match="report_tracks"):
        plot_report([], tmp_path / "x.png", title="t")


def test_write_report_when_called_then_json_markdown_and_png_exist(tmp_path: Path) -> None:
    policy, baselines, asset = _report_inputs()
    report = build_report(policy, baselines, asset, GoNoGoThresholds(), n_folds=3)
    paths = write_report(report, [policy, *baselines], tmp_path / "out")
    assert {p.name for p in paths.values()} == {"report.json", "report.md", "equity.png"}
    assert json.loads(paths["json"].read_text())["policy"] == "ppo"
    assert paths["markdown"].read_text() == report.to_markdown()
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC
