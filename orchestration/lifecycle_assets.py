"""The governed lifecycle after staging: paper_trading -> deployment_rfc -> rfc_approval -> canary ->
production_rollout -> post_deployment_review. Each asset calls one marlops.lifecycle function; each gate is a
blocking asset check (orchestration/lifecycle_checks.py), so the UI shows which gate stopped a candidate and why."""

import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field

from marlops import pipeline
from marlops.lifecycle.ab_test import ABTestResult, run_ab_test
from marlops.lifecycle.canary import CanaryResult, run_canary
from marlops.lifecycle.deployment_rfc import prepare_rfc
from marlops.lifecycle.gates import ApprovalGate, approval_gate
from marlops.lifecycle.paper import PaperTradingResult, run_paper_trading
from marlops.lifecycle.review import ReviewResult, run_review
from marlops.lifecycle.rfc import DeploymentRFC, render_markdown
from marlops.lifecycle.rollout import RolloutResult, run_rollout
from orchestration.resources import MarlopsResource

GROUP = "lifecycle"


@asset(group_name=GROUP, kinds={"triton", "fastapi"},
       description="The candidate trades every symbol for N trading days on its own paper account (the incumbent on "
                   "another); production untouched. Gate: positive net return, turnover within the bound.")
def paper_trading(market_feed: pd.DataFrame, market_bars: pd.DataFrame,
                  registered_policy: pipeline.RegisteredPolicies, staging_replay: pipeline.ReplaySummary,
                  marlops: MarlopsResource) -> Output[PaperTradingResult]:
    with marlops.lifecycle() as lc:
        result = run_paper_trading(lc.ctx, lc.store, market_feed, market_bars["timestamp"].max(), registered_policy)
    return Output(result, metadata=result.metadata())


@asset(group_name=GROUP, kinds={"mlflow"},
       description="The deployment RFC: candidate vs production (held-out, staging, paper), the equity/drawdown "
                   "plot, a risk assessment, the rollback plan, artifact digests and signatures.")
def deployment_rfc(market_bars: pd.DataFrame, market_feed: pd.DataFrame,
                   registered_policy: pipeline.RegisteredPolicies, validation_report: pipeline.ValidationResult,
                   staging_replay: pipeline.ReplaySummary, paper_trading: PaperTradingResult,
                   marlops: MarlopsResource) -> Output[DeploymentRFC]:
    with marlops.lifecycle() as lc:
        rfc = prepare_rfc(lc.ctx, lc.store, history=market_bars, feed=market_feed, registered=registered_policy,
                          validation=validation_report, staging=staging_replay, paper=paper_trading)
    return Output(rfc, metadata=rfc_metadata(rfc))


def rfc_metadata(rfc: DeploymentRFC) -> dict[str, object]:
    """What the asset page shows: the RFC rendered as markdown with the equity/drawdown plot inline."""
    return {"rfc_id": rfc.rfc_id, "rfc_digest": rfc.digest, "status": "pending approval",
            "candidate": MetadataValue.json(rfc.candidate), "production": MetadataValue.json(rfc.production or {}),
            "rfc": MetadataValue.md(render_markdown(rfc))}


class ApprovalConfig(Config):  # type: ignore[misc]
    """Launchpad config of `rfc_approval`. Leave `decision` empty to read the decision recorded with
    `marlops rfc approve|reject`. Dagster stores run config in plain text, so give a ONE-TIME approval code
    (`marlops rfc code <RFC-ID>`), not your API token: the code is bound to this RFC's digest and expires."""

    rfc_id: str = Field(default="", description="the RFC to gate (the approval sensor sets it); empty: the latest "
                                                "deployment_rfc")
    decision: str = Field(default="", description="approve | reject | empty (read the recorded decision)")
    credential: str = Field(default="", description="one-time approval code from `marlops rfc code RFC-ID` "
                                                    "(a risk_officer's); an API token also works but is then stored "
                                                    "in Dagster's run config")
    comment: str = Field(default="", description="why; required to reject")


@asset(group_name=GROUP, kinds={"python"},
       description="The risk committee's decision on the RFC: principal and role from a risk_officer token (never a "
                   "typed name), comment, and the RFC digest it binds to. Missing or rejected blocks everything "
                   "downstream.")
def rfc_approval(context: AssetExecutionContext, config: ApprovalConfig, deployment_rfc: DeploymentRFC,
                 marlops: MarlopsResource) -> Output[ApprovalGate]:
    with marlops.lifecycle() as lc:
        rfc = lc.store.rfc(config.rfc_id) if config.rfc_id else deployment_rfc
        gate = approval_gate(lc, rfc, token_store=lc.ctx.paths.token_store, decision=config.decision,
                             credential=config.credential, comment=config.comment)
    if gate.refused_code:
        context.log.warning(f"decision refused: {gate.reason}")
    return Output(gate, metadata=gate.metadata())


@asset(group_name=GROUP, kinds={"triton", "fastapi"},
       description="The candidate on a deterministic, sector-balanced 10% of the symbols through the routing table "
                   "for N trading days; control = the rest on production. A breach moves the canary back within one bar.")
def canary(market_feed: pd.DataFrame, market_bars: pd.DataFrame, registered_policy: pipeline.RegisteredPolicies,
           deployment_rfc: DeploymentRFC, rfc_approval: ApprovalGate, marlops: MarlopsResource) -> Output[CanaryResult]:
    with marlops.lifecycle() as lc:
        # Exactly what the approval names (its RFC's versions), whatever was trained since.
        registered = registered_policy if registered_policy.versions() == rfc_approval.candidate \
            else pipeline.registered_from_registry(lc.ctx, rfc_approval.candidate)
        result = run_canary(lc, market_feed, market_bars["timestamp"].max(), registered, rfc_id=rfc_approval.rfc_id)
    metadata = {**result.metadata(), "health": MetadataValue.json(result.health)}
    if result.shadow:
        metadata["shadow"] = MetadataValue.json(result.shadow)
    return Output(result, metadata=metadata)


@asset(group_name=GROUP, kinds={"mlflow", "triton"},
       description="Alias production -> candidate, last-known-good -> previous; every symbol switched in one routing "
                   "change while Triton serves (failed requests measured); artifacts copied to "
                   "models/rl/production/<date>/.")
def production_rollout(market_bars: pd.DataFrame, canary: CanaryResult,
                       marlops: MarlopsResource) -> Output[RolloutResult]:
    registered = canary.registered  # the candidate whose canary passed, not the latest trained
    if registered is None:
        raise pipeline.PipelineError(f"{canary.rfc_id}: the canary record does not say which candidate ran")
    symbols = list(pipeline.tradable_symbols(market_bars, registered.spec))
    with marlops.lifecycle() as lc:
        held_out = lc.store.rfc(canary.rfc_id).metrics.get("held_out", {}).get("candidate", {})
        result = run_rollout(lc, registered, symbols, rfc_id=canary.rfc_id, principal="lifecycle:production_rollout",
                             reason=f"{canary.rfc_id} approved, canary healthy over {canary.bars} bars",
                             held_out={k: float(v) for k, v in held_out.items() if isinstance(v, (int, float))})
    return Output(result, metadata=result.metadata())


@asset(group_name=GROUP, kinds={"python"},
       description="Two weeks of market time after rollout: performance vs validation, drift, incidents, and an "
                   "archive of logs, metrics snapshot and audit anchors with digests.")
def post_deployment_review(market_feed: pd.DataFrame, production_rollout: RolloutResult,
                           marlops: MarlopsResource) -> Output[ReviewResult]:
    # Judges what the latest rollout put in production (carried by its record), not the latest candidate.
    with marlops.lifecycle() as lc:
        result = run_review(lc, market_feed, production_rollout)
    return Output(result, metadata={**result.metadata(), "incidents_detail": MetadataValue.json(result.incidents)})


@asset(group_name="experiments", kinds={"triton", "fastapi"},
       description="A/B: production (A) and the candidate (B) on sector-balanced halves that swap every "
                   "`ab_test.rotation_days`; P&L per variant and per symbol with a significance test. Its own "
                   "paper account and routing table: production untouched.")
def ab_test(market_feed: pd.DataFrame, market_bars: pd.DataFrame, registered_policy: pipeline.RegisteredPolicies,
            marlops: MarlopsResource) -> Output[ABTestResult]:
    ctx = marlops.pipeline_context()
    result = run_ab_test(ctx, market_feed, market_bars["timestamp"].max(), registered_policy,
                         trading_days=ctx.config.lifecycle.ab_test.trading_days)
    return Output(result, metadata={**result.metadata(), "report": MetadataValue.md(result.report.to_markdown())})
