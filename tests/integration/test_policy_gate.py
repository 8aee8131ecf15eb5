"""The Go/No-Go gate tells a good policy from a bad one (seeded, the demo's own settings: 20 symbols, 2 years).

Trains with MAPPO on the training part, registers the three policies, and scores them on the held-out part only.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.backtest import constant_master
from agents.evaluation import BUY_AND_HOLD, POLICY, SL_FALLBACK, evaluate_held_out
from agents.export import load_policy
from contracts.config import load_rl_config
from market_data.source import load_market
from marlops import pipeline
from marlops.candidates import env_settings, held_out_episode
from marlops.paths import StatePaths

SEED = 7
REPO = Path(__file__).resolve().parents[2]


def _train_and_validate(preset: str, root: Path) -> tuple[pd.DataFrame, pipeline.RegisteredPolicies,
                                                          pipeline.ValidationResult, pipeline.PipelineContext]:
    ctx = pipeline.PipelineContext.create(StatePaths(root=root, project_root=REPO), load_rl_config())
    bars = load_market(f"synthetic:{preset}", seed=SEED, n_symbols=20, n_days=504)
    pipeline.check_bars(bars)
    spec = pipeline.fit_spec(bars, ctx.config, seed=SEED)
    candidate = pipeline.train_candidate(bars, spec, ctx, training=pipeline.TrainingSettings(seed=SEED, iterations=80))
    registered = pipeline.register_candidate(candidate, ctx)
    return bars, registered, pipeline.validate_candidate(bars, registered, ctx), ctx


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pipeline.RegisteredPolicies,
                                                                 pipeline.ValidationResult, pipeline.PipelineContext]:
    return _train_and_validate("planted-alpha", tmp_path_factory.mktemp("planted"))


def test_gate_when_signal_planted_then_policy_beats_both_baselines_held_out_and_goes(planted) -> None:  # type: ignore[no-untyped-def]
    bars, registered, result, _ = planted
    report = result.evaluation.report
    assert pd.Timestamp(report.held_out_start) >= pd.Timestamp(registered.holdout_start)
    assert report.comparisons[BUY_AND_HOLD]["beats"] == 1.0
    assert report.comparisons[SL_FALLBACK]["beats"] == 1.0
    assert report.verdict.passed, report.to_markdown()
    assert {c.name for c in report.verdict.checks} >= {"min_sharpe", "max_drawdown", "min_profit_factor"}
    assert Path(result.files["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_when_policy_acts_at_random_then_no_go(planted) -> None:  # type: ignore[no-untyped-def]
    bars, registered, _, ctx = planted
    episode, bench = held_out_episode(bars, registered.spec, pd.Timestamp(registered.holdout_start))
    rng = np.random.default_rng(SEED)

    def random_policy(observations: np.ndarray) -> np.ndarray:
        return rng.integers(0, 5, len(observations))

    fallback = load_policy(Path(registered.fallback.artifact))
    evaluation = evaluate_held_out(episode, bench, ctx.config.risk, ctx.config.evaluation, symbol_policy=random_policy,
                                   master_policy=constant_master("normal"), fallback_policy=fallback, settings=env_settings(ctx.config))
    assert not evaluation.report.verdict.passed
    assert evaluation.report.metrics[POLICY]["sharpe"] < evaluation.report.metrics[SL_FALLBACK]["sharpe"]


def test_gate_when_market_has_no_signal_then_trained_policy_is_no_go(tmp_path: Path) -> None:
    _, _, result, _ = _train_and_validate("no-alpha", tmp_path)
    verdict = result.evaluation.report.verdict
    assert not verdict.passed
    assert verdict.failed(), "a NO-GO names the rules that failed"
