"""Approve or reject a deployment RFC: only a risk_officer's token (or a one-time code issued with one) may.

    decide(store, "RFC-4-1a2b3c4d", decision="approve", token=token, token_store=paths.token_store,
           comment="within limits", channel="cli", expected_digest=digest_the_officer_read)
    code = issue_approval_code(store, rfc_id, token=token, token_store=...)      # for the Dagster Launchpad
    decide_with_credential(store, rfc_id, decision="approve", credential=code, ...)
    approved, reason = approval_status(store, rfc_id)                           # the blocking check

The principal and role come from the token's grant in the token store (hashed tokens, gateway.token_file),
never from what the caller says. A decision is final and names the digest it decided on; a changed candidate
(a new RFC of the same candidate run) voids it. Every refusal raises ApprovalRefusedError and is recorded as
an `approval_refused` event (code, reason, principal when known else "anonymous"; never the token or code).

Approval codes exist because Dagster stores Launchpad run config in plain text: a raw API token pasted there
would leak; a code is single use, expires (30 minutes by default), and is stored only as its sha256.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.settings import ApiToken
from gateway.token_file import TokenFileError, load_tokens
from gateway.tokens import grant_for
from marlops.lifecycle.errors import ApprovalRefusedError
from marlops.lifecycle.store import (
    DECISIONS,
    ApprovalCode,
    ApprovalDecision,
    LifecycleStore,
)

logger = logging.getLogger(__name__)

APPROVER_ROLES = ("risk_officer",)  # ONLY risk_officer may approve or reject (not admin)
CODE_PREFIX = "apc_"
DEFAULT_CODE_TTL_S = 1800
CLOSED_STATUSES = ("superseded", "deployed", "rolled_back")
ANONYMOUS = "anonymous"


def _now(now: datetime | None) -> datetime:
    moment = now or datetime.now(UTC)
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _refuse(store: LifecycleStore, rfc_id: str, code: str, message: str, *, principal: str | None,
            action: str, channel: str) -> ApprovalRefusedError:
    """Record the refusal (never a token or code) and return the error to raise."""
    run_id = ""
    try:
        run_id = store.rfc_summary(rfc_id).candidate_run_id
    except Exception:  # noqa: BLE001 - an unknown RFC still gets its refusal recorded
        run_id = ""
    store.record_event("approval_refused", principal=principal or ANONYMOUS, candidate_run_id=run_id,
                       detail={"rfc_id": rfc_id, "code": code, "reason": message, "action": action,
                               "channel": channel})
    logger.warning("%s on %s refused for %s: %s: %s", action, rfc_id, principal or ANONYMOUS, code, message)
    return ApprovalRefusedError(code, message)


def _grant(store: LifecycleStore, rfc_id: str, token: str | None, token_store: Path, *, action: str,
           channel: str) -> ApiToken:
    """The token's grant, if it is a risk_officer's; a recorded refusal otherwise."""
    if token is None or not token.strip():
        raise _refuse(store, rfc_id, "NO_TOKEN", f"{action} needs a {' or '.join(APPROVER_ROLES)} token",
                      principal=None, action=action, channel=channel)
    try:
        grants = load_tokens(token_store)
    except TokenFileError as exc:
        raise _refuse(store, rfc_id, "NO_TOKEN_STORE", f"cannot check the token: {exc}", principal=None,
                      action=action, channel=channel) from exc
    grant = grant_for(grants, token.strip())
    if grant is None:
        raise _refuse(store, rfc_id, "UNKNOWN_TOKEN", f"the token is not in the token store {token_store}",
                      principal=None, action=action, channel=channel)
    if grant.role not in APPROVER_ROLES:
        raise _refuse(store, rfc_id, "ROLE_NOT_ALLOWED",
                      f"{grant.principal} has role {grant.role}; only {' or '.join(APPROVER_ROLES)} may approve or "
                      "reject a deployment RFC", principal=grant.principal, action=action, channel=channel)
    return grant


def _open_rfc_problem(store: LifecycleStore, rfc_id: str, expected_digest: str | None) -> tuple[str, str] | None:
    """(code, reason) why `rfc_id` cannot be decided now, or None. RfcNotFoundError when there is no such RFC."""
    rfc = store.rfc(rfc_id)
    status = store.rfc_status(rfc_id)
    if expected_digest is not None and expected_digest.strip() != rfc.digest:
        return "STALE_DIGEST", (f"you reviewed digest {expected_digest.strip()[:12]} but {rfc_id} has digest "
                                f"{rfc.digest[:12]}; review it again (`marlops rfc show {rfc_id}`)")
    latest = store.latest_rfc(rfc.candidate_run_id)
    if latest is not None and latest.rfc_id != rfc_id:
        return "STALE_DIGEST", (f"{rfc_id} is no longer the latest RFC of candidate run {rfc.candidate_run_id}: "
                                f"the candidate changed, see {latest.rfc_id}")
    if status in CLOSED_STATUSES:
        return "RFC_CLOSED", f"{rfc_id} is {status}; it cannot be decided"
    previous = store.decisions(rfc_id)
    if status != "pending" or previous:
        last = previous[-1] if previous else None
        by = f" by {last.principal} ({last.role}) at {last.decided_at}" if last is not None else ""
        return "RFC_CLOSED", (f"{rfc_id} is already {status}{by}; a decision is final (a rejected candidate needs "
                              "a new candidate and a new RFC)")
    return None


def _decide_as(store: LifecycleStore, rfc_id: str, *, decision: str, principal: str, role: str, comment: str,
               channel: str, expected_digest: str | None, now: datetime | None,
               code_sha256: str | None = None) -> ApprovalDecision:
    action = decision
    if decision == "reject" and not (comment or "").strip():
        raise _refuse(store, rfc_id, "EMPTY_COMMENT", "a rejection needs a reason: give a comment",
                      principal=principal, action=action, channel=channel)
    problem = _open_rfc_problem(store, rfc_id, expected_digest)
    if problem is not None:
        raise _refuse(store, rfc_id, *problem, principal=principal, action=action, channel=channel)
    rfc = store.rfc(rfc_id)
    record = ApprovalDecision(rfc_id=rfc_id, rfc_digest=rfc.digest, decision=decision, principal=principal,
                              role=role, comment=(comment or "").strip(), decided_at=_iso(_now(now)), channel=channel)
    try:
        return store.record_decision(record, consume_code_sha256=code_sha256)
    except ApprovalRefusedError as exc:  # lost a race: re-checked in the store's transaction
        raise _refuse(store, rfc_id, exc.code, str(exc).removeprefix(f"{exc.code}: "), principal=principal,
                      action=action, channel=channel) from exc


def _check_decision(store: LifecycleStore, rfc_id: str, decision: str, channel: str) -> None:
    if decision not in DECISIONS:
        raise _refuse(store, rfc_id, "INVALID_DECISION", f"decision must be one of {', '.join(DECISIONS)}, "
                                                         f"got {decision!r}", principal=None, action=str(decision),
                      channel=channel)


def decide(store: LifecycleStore, rfc_id: str, *, decision: str, token: str | None, token_store: Path,
           comment: str, channel: str, expected_digest: str | None = None,
           now: datetime | None = None) -> ApprovalDecision:
    """Approve or reject `rfc_id` with an API token (see the module docstring). ApprovalRefusedError (recorded)
    when refused; RfcNotFoundError when there is no such RFC."""
    _check_decision(store, rfc_id, decision, channel)
    grant = _grant(store, rfc_id, token, Path(token_store), action=decision, channel=channel)
    return _decide_as(store, rfc_id, decision=decision, principal=grant.principal, role=grant.role, comment=comment,
                      channel=channel, expected_digest=expected_digest, now=now)


def issue_approval_code(store: LifecycleStore, rfc_id: str, *, token: str | None, token_store: Path,
                        ttl_s: int = DEFAULT_CODE_TTL_S, now: datetime | None = None) -> str:
    """A one-time code ("apc_...") that decides `rfc_id` as the token's risk_officer, valid `ttl_s` seconds and only
    while the RFC keeps its digest. Only its sha256 is stored. Show it once; it is never logged."""
    if ttl_s <= 0:
        raise ApprovalRefusedError("INVALID_TTL", f"ttl_s must be > 0, got {ttl_s}")
    grant = _grant(store, rfc_id, token, Path(token_store), action="issue_code", channel="cli")
    problem = _open_rfc_problem(store, rfc_id, None)
    if problem is not None:
        raise _refuse(store, rfc_id, *problem, principal=grant.principal, action="issue_code", channel="cli")
    rfc = store.rfc(rfc_id)
    issued = _now(now)
    code = CODE_PREFIX + secrets.token_urlsafe(24)
    store.save_approval_code(ApprovalCode(
        code_sha256=hash_code(code), rfc_id=rfc_id, rfc_digest=rfc.digest, principal=grant.principal, role=grant.role,
        issued_at=_iso(issued), expires_at=_iso(issued + timedelta(seconds=ttl_s)), used_at=None))
    return code


def decide_with_credential(store: LifecycleStore, rfc_id: str, *, decision: str, credential: str | None,
                           token_store: Path, comment: str, channel: str, expected_digest: str | None = None,
                           now: datetime | None = None) -> ApprovalDecision:
    """Like `decide`, with either an API token or a one-time approval code ("apc_..."). A code is consumed in the
    decision's transaction; refusals: UNKNOWN_CODE (unknown, or issued for another RFC), CODE_EXPIRED, CODE_USED,
    STALE_DIGEST (the RFC changed since), CODE_REVOKED (its principal no longer holds a risk_officer token)."""
    raw = (credential or "").strip()
    if not raw.startswith(CODE_PREFIX):
        return decide(store, rfc_id, decision=decision, token=raw or None, token_store=token_store, comment=comment,
                      channel=channel, expected_digest=expected_digest, now=now)
    _check_decision(store, rfc_id, decision, channel)
    digest = hash_code(raw)
    code = store.approval_code(digest)
    if code is None or not hmac.compare_digest(code.code_sha256, digest):
        raise _refuse(store, rfc_id, "UNKNOWN_CODE", "this approval code was never issued; get one with "
                      f"`marlops rfc code {rfc_id}`", principal=None, action=decision, channel=channel)
    if code.rfc_id != rfc_id:
        raise _refuse(store, rfc_id, "UNKNOWN_CODE", f"this approval code was issued for {code.rfc_id}, not {rfc_id}",
                      principal=code.principal, action=decision, channel=channel)
    if code.used_at is not None:
        raise _refuse(store, rfc_id, "CODE_USED", f"this approval code was used at {code.used_at}; codes are single use",
                      principal=code.principal, action=decision, channel=channel)
    if _now(now) >= datetime.fromisoformat(code.expires_at):
        raise _refuse(store, rfc_id, "CODE_EXPIRED", f"this approval code expired at {code.expires_at}; get a new one "
                      f"with `marlops rfc code {rfc_id}`", principal=code.principal, action=decision, channel=channel)
    if code.rfc_digest != store.rfc(rfc_id).digest:
        raise _refuse(store, rfc_id, "STALE_DIGEST", f"the code was issued for digest {code.rfc_digest[:12]}, which "
                      "is no longer the RFC's", principal=code.principal, action=decision, channel=channel)
    try:
        still = any(g.principal == code.principal and g.role in APPROVER_ROLES for g in load_tokens(token_store))
    except TokenFileError as exc:
        raise _refuse(store, rfc_id, "NO_TOKEN_STORE", f"cannot check the code's principal: {exc}",
                      principal=code.principal, action=decision, channel=channel) from exc
    if not still:
        raise _refuse(store, rfc_id, "CODE_REVOKED", f"{code.principal} no longer holds a "
                      f"{' or '.join(APPROVER_ROLES)} token in {token_store}", principal=code.principal,
                      action=decision, channel=channel)
    return _decide_as(store, rfc_id, decision=decision, principal=code.principal, role=code.role, comment=comment,
                      channel=channel, expected_digest=expected_digest or code.rfc_digest, now=now,
                      code_sha256=digest)


def approval_status(store: LifecycleStore, rfc_id: str) -> tuple[bool, str]:
    """(approved?, reason) for the blocking check: approved only when the latest decision is "approve", of the
    RFC's digest, and the RFC is still the latest of its candidate run. RfcNotFoundError for an unknown id."""
    rfc = store.rfc(rfc_id)
    decisions = store.decisions(rfc_id)
    last = decisions[-1] if decisions else None
    latest = store.latest_rfc(rfc.candidate_run_id)
    if latest is not None and latest.rfc_id != rfc_id:
        if last is not None and last.decision == "approve":
            return False, (f"approval of digest {last.rfc_digest[:12]} is void: the RFC is now {latest.digest[:12]} "
                           f"({latest.rfc_id}: the candidate changed); it needs a new approval")
        return False, f"{rfc_id} is superseded by {latest.rfc_id} (the candidate changed)"
    if last is None:
        return False, (f"no decision recorded for {rfc_id}; approve with `marlops rfc approve {rfc_id} --comment ... "
                       "--token-file <risk_officer token>` or in the Dagster UI")
    if last.decision == "reject":
        return False, f"rejected by {last.principal} ({last.role}): {last.comment}"
    if last.rfc_digest != rfc.digest:
        return False, f"approval of digest {last.rfc_digest[:12]} is void: the RFC is now {rfc.digest[:12]}"
    return True, f"approved by {last.principal} ({last.role}) at {last.decided_at} via {last.channel}: {last.comment}"
