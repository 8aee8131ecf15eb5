"""Where each candidate got to: stages passed, the outcome and why (the demo's `lifecycle` summary, `marlops
status`)."""

from __future__ import annotations

from typing import Any

from marlops.candidates import RegisteredPolicies
from marlops.lifecycle.context import LifecycleContext
from marlops.lifecycle.store import LifecycleStore

STAGES = ("registration", "validation", "staging", "paper_trading", "deployment_rfc", "rfc_approval", "canary",
          "production_rollout", "post_deployment_review")
# The outcome of a candidate whose furthest stage ended with this status.
_BLOCKED = {"validation": "blocked_at_validation", "staging": "blocked_at_staging",
            "paper_trading": "blocked_at_paper_trading", "deployment_rfc": "blocked_at_rfc",
            "rfc_approval": "blocked_at_approval", "canary": "rolled_back_at_canary",
            "production_rollout": "blocked_at_rollout"}


def record_registration(lc: LifecycleContext, registered: RegisteredPolicies) -> None:
    lc.store.set_stage(registered.run_id, "registration", "passed", {"versions": registered.versions()})


def record_gate(lc: LifecycleContext, run_id: str, stage: str, passed: bool, reason: str,
                detail: dict[str, Any] | None = None) -> None:
    lc.store.set_stage(run_id, stage, "passed" if passed else "blocked", {**(detail or {}), "reason": reason})


def candidate_summary(store: LifecycleStore, run_id: str) -> dict[str, Any]:
    stages = store.stages(run_id)
    versions = dict((stages.get("registration").detail if "registration" in stages else {}).get("versions", {}))
    passed = [s for s in STAGES if s in stages and stages[s].status == "passed"]
    outcome, reason = "in_progress", ""
    rollout = stages.get("production_rollout")
    if rollout is not None and rollout.status == "passed":
        # In production; the review (a warning, not a gate) adds what it found.
        outcome, reason = "production", f"promoted to {rollout.detail.get('production_dir', '')}"
        review = stages.get("post_deployment_review")
        if review is not None:
            found = review.detail.get("reason")
            reason += "; post-deployment review: " + (f"needs attention: {found}" if found else "within expectations")
        return {"run_id": run_id, "versions": versions, "stages_passed": passed, "outcome": outcome, "reason": reason}
    for stage in reversed(STAGES):
        record = stages.get(stage)
        if record is None:
            continue
        if record.status in ("blocked", "rolled_back"):
            outcome, reason = _BLOCKED.get(stage, f"blocked_at_{stage}"), str(record.detail.get("reason", ""))
            if stage == "rfc_approval" and "no decision recorded" in reason:
                outcome = "awaiting_approval"
        elif record.status == "running":
            outcome = f"running_{stage}"
        else:
            outcome = f"passed_{stage}"
        break
    return {"run_id": run_id, "versions": versions, "stages_passed": passed, "outcome": outcome, "reason": reason}
