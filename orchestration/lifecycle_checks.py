"""One blocking check per lifecycle gate: a failed gate stops everything downstream, and the UI says which and why."""

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from marlops.lifecycle.canary import CanaryResult
from marlops.lifecycle.gates import ApprovalGate
from marlops.lifecycle.paper import PaperTradingResult
from marlops.lifecycle.review import ReviewResult
from marlops.lifecycle.rfc import DeploymentRFC, rfc_digest
from marlops.lifecycle.rollout import RolloutResult
from orchestration.lifecycle_assets import (
    canary,
    deployment_rfc,
    paper_trading,
    post_deployment_review,
    production_rollout,
    rfc_approval,
)

PAPER_GATES = ("net_return", "turnover", "traded_every_day")


def _paper_check(gate: str) -> object:
    @asset_check(asset=paper_trading, name=f"paper_{gate}", blocking=True,
                 description=f"Paper-trading gate `{gate}` (config/rl/lifecycle.yaml paper_trading).")
    def _check(paper_trading: PaperTradingResult) -> AssetCheckResult:
        c = paper_trading.checks[gate]
        return AssetCheckResult(passed=bool(c["passed"]), severity=AssetCheckSeverity.ERROR,
                                metadata={"value": float(c["value"]), "threshold": float(c["threshold"]),
                                          "detail": str(c["detail"])})

    return _check


paper_checks = [_paper_check(g) for g in PAPER_GATES]


REQUIRED_SECTIONS = ("held_out", "staging", "paper")


@asset_check(asset=deployment_rfc, blocking=True,
             description="The RFC is complete: every metrics section, a risk assessment, a rollback plan, a signature "
                         "for every artifact, the plot, and a digest that matches its content.")
def rfc_is_complete(deployment_rfc: DeploymentRFC) -> AssetCheckResult:
    problems = [f"metrics section {s!r} missing" for s in REQUIRED_SECTIONS if not deployment_rfc.metrics.get(s)]
    problems += [f"risk assessment lacks {k!r}" for k in ("guardrail_headroom", "drift", "cost_ratio", "concentration")
                 if k not in deployment_rfc.risk]
    problems += ["no rollback plan"] if not deployment_rfc.rollback_plan else []
    problems += [f"{agent}: no signature" for agent, a in deployment_rfc.artifacts.items() if not a.get("signature")]
    problems += ["no equity/drawdown plot"] if not deployment_rfc.equity_plot_png else []
    problems += ["digest does not match the content"] if rfc_digest(deployment_rfc) != deployment_rfc.digest else []
    return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR,
                            metadata={"problems": "; ".join(problems) or "none", "rfc_id": deployment_rfc.rfc_id})


@asset_check(asset=rfc_approval, blocking=True,
             description="Approved by a risk_officer token, for this RFC's digest. Missing, rejected, refused or void "
                         "(the candidate changed) blocks the canary and everything after it.")
def rfc_is_approved(rfc_approval: ApprovalGate) -> AssetCheckResult:
    return AssetCheckResult(passed=rfc_approval.approved, severity=AssetCheckSeverity.ERROR,
                            metadata={"rfc_id": rfc_approval.rfc_id, "reason": rfc_approval.reason,
                                      "rfc_digest": rfc_approval.digest})


@asset_check(asset=canary, blocking=True,
             description="Canary vs control on P&L per unit risk, cost ratio, latency, drawdown, error and denial rate "
                         "(docs/lifecycle.md states the rules); any breach rolls the canary back and fails this gate.")
def canary_is_healthy(canary: CanaryResult) -> AssetCheckResult:
    return AssetCheckResult(passed=canary.healthy, severity=AssetCheckSeverity.ERROR,
                            metadata={"reasons": "; ".join(canary.reasons) or "none", "bars": canary.bars,
                                      "cohort": ", ".join(canary.cohort),
                                      "bars_on_candidate_after_breach": canary.bars_on_candidate_after_breach,
                                      "health": MetadataValue.json(canary.health)})


@asset_check(asset=production_rollout, blocking=True,
             description="Zero failed inference requests while the routing table switched production.")
def rollout_had_zero_failed_requests(production_rollout: RolloutResult) -> AssetCheckResult:
    return AssetCheckResult(passed=production_rollout.failed_requests == 0, severity=AssetCheckSeverity.ERROR,
                            metadata={"requests": production_rollout.requests,
                                      "failed_requests": production_rollout.failed_requests,
                                      "failures": "; ".join(production_rollout.failures[:5]) or "none"})


@asset_check(asset=post_deployment_review, blocking=False,
             description="Live performance within the allowed shortfall of validation and no feature drift.")
def review_is_within_expectations(post_deployment_review: ReviewResult) -> AssetCheckResult:
    return AssetCheckResult(passed=post_deployment_review.passed, severity=AssetCheckSeverity.WARN,
                            metadata={"reasons": "; ".join(post_deployment_review.reasons) or "none",
                                      "archive": post_deployment_review.archive})


lifecycle_checks = [*paper_checks, rfc_is_complete, rfc_is_approved, canary_is_healthy,
                    rollout_had_zero_failed_requests, review_is_within_expectations]
