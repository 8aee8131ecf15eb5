"""The whole spine on the real components: MLflow, signed artifacts, tritonserver, gateway, paper exchange."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.backtest import run_backtest
from agents.export import load_policy
from features.observation import ObservationBuilder
from marlops.candidates import env_settings, episode_of

from marlops.pipeline import (
    PipelineContext,
    RegisteredPolicies,
    ReplaySummary,
    TrainingSettings,
    deploy_to_triton,
    fit_spec,
    load_bars,
    register_candidate,
    run_replay,
    train_candidate,
)

pytestmark = pytest.mark.integration
REPLAY_DAYS = 8
N_SYMBOLS = 6


@pytest.fixture(scope="module")
def pipeline_ctx(pipeline_ctx: PipelineContext) -> PipelineContext:
    """The shared context without drift halts: this module proves the backtest and the live loop make the same
    trades, and the backtest has no drift monitor. (A policy trained on ~100 bars meets volatility levels 8 sigma
    from its training in its replay window, and the monitor rightly halts it: tests/integration/
    test_data_safety_replay.py is where that is proven.)"""
    drift = pipeline_ctx.config.drift.model_copy(update={"key_features": {}})
    return dataclasses.replace(pipeline_ctx, config=pipeline_ctx.config.model_copy(update={"drift": drift}))


@pytest.fixture(scope="module")
def spine(pipeline_ctx: PipelineContext) -> tuple[object, RegisteredPolicies]:
    bars = load_bars("synthetic:planted-alpha", seed=3, n_symbols=N_SYMBOLS, n_days=160)
    spec = fit_spec(bars, pipeline_ctx.config, seed=3)
    candidate = train_candidate(bars, spec, pipeline_ctx, training=TrainingSettings(seed=3, iterations=12, hidden=16))
    registered = register_candidate(candidate, pipeline_ctx)
    deploy_to_triton(registered, pipeline_ctx, smoke_test=False)
    return bars, registered


@pytest.fixture(scope="module")
def replay(spine: tuple[object, RegisteredPolicies], pipeline_ctx: PipelineContext) -> ReplaySummary:
    bars, registered = spine
    return run_replay(bars, registered, pipeline_ctx, replay_days=REPLAY_DAYS)  # type: ignore[arg-type]


def test_register_when_candidate_trained_then_signed_versions_with_aliases(
        spine: tuple[object, RegisteredPolicies], pipeline_ctx: PipelineContext) -> None:
    _, registered = spine
    for agent in registered.agents.values():
        artifact = Path(agent.artifact)
        # Candidates are signed into models/rl/candidates/<run>/; only a rollout writes models/rl/production/.
        assert artifact.parent.parent.name == "candidates" and artifact.parent.name == registered.run_id
        assert artifact.name == f"{agent.agent}.ptc"
        assert artifact.with_suffix(".manifest.sig").is_file()
        resolved = pipeline_ctx.registry.resolve(agent.agent, "candidate")
        assert resolved.version == agent.version and resolved.sha256 == agent.sha256


def test_replay_when_stack_runs_then_every_order_reached_exchange_and_audit_matches(replay: ReplaySummary) -> None:
    assert replay.trading_days == REPLAY_DAYS
    assert replay.decisions == REPLAY_DAYS * N_SYMBOLS
    assert replay.orders_submitted > 0
    assert replay.orders_at_exchange == replay.orders_submitted
    assert replay.orders_filled == replay.orders_submitted
    assert replay.audit_by_kind.get("fill", 0) == replay.orders_filled
    assert replay.audit_by_kind.get("decision", 0) >= replay.trading_days
    assert replay.audit_by_kind.get("directive", 0) == replay.directives >= 1
    assert replay.audit_chain_ok
    assert replay.decision_latency_ms["p50"] > 0


def test_replay_when_same_data_replayed_again_then_same_observations_and_decisions(
        spine: tuple[object, RegisteredPolicies], pipeline_ctx: PipelineContext, replay: ReplaySummary) -> None:
    bars, registered = spine
    again = run_replay(bars, registered, pipeline_ctx, replay_days=REPLAY_DAYS)  # type: ignore[arg-type]
    assert again.observation_checksums == replay.observation_checksums
    assert again.orders_submitted == replay.orders_submitted
    assert again.final_equity == pytest.approx(replay.final_equity)


def test_backtest_when_same_bars_and_policies_then_same_trades_as_live_replay(
        spine: tuple[object, RegisteredPolicies], replay: ReplaySummary, pipeline_ctx: PipelineContext) -> None:
    """The backtest book runs the gateway's own rules: replaying the staging window offline gives the same orders
    and, fill for fill, the same book equity as the real Triton + gateway + paper exchange run."""
    bars, registered = spine
    window = np.sort(bars["timestamp"].unique())[-REPLAY_DAYS:]  # type: ignore[index]
    tensors = ObservationBuilder(registered.spec).training_tensors(bars)  # type: ignore[arg-type]
    keep = np.flatnonzero(tensors.timestamps >= pd.Timestamp(window[0]))
    result = run_backtest(episode_of(tensors, registered.spec, keep), pipeline_ctx.config.risk,
                          load_policy(Path(registered.symbol.artifact)), load_policy(Path(registered.master.artifact)),
                          settings=env_settings(pipeline_ctx.config), trade_last_bar=True)
    assert len(result.orders) == replay.orders_submitted
    assert result.final_book_equity == pytest.approx(replay.final_equity, rel=1e-9)
