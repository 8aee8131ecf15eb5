"""The lifecycle stages on the real components (MLflow, signed artifacts, tritonserver, gateway, paper exchanges,
the routing table): paper trading, canary (healthy and planted defect), rollout with zero failed requests,
rollback within one bar during a live replay through the real `marlops rollback` command, review.

One market clock for the module, as in production: paper (5 days) -> canary (2) -> rollout -> the defect's
canary (2) -> rollback replay -> review (10 days after the rollout)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gateway.token_file import bootstrap_token_store, read_token_file
from marlops.candidates import SL_FALLBACK, SYMBOL_AGENT
from marlops.lifecycle.approval import approval_status, decide
from marlops.lifecycle.canary import CanaryResult, run_canary
from marlops.lifecycle.context import LifecycleContext, lifecycle_context
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.paper import PaperTradingResult, run_paper_trading
from marlops.lifecycle.recorder import BarRecorder
from marlops.lifecycle.review import run_review
from marlops.lifecycle.rfc import build_rfc
from marlops.lifecycle.rollout import RolloutResult, run_rollout
from marlops.pipeline import (
    PipelineContext,
    RegisteredPolicies,
    TrainingSettings,
    deploy_to_triton,
    fit_spec,
    history_bars,
    load_bars,
    register_candidate,
    replay_window,
    tradable_symbols,
    train_candidate,
)
from marlops.routing import DEFAULT_ROUTE

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
N_SYMBOLS = 20  # 10% canary = two symbols (of two sectors)


@pytest.fixture(scope="module")
def market(pipeline_ctx: PipelineContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    feed = load_bars("synthetic:planted-alpha", seed=3, n_symbols=N_SYMBOLS, n_days=190)
    return feed, history_bars(feed, pipeline_ctx.config)


def _candidate(ctx: PipelineContext, history: pd.DataFrame, **training: Any) -> RegisteredPolicies:
    spec = fit_spec(history, ctx.config, seed=3)
    candidate = train_candidate(history, spec, ctx, training=TrainingSettings(seed=3, iterations=10, hidden=16,
                                                                             **training))
    registered = register_candidate(candidate, ctx)
    deploy_to_triton(registered, ctx, smoke_test=False)
    return registered


@pytest.fixture(scope="module")
def good(pipeline_ctx: PipelineContext, market: tuple[pd.DataFrame, pd.DataFrame]) -> RegisteredPolicies:
    return _candidate(pipeline_ctx, market[1])


@pytest.fixture(scope="module")
def planted(pipeline_ctx: PipelineContext, market: tuple[pd.DataFrame, pd.DataFrame],
            good: RegisteredPolicies) -> RegisteredPolicies:
    return _candidate(pipeline_ctx, market[1], fault_drill="subset-batch")


@pytest.fixture(scope="module")
def lc(pipeline_ctx: PipelineContext) -> Iterator[LifecycleContext]:
    bootstrap_token_store(pipeline_ctx.paths.token_store, pipeline_ctx.paths.tokens_dir)
    with lifecycle_context(pipeline_ctx) as context:
        yield context


def _rfc(lc: LifecycleContext, registered: RegisteredPolicies) -> Any:
    """An RFC for `registered` (its content is not under test here; tests/marlops/lifecycle cover it)."""
    return lc.store.save_rfc(build_rfc(
        candidate_run_id=registered.run_id, candidate=registered.versions(), production=None,
        metrics={"held_out": {"candidate": {"sharpe": 1.0}}}, risk={"drift": {"status": "ok"}},
        rollback_plan=["marlops rollback"], artifacts={a.agent: {"sha256": a.sha256} for a in registered.agents.values()}))


def _approve(lc: LifecycleContext, registered: RegisteredPolicies) -> str:
    """The RFC of `registered`, approved by the bootstrap risk officer's token."""
    rfc = _rfc(lc, registered)
    token = read_token_file(lc.ctx.paths.tokens_dir / "risk_officer.token")
    decide(lc.store, rfc.rfc_id, decision="approve", token=token, token_store=lc.ctx.paths.token_store,
           comment="integration test", channel="cli", expected_digest=rfc.digest)
    assert approval_status(lc.store, rfc.rfc_id)[0]
    return rfc.rfc_id


@pytest.fixture(scope="module")
def paper(lc: LifecycleContext, market: tuple[pd.DataFrame, pd.DataFrame],
          good: RegisteredPolicies) -> PaperTradingResult:
    feed, history = market
    return run_paper_trading(lc.ctx, lc.store, feed, history["timestamp"].max(), good)


def test_paper_trading_when_run_then_own_account_against_incumbent_and_routing_untouched(
        lc: LifecycleContext, paper: PaperTradingResult, good: RegisteredPolicies) -> None:
    assert lc.routing.revision() == 0  # the project's routing table was not touched
    assert paper.window.trading_days == 5 and len(paper.timestamps) == 5
    assert set(paper.checks) == {"net_return", "turnover", "traded_every_day"}
    assert paper.checks["traded_every_day"]["passed"]
    assert paper.incumbent_info.label.startswith("sl_fallback")  # no production yet
    assert len(paper.curves["candidate"]) == 6 and paper.curves["candidate"][0] == pytest.approx(1_000_000.0)
    assert len(paper.final_positions) == N_SYMBOLS  # the RFC's concentration reads the final book
    record = lc.store.stages(good.run_id)["paper_trading"]
    assert record.status == ("passed" if paper.passed else "blocked")
    assert lc.store.clock() is None  # a separate account: the market clock is production's


def test_rfc_when_built_from_the_stages_then_complete_with_plot_risk_and_signed_artifacts(
        lc: LifecycleContext, market: tuple[pd.DataFrame, pd.DataFrame], good: RegisteredPolicies,
        paper: PaperTradingResult) -> None:
    from marlops.lifecycle.deployment_rfc import prepare_rfc
    from marlops.lifecycle.rfc import rfc_digest
    from marlops.pipeline import run_replay, validate_candidate

    feed, history = market
    validation = validate_candidate(history, good, lc.ctx)
    staging = run_replay(history, good, lc.ctx, replay_days=3)
    rfc = prepare_rfc(lc.ctx, lc.store, history=history, feed=feed, registered=good, validation=validation,
                      staging=staging, paper=paper)
    assert set(rfc.metrics) == {"held_out", "staging", "paper"} and "sl_fallback" in rfc.metrics["paper"]
    assert rfc.equity_plot_png and rfc.equity_plot_png.startswith(b"\x89PNG")
    assert rfc.risk["drift"]["status"] in ("ok", "drift")
    concentration = rfc.risk["concentration"]
    assert concentration["positions"] == sum(1 for v in paper.final_positions.values() if v)
    assert (concentration["herfindahl_of_final_positions"] > 0) == (concentration["positions"] > 0)
    assert all(a["signature"] and a["sha256"] for a in rfc.artifacts.values())
    assert rfc_digest(rfc) == rfc.digest and lc.store.latest_rfc(good.run_id) == rfc


@pytest.fixture(scope="module")
def canary(lc: LifecycleContext, market: tuple[pd.DataFrame, pd.DataFrame], good: RegisteredPolicies,
           paper: PaperTradingResult) -> CanaryResult:
    feed, history = market
    return run_canary(lc, feed, history["timestamp"].max(), good, rfc_id=_approve(lc, good))


def test_canary_when_not_approved_then_refused_before_any_routing_change(
        lc: LifecycleContext, market: tuple[pd.DataFrame, pd.DataFrame], planted: RegisteredPolicies,
        canary: CanaryResult) -> None:
    revision = lc.routing.revision()
    with pytest.raises(LifecycleError, match="not approved"):
        run_canary(lc, market[0], market[1]["timestamp"].max(), planted, rfc_id=_rfc(lc, planted).rfc_id)
    assert lc.routing.revision() == revision


def test_canary_when_candidate_healthy_then_cohort_on_candidate_and_gate_passes(
        lc: LifecycleContext, canary: CanaryResult, good: RegisteredPolicies) -> None:
    assert canary.healthy, canary.reasons
    assert len(canary.cohort) == 2 and canary.bars == 2
    table = lc.routing.read()
    assert table.route_for(canary.cohort[0]).variant == "candidate"
    assert table.policies["candidate"].version == good.symbol.triton_version
    # The control shadows the candidate: its would-be trades went through the pure rules.
    assert canary.shadow.get("symbol_bars", 0) > 0, canary.shadow
    assert lc.store.stages(good.run_id)["canary"].status == "passed"


@pytest.fixture(scope="module")
def rollout(lc: LifecycleContext, market: tuple[pd.DataFrame, pd.DataFrame], good: RegisteredPolicies,
            canary: CanaryResult) -> RolloutResult:
    symbols = list(tradable_symbols(market[1], good.spec))
    return run_rollout(lc, good, symbols, rfc_id=canary.rfc_id, principal="integration-test", reason="canary healthy")


def test_rollout_when_canary_healthy_then_zero_failed_requests_aliases_and_production_dir(
        lc: LifecycleContext, rollout: RolloutResult, good: RegisteredPolicies, pipeline_ctx: PipelineContext) -> None:
    assert rollout.failed_requests == 0, rollout.failures
    assert rollout.requests > 50 and rollout.requests_after_switch >= 20
    assert pipeline_ctx.registry.aliases(SYMBOL_AGENT)["production"] == good.symbol.version
    table = lc.routing.read()
    assert table.revision == rollout.routing_revision
    assert table.policies["production"].version == good.symbol.triton_version
    assert "candidate" not in table.policies and set(table.routes) == {DEFAULT_ROUTE}
    directory = pipeline_ctx.paths.artifacts_root / rollout.promotion["directory"]
    assert (directory / "promotion.json").is_file() and (directory / f"{SYMBOL_AGENT}.ptc").is_file()
    assert directory.parent.name == "production"


def test_canary_when_candidate_has_planted_defect_then_back_on_production_within_one_bar(
        lc: LifecycleContext, market: tuple[pd.DataFrame, pd.DataFrame], planted: RegisteredPolicies,
        rollout: RolloutResult) -> None:
    feed, history = market
    result = run_canary(lc, feed, history["timestamp"].max(), planted, rfc_id=_approve(lc, planted))
    assert not result.healthy
    # Certain of the largest position on every cohort symbol: the collapsed action distribution, at the first bar.
    assert any(r.startswith("MODEL_ACTION_COLLAPSE") for r in result.reasons), result.reasons
    assert result.breach_bar == lc.store.bars(f"canary:{planted.run_id}")[0].bar_index
    assert result.breach_bar is not None and result.bars_on_candidate_after_breach == 0
    bars = lc.store.bars(f"canary:{planted.run_id}")
    assert [b.bar_index for b in bars if b.of_variant("candidate")] == [result.breach_bar]  # one bar, no more
    table = lc.routing.read()
    assert "candidate" not in table.policies and table.route_for(result.cohort[0]).variant == "production"
    assert lc.routing.history(1)[0]["principal"] == "sensor:canary_health"
    assert [e.kind for e in lc.store.events(candidate_run_id=planted.run_id)].count("canary_rolled_back") == 1
    assert lc.store.stages(planted.run_id)["canary"].status == "rolled_back"


def _marlops(*args: str, home: Path, state_url: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MARLOPS_HOME=str(home), MARLOPS_STATE_URL=state_url)
    return subprocess.run([sys.executable, "-m", "marlops.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_rollback_when_no_last_known_good_then_refused_and_nothing_changed(
        lc: LifecycleContext, rollout: RolloutResult, pipeline_ctx: PipelineContext) -> None:
    revision = lc.routing.revision()
    done = _marlops("rollback", "--reason", "drill", home=pipeline_ctx.paths.root, state_url=pipeline_ctx.paths.state_url)
    assert done.returncode == 2, done.stderr
    assert "last-known-good" in done.stderr and lc.routing.revision() == revision


def test_rollback_when_issued_during_live_replay_then_every_symbol_moves_at_the_next_bar(
        lc: LifecycleContext, market: tuple[pd.DataFrame, pd.DataFrame], good: RegisteredPolicies,
        rollout: RolloutResult, pipeline_ctx: PipelineContext) -> None:
    feed, _ = market
    start = pd.Timestamp(lc.store.clock())
    stamps = sorted(t for t in feed["timestamp"].unique() if t > start)[:4]
    paused, resume = threading.Event(), threading.Event()
    recorder = BarRecorder()

    def on_step(outcome: Any) -> None:
        recorder(outcome)
        if outcome.bar_index == 1:  # the trading service is between bars 1 and 2: roll back now
            paused.set()
            assert resume.wait(120)

    runner = threading.Thread(target=lambda: replay_window(
        feed, pipeline_ctx, start=stamps[0], end=stamps[-1], routing=lc.routing, spec=good.spec, name="live",
        on_step=on_step, run_dir=pipeline_ctx.paths.root / "rollback-replay"), daemon=True)
    runner.start()
    try:
        assert paused.wait(180), "the replay did not reach bar 1"
        done = _marlops("rollback", "--to", "sl_fallback", "--reason", "drill during live replay",
                        home=pipeline_ctx.paths.root, state_url=pipeline_ctx.paths.state_url)
        assert done.returncode == 0, done.stderr
    finally:
        resume.set()
        runner.join(180)
    by_bar = {r.bar_index: {s.policy_version.split("/")[0] for s in r.symbols} for r in recorder.records}
    assert by_bar[0] == by_bar[1] == {SYMBOL_AGENT}
    assert by_bar[2] == by_bar[3] == {SL_FALLBACK}  # every symbol, from the very next bar
    history = lc.routing.history(1)[0]
    assert history["principal"] == "local-risk-officer"  # the token's principal, audited
    assert "drill during live replay" in history["reason"]
    assert lc.store.events(kind="rollback")[-1].detail["to"] == "sl_fallback"


def test_review_when_two_weeks_after_rollout_then_archive_with_digests(
        lc: LifecycleContext, market: tuple[pd.DataFrame, pd.DataFrame], rollout: RolloutResult) -> None:
    review = run_review(lc, market[0], rollout)
    assert review.window.trading_days == 10
    assert review.window.start > pd.Timestamp(rollout.market_time)
    archive = Path(review.archive)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == review.digests["archive"]
    assert {"metrics_snapshot.json", "audit_anchors.json"} <= set(review.digests)
    assert any(i["kind"] == "canary_rolled_back" for i in review.incidents)
    assert review.drift["status"] in ("ok", "drift")
    assert lc.store.stages(rollout.candidate_run_id)["post_deployment_review"].status == (
        "passed" if review.passed else "blocked")


def test_rollout_when_rfc_not_approved_then_refused(lc: LifecycleContext, planted: RegisteredPolicies) -> None:
    with pytest.raises(LifecycleError):
        run_rollout(lc, replace(planted), ["SYM00"], rfc_id="RFC-none", principal="t", reason="t")


def test_ab_test_when_halves_rotate_then_every_symbol_ran_both_variants_and_report_says_significance(
        lc: LifecycleContext, market: tuple[pd.DataFrame, pd.DataFrame], good: RegisteredPolicies,
        planted: RegisteredPolicies, rollout: RolloutResult) -> None:
    from marlops.lifecycle.ab_test import run_ab_test

    feed, history = market
    revision = lc.routing.revision()
    result = run_ab_test(lc.ctx, feed, history["timestamp"].max(), good, trading_days=4)
    assert result.rotations == 4 and result.a.label.startswith("production")
    assert set(result.report.variants) == {"A", "B"}
    both = [s for s, pnl in result.report.per_symbol.items() if set(pnl) == {"A", "B"}]
    assert len(both) == N_SYMBOLS  # the halves swapped: every symbol traded under each variant
    assert "significant" in result.report.conclusion
    assert lc.routing.revision() == revision  # production's routing untouched
