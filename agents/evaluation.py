"""Held-out evaluation of a trained policy pair against buy-and-hold of the benchmark and the SL fallback.

Every strategy is replayed greedily on the same held-out episode through the same book (gateway rules, costs),
then turned into a `StrategyTrack`; `agents.report.build_report` computes the metrics, the walk-forward folds and
the Go/No-Go verdict from the configured thresholds.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.config import EvaluationConfig, RiskOverlaysConfig

from agents.acting import Policy
from agents.backtest import BacktestResult, constant_master, run_backtest
from agents.environment import EnvSettings, MarketEpisode
from agents.errors import InputShapeError
from agents.performance import StrategyTrack, buy_and_hold_track
from agents.report import EvaluationReport, build_report, write_report

logger = logging.getLogger(__name__)

POLICY = "policy"
SL_FALLBACK = "sl_fallback"
BUY_AND_HOLD = "buy_and_hold_benchmark"


@dataclass(frozen=True)
class Evaluation:
    report: EvaluationReport
    tracks: tuple[StrategyTrack, ...]
    backtests: dict[str, BacktestResult]

    def write(self, out_dir: Path) -> dict[str, Path]:
        return write_report(self.report, self.tracks, out_dir)


def track_of(name: str, result: BacktestResult) -> StrategyTrack:
    return StrategyTrack(
        name=name,
        timestamps=result.timestamps,
        returns=result.returns,
        costs=result.costs,
        turnover=result.turnover,
        weights=result.weights,
    )


def benchmark_returns(episode: MarketEpisode, benchmark_closes: np.ndarray) -> np.ndarray:
    closes = np.asarray(benchmark_closes, dtype=np.float64)
    if closes.shape != (episode.n_steps,) or not np.isfinite(closes).all() or (closes <= 0).any():
        raise InputShapeError(
            f"benchmark_closes: need {episode.n_steps} finite positive closes (one per episode bar), got shape "
            f"{closes.shape}"
        )
    return closes[1:] / closes[:-1] - 1.0


def evaluate_held_out(
    episode: MarketEpisode,
    benchmark_closes: np.ndarray,
    risk: RiskOverlaysConfig,
    evaluation: EvaluationConfig,
    *,
    symbol_policy: Policy,
    master_policy: Policy | None,
    fallback_policy: Policy,
    settings: EnvSettings = EnvSettings(),
    extra_baselines: Sequence[tuple[str, Policy, Policy | None]] = (),
) -> Evaluation:
    """`episode` must hold held-out bars only: the caller splits (see marlops.pipeline); nothing here looks back."""
    bench = benchmark_returns(episode, benchmark_closes)
    runs: dict[str, BacktestResult] = {
        POLICY: run_backtest(episode, risk, symbol_policy, master_policy, settings=settings),
        # The fallback runs as it would in an emergency: sized by the normal preset, no master agent behind it.
        SL_FALLBACK: run_backtest(episode, risk, fallback_policy, constant_master("normal"), settings=settings),
    }
    for name, symbols, master in extra_baselines:
        runs[name] = run_backtest(episode, risk, symbols, master, settings=settings)
    policy_track = track_of(POLICY, runs[POLICY])
    baselines = [buy_and_hold_track(BUY_AND_HOLD, policy_track.timestamps, bench)]
    baselines += [track_of(name, result) for name, result in runs.items() if name != POLICY]
    report = build_report(
        policy_track,
        baselines,
        bench,
        evaluation.go_no_go,
        n_folds=evaluation.walk_forward.n_folds,
        periods_per_year=evaluation.periods_per_year,
        fallback_name=SL_FALLBACK,
    )
    logger.info(
        "held-out evaluation %s..%s: policy sharpe %.2f, fallback %.2f, benchmark %.2f -> %s",
        report.held_out_start[:10], report.held_out_end[:10], report.metrics[POLICY]["sharpe"],
        report.metrics[SL_FALLBACK]["sharpe"], report.metrics[BUY_AND_HOLD]["sharpe"],
        "GO" if report.verdict.passed else "NO-GO",
    )
    return Evaluation(report=report, tracks=(policy_track, *baselines), backtests=runs)
