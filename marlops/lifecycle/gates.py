"""The gates a stage checks before it acts, whoever started it (a Dagster run, a sensor, the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marlops.lifecycle.approval import approval_status, decide_with_credential
from marlops.lifecycle.context import LifecycleContext
from marlops.lifecycle.errors import ApprovalRefusedError, LifecycleError
from marlops.lifecycle.rfc import DeploymentRFC

STAGE = "rfc_approval"


@dataclass(frozen=True)
class ApprovalGate:
    rfc_id: str
    digest: str
    approved: bool
    reason: str
    refused_code: str = ""  # set when this materialization's own decision attempt was refused
    candidate_run_id: str = ""
    candidate: dict[str, str] = field(default_factory=dict)  # agent -> version: what the approval lets through

    def metadata(self) -> dict[str, Any]:
        return {"rfc_id": self.rfc_id, "rfc_digest": self.digest, "approved": self.approved, "reason": self.reason,
                "refused": self.refused_code or "no", "candidate_run_id": self.candidate_run_id,
                "candidate": ", ".join(f"{k} v{v}" for k, v in self.candidate.items())}


def approval_gate(lc: LifecycleContext, rfc: DeploymentRFC, *, token_store: Path, decision: str = "",
                  credential: str = "", comment: str = "", channel: str = "dagster") -> ApprovalGate:
    """Record a decision when one is given (with a one-time approval code or a risk_officer token), then read the
    RFC's approval status. A refused decision is recorded as a refusal and reported, never raised."""
    refused = ""
    reason_prefix = ""
    if decision:
        try:
            decide_with_credential(lc.store, rfc.rfc_id, decision=decision, credential=credential or None,
                                   token_store=token_store, comment=comment, channel=channel,
                                   expected_digest=rfc.digest)
        except ApprovalRefusedError as exc:
            refused, reason_prefix = exc.code, f"decision refused ({exc}); "
    approved, reason = approval_status(lc.store, rfc.rfc_id)
    gate = ApprovalGate(rfc_id=rfc.rfc_id, digest=rfc.digest, approved=approved, reason=reason_prefix + reason,
                        refused_code=refused, candidate_run_id=rfc.candidate_run_id, candidate=dict(rfc.candidate))
    lc.store.set_stage(rfc.candidate_run_id, STAGE, "passed" if approved else "blocked",
                       {"rfc_id": rfc.rfc_id, "reason": gate.reason})
    return gate


def require_approval(lc: LifecycleContext, rfc_id: str) -> None:
    """Canary and rollout refuse to act on an RFC that is not approved now (digest included)."""
    approved, reason = approval_status(lc.store, rfc_id)
    if not approved:
        raise LifecycleError(f"{rfc_id} is not approved: {reason}")
