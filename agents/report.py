"""The held-out evaluation report: metrics of the policy and its baselines, the Go/No-Go verdict, walk-forward
folds, and its files (report.json, report.md, equity.png).

JSON convention: non-finite floats are written as the strings "inf", "-inf" and "nan", so
json.dumps(report.as_dict(), allow_nan=False) always succeeds and no value is lost.
"""

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from contracts.config import GoNoGoThresholds

from agents.errors import InputShapeError
from agents.inputs import as_float_array
from agents.metrics import TRADING_DAYS_PER_YEAR, equity_curve, max_drawdown, sharpe_ratio
from agents.performance import StrategyTrack, buy_and_hold_track, strategy_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationReport",
    "GoNoGoVerdict",
    "StrategyTrack",
    "ThresholdCheck",
    "build_report",
    "buy_and_hold_track",
    "go_no_go",
    "json_number",
    "plot_report",
    "strategy_metrics",
    "write_report",
]

FOLD_METRICS: tuple[str, ...] = ("sharpe", "total_return", "max_drawdown")


def json_number(value: float) -> float | str:
    """A float as JSON allows it: finite values unchanged, inf/-inf/nan as the strings "inf"/"-inf"/"nan"."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


# Counts are shown as whole numbers in the markdown, every other value with 4 decimals.
_COUNT_NAMES = frozenset({"n_bars", "min_holdout_bars"})


def _fmt(value: float, name: str = "") -> str:
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.0f}" if name in _COUNT_NAMES else f"{value:.4f}"


@dataclass(frozen=True)
class ThresholdCheck:
    """One Go/No-Go rule: `value op threshold` must hold. `name` is the threshold's key in GoNoGoThresholds."""

    name: str
    value: float
    threshold: float
    op: str  # ">", "<" or ">="
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": json_number(self.value),
            "threshold": json_number(self.threshold),
            "op": self.op,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class GoNoGoVerdict:
    passed: bool
    checks: tuple[ThresholdCheck, ...]

    def failed(self) -> tuple[ThresholdCheck, ...]:
        return tuple(check for check in self.checks if not check.passed)

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "decision": "GO" if self.passed else "NO-GO",
            "checks": [check.as_dict() for check in self.checks],
            "failed": [check.name for check in self.failed()],
        }


_OPS = {">": lambda v, t: v > t, "<": lambda v, t: v < t, ">=": lambda v, t: v >= t}


def _check(name: str, metric: str, metrics: dict[str, float], op: str, threshold: float) -> ThresholdCheck:
    if metric not in metrics:
        return ThresholdCheck(name, math.nan, threshold, op, False, f"{metric} missing from the metrics: FAIL")
    value = float(metrics[metric])
    if math.isnan(value):
        return ThresholdCheck(name, value, threshold, op, False, f"{metric} is NaN (not computable): FAIL")
    passed = bool(_OPS[op](value, threshold))
    detail = f"{metric} = {_fmt(value, name)}, needs {op} {_fmt(threshold, name)}: {'PASS' if passed else 'FAIL'}"
    return ThresholdCheck(name, value, threshold, op, passed, detail)


def go_no_go(metrics: dict[str, float], thresholds: GoNoGoThresholds) -> GoNoGoVerdict:
    """GO only when every check passes; a NaN or missing metric fails its check.

    Checks (name = threshold key): min_sharpe (sharpe >), max_drawdown (max_drawdown <), min_profit_factor
    (profit_factor >), min_holdout_bars (n_bars >=), min_probabilistic_sharpe (probabilistic_sharpe >=; left out
    entirely when the threshold is 0).
    """
    rules: list[tuple[str, str, str, float]] = [
        ("min_sharpe", "sharpe", ">", thresholds.min_sharpe),
        ("max_drawdown", "max_drawdown", "<", thresholds.max_drawdown),
        ("min_profit_factor", "profit_factor", ">", thresholds.min_profit_factor),
        ("min_holdout_bars", "n_bars", ">=", float(thresholds.min_holdout_bars)),
    ]
    if thresholds.min_probabilistic_sharpe > 0:
        rules.append(("min_probabilistic_sharpe", "probabilistic_sharpe", ">=", thresholds.min_probabilistic_sharpe))
    if thresholds.min_fold_sharpe is not None:
        rules.append(("min_fold_sharpe", "min_fold_sharpe", ">", thresholds.min_fold_sharpe))
    if thresholds.min_sharpe_margin_vs_fallback is not None:
        rules.append(
            ("min_sharpe_margin_vs_fallback", "sharpe_vs_fallback", ">", thresholds.min_sharpe_margin_vs_fallback)
        )
    if thresholds.min_sharpe_margin_vs_benchmark is not None:
        rules.append(
            ("min_sharpe_margin_vs_benchmark", "sharpe_vs_benchmark", ">", thresholds.min_sharpe_margin_vs_benchmark)
        )
    checks = tuple(_check(name, metric, metrics, op, threshold) for name, metric, op, threshold in rules)
    verdict = GoNoGoVerdict(passed=all(check.passed for check in checks), checks=checks)
    logger.info("Go/No-Go: %s (failed: %s)", "GO" if verdict.passed else "NO-GO",
                [check.name for check in verdict.failed()])
    return verdict


def _json_tree(value: object) -> object:
    if isinstance(value, dict):
        return {str(key): _json_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_tree(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return json_number(float(value))
    raise TypeError(f"report value of type {type(value).__name__} is not JSON-serialisable: {value!r}")


@dataclass(frozen=True)
class EvaluationReport:
    """Held-out evaluation of one policy against baselines.

    folds: one dict per walk-forward window with keys index, start, end (ISO timestamps), n_bars and
    strategies = {strategy name: {sharpe, total_return, max_drawdown}} for the policy and every baseline.
    """

    policy: str
    metrics: dict[str, dict[str, float]]
    comparisons: dict[str, dict[str, float]]
    folds: tuple[dict[str, object], ...]
    verdict: GoNoGoVerdict
    held_out_start: str
    held_out_end: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready; inf/nan become "inf"/"-inf"/"nan" (see the module docstring)."""
        tree = {
            "policy": self.policy,
            "held_out_start": self.held_out_start,
            "held_out_end": self.held_out_end,
            "metrics": self.metrics,
            "comparisons": self.comparisons,
            "folds": list(self.folds),
            "verdict": self.verdict.as_dict(),
        }
        return cast(dict[str, object], _json_tree(tree))

    def to_markdown(self) -> str:
        strategies = list(self.metrics)
        metric_names = list(self.metrics[self.policy])
        lines = [
            f"# Evaluation report: {self.policy}",
            "",
            f"Held-out window: {self.held_out_start} to {self.held_out_end} "
            f"({int(self.metrics[self.policy]['n_bars'])} bars).",
            "",
            "## Metrics",
            "",
            "| metric | " + " | ".join(strategies) + " |",
            "|---|" + "---:|" * len(strategies),
        ]
        for metric in metric_names:
            cells = [_fmt(self.metrics[name].get(metric, math.nan), metric) for name in strategies]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        if self.comparisons:
            lines += ["", "## Policy vs baselines", "",
                      "| baseline | sharpe_diff | total_return_diff | max_drawdown_diff | policy beats it |",
                      "|---|---:|---:|---:|:---:|"]
            for name, diff in self.comparisons.items():
                lines.append(
                    f"| {name} | {_fmt(diff['sharpe_diff'])} | {_fmt(diff['total_return_diff'])} | "
                    f"{_fmt(diff['max_drawdown_diff'])} | {'yes' if diff['beats'] else 'no'} |"
                )
        lines += ["", f"## Go/No-Go: {'GO' if self.verdict.passed else 'NO-GO'}", "",
                  "| threshold | value | rule | result |", "|---|---:|---|:---:|"]
        for check in self.verdict.checks:
            lines.append(
                f"| {check.name} | {_fmt(check.value, check.name)} | {check.op} {_fmt(check.threshold, check.name)} | "
                f"{'PASS' if check.passed else 'FAIL'} |"
            )
        lines += ["", "## Walk-forward folds", "",
                  "| fold | start | end | bars | strategy | " + " | ".join(FOLD_METRICS) + " |",
                  "|---:|---|---|---:|---|" + "---:|" * len(FOLD_METRICS)]
        for fold in self.folds:
            per_strategy = cast(dict[str, dict[str, float]], fold["strategies"])
            for name, values in per_strategy.items():
                cells = " | ".join(_fmt(values[m]) for m in FOLD_METRICS)
                lines.append(
                    f"| {fold['index']} | {fold['start']} | {fold['end']} | {fold['n_bars']} | {name} | {cells} |"
                )
        return "\n".join(lines) + "\n"


def _check_aligned(policy: StrategyTrack, baselines: Sequence[StrategyTrack]) -> None:
    names = [policy.name]
    for baseline in baselines:
        if baseline.name in names:
            raise InputShapeError(f"baselines: strategy name {baseline.name!r} is used twice; names must be unique")
        names.append(baseline.name)
        if not baseline.timestamps.equals(policy.timestamps):
            raise InputShapeError(
                f"timestamps (track {baseline.name!r}): must equal the policy's timestamps "
                f"({baseline.n_bars} bars from {baseline.timestamps[0]} vs {policy.n_bars} from {policy.timestamps[0]})"
            )


def _fold_slices(n_bars: int, n_folds: int) -> list[np.ndarray]:
    # Never an empty fold: with fewer bars than folds every bar is its own fold.
    return [part for part in np.array_split(np.arange(n_bars), min(n_folds, n_bars)) if part.size]


def build_report(
    policy: StrategyTrack,
    baselines: Sequence[StrategyTrack],
    benchmark_returns: np.ndarray,
    thresholds: GoNoGoThresholds,
    *,
    n_folds: int,
    periods_per_year: int = TRADING_DAYS_PER_YEAR,
    fallback_name: str | None = None,
) -> EvaluationReport:
    """Metrics of the policy and every baseline on the same held-out bars, the verdict on the policy's metrics,
    comparisons (policy minus baseline; beats = 1.0 when the policy's Sharpe is higher) and n_folds consecutive
    walk-forward windows (np.array_split; never empty)."""
    if n_folds < 1:
        raise InputShapeError(f"n_folds: must be >= 1, got {n_folds}")
    _check_aligned(policy, baselines)
    benchmark = as_float_array("benchmark_returns", benchmark_returns, (policy.n_bars,), ("T",))
    tracks = [policy, *baselines]
    metrics = {track.name: strategy_metrics(track, benchmark, periods_per_year) for track in tracks}
    mine = metrics[policy.name]
    comparisons = {
        baseline.name: {
            "sharpe_diff": mine["sharpe"] - metrics[baseline.name]["sharpe"],
            "total_return_diff": mine["total_return"] - metrics[baseline.name]["total_return"],
            "max_drawdown_diff": mine["max_drawdown"] - metrics[baseline.name]["max_drawdown"],
            "beats": 1.0 if mine["sharpe"] > metrics[baseline.name]["sharpe"] else 0.0,
        }
        for baseline in baselines
    }
    folds: list[dict[str, object]] = []
    for index, part in enumerate(_fold_slices(policy.n_bars, n_folds)):
        folds.append(
            {
                "index": index,
                "start": policy.timestamps[part[0]].isoformat(),
                "end": policy.timestamps[part[-1]].isoformat(),
                "n_bars": int(part.size),
                "strategies": {
                    track.name: {
                        "sharpe": sharpe_ratio(track.returns[part], periods_per_year),
                        "total_return": float(equity_curve(track.returns[part])[-1] - 1.0),
                        "max_drawdown": max_drawdown(track.returns[part]),
                    }
                    for track in tracks
                },
            }
        )
    # The two rules that need more than the policy's own series: its worst fold, and its edge over the benchmark.
    mine["min_fold_sharpe"] = min(float(fold["strategies"][policy.name]["sharpe"]) for fold in folds)  # type: ignore[index]
    mine["sharpe_vs_benchmark"] = mine["sharpe"] - sharpe_ratio(benchmark, periods_per_year)
    if fallback_name is not None:
        mine["sharpe_vs_fallback"] = mine["sharpe"] - metrics[fallback_name]["sharpe"]
    return EvaluationReport(
        policy=policy.name,
        metrics=metrics,
        comparisons=comparisons,
        folds=tuple(folds),
        verdict=go_no_go(mine, thresholds),
        held_out_start=policy.timestamps[0].isoformat(),
        held_out_end=policy.timestamps[-1].isoformat(),
    )


def plot_report(report_tracks: Sequence[StrategyTrack], path: Path, *, title: str) -> Path:
    """Write one PNG: equity curves (from 1.0) on top, drawdown (underwater) curves below, sharing the time axis.

    The start point 1.0 is drawn one bar before the first timestamp. PNG metadata carries no software version,
    so the bytes depend only on the data and the matplotlib rendering.
    """
    if not report_tracks:
        raise InputShapeError("report_tracks: need at least one track to plot")
    import matplotlib  # lazily: training and serving never need it

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure without pyplot keeps no global state between calls (no leaked figures in long processes).
    figure = Figure(figsize=(11, 7), dpi=100)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for track in report_tracks:
        times = track.timestamps
        step = times[1] - times[0] if len(times) >= 2 else np.timedelta64(1, "D")
        x = times.insert(0, times[0] - step)
        equity = np.concatenate([[1.0], equity_curve(track.returns)])
        underwater = equity / np.maximum.accumulate(equity) - 1.0
        top.plot(x, equity, label=track.name, linewidth=1.2)
        bottom.plot(x, underwater * 100.0, label=track.name, linewidth=1.0)
    top.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
    top.set_ylabel("equity (start = 1.0)")
    top.set_title(title)
    top.legend(loc="upper left", fontsize="small")
    top.grid(alpha=0.3)
    bottom.set_ylabel("drawdown (%)")
    bottom.legend(loc="lower left", fontsize="small")
    bottom.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
    logger.info("evaluation plot written to %s", path)
    return path


def write_report(report: EvaluationReport, tracks: Sequence[StrategyTrack], out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and equity.png into out_dir; returns {"json", "markdown", "plot"} -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n")
    markdown_path = out_dir / "report.md"
    markdown_path.write_text(report.to_markdown())
    plot_path = plot_report(
        tracks,
        out_dir / "equity.png",
        title=f"{report.policy}: held-out {report.held_out_start} to {report.held_out_end} "
        f"({'GO' if report.verdict.passed else 'NO-GO'})",
    )
    return {"json": json_path, "markdown": markdown_path, "plot": plot_path}
