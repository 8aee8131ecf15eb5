"""Approving and rejecting RFCs with tokens and one-time codes, on real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from store_backends import BACKENDS, store_on_backend

from gateway.token_file import bootstrap_token_store, read_token_file
from marlops.lifecycle.approval import (
    approval_status,
    decide,
    decide_with_credential,
    hash_code,
    issue_approval_code,
)
from marlops.lifecycle.errors import ApprovalRefusedError, RfcNotFoundError
from marlops.lifecycle.rfc import DeploymentRFC, canonical_json
from marlops.lifecycle.store import LifecycleStore

from . import make_rfc

OFFICER = "local-risk-officer"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Tokens:
    store: Path
    risk_officer: str
    admin: str
    trader: str


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LifecycleStore]:
    yield from store_on_backend(request, LifecycleStore, tmp_path / "state" / "state.db", "lifecycle_test")


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    result = bootstrap_token_store(tmp_path / "auth" / "tokens.yaml", tmp_path / "tokens")
    raw = {role: read_token_file(path) for role, path in result.token_files.items()}
    return Tokens(store=result.store, risk_officer=raw["risk_officer"], admin=raw["admin"], trader=raw["trader"])


@pytest.fixture
def rfc(store: LifecycleStore) -> DeploymentRFC:
    return store.save_rfc(make_rfc())


def _refused(code: str) -> pytest.RaisesContext[ApprovalRefusedError]:
    return pytest.raises(ApprovalRefusedError, match=rf"^{code}: ")


def _no_secret_in_log(store: LifecycleStore, *secrets: str) -> None:
    text = canonical_json([e.__dict__ for e in store.events()])
    for secret in secrets:
        assert secret not in text


def test_decide_when_risk_officer_approves_then_recorded_and_status_approved(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    assert approval_status(store, rfc.rfc_id)[0] is False
    decision = decide(store, rfc.rfc_id, decision="approve", token=tokens.risk_officer, token_store=tokens.store,
                      comment="within limits", channel="cli", expected_digest=rfc.digest, now=T0)
    assert (decision.principal, decision.role, decision.rfc_digest, decision.channel) == (
        OFFICER, "risk_officer", rfc.digest, "cli")
    assert decision.decided_at == "2026-11-30T12:00:00.000000+00:00"
    assert store.decisions(rfc.rfc_id) == [decision]
    assert store.rfc_status(rfc.rfc_id) == "approved"
    approved, reason = approval_status(store, rfc.rfc_id)
    assert approved and reason.startswith(f"approved by {OFFICER} (risk_officer)") and "within limits" in reason
    _no_secret_in_log(store, tokens.risk_officer)


@pytest.mark.parametrize("role", ["trader", "admin"])
def test_decide_when_not_risk_officer_then_role_not_allowed_and_only_the_refusal_recorded(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens, role: str
) -> None:
    before = store.events()
    with _refused("ROLE_NOT_ALLOWED") as refused:
        decide(store, rfc.rfc_id, decision="approve", token=getattr(tokens, role), token_store=tokens.store,
               comment="ok", channel="cli")
    assert f"has role {role}" in str(refused.value) and "only risk_officer" in str(refused.value)
    assert store.decisions(rfc.rfc_id) == [] and store.rfc_status(rfc.rfc_id) == "pending"
    new = store.events()[len(before):]
    assert [(e.kind, e.principal, e.detail["code"]) for e in new] == [
        ("approval_refused", f"local-{role}", "ROLE_NOT_ALLOWED")]
    assert new[0].candidate_run_id == rfc.candidate_run_id
    assert approval_status(store, rfc.rfc_id)[0] is False
    _no_secret_in_log(store, getattr(tokens, role))


@pytest.mark.parametrize("token", [None, "", "   "])
def test_decide_when_no_token_then_no_token_recorded_as_anonymous(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens, token: str | None
) -> None:
    with _refused("NO_TOKEN"):
        decide(store, rfc.rfc_id, decision="approve", token=token, token_store=tokens.store, comment="ok",
               channel="cli")
    event = store.events(kind="approval_refused")[-1]
    assert (event.principal, event.detail["code"]) == ("anonymous", "NO_TOKEN")
    assert store.decisions(rfc.rfc_id) == []


def test_decide_when_unknown_token_then_unknown_token_and_token_not_logged(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    forged = "mgw_not-a-real-token-0123456789"
    with _refused("UNKNOWN_TOKEN") as refused:
        decide(store, rfc.rfc_id, decision="approve", token=forged, token_store=tokens.store, comment="ok",
               channel="cli")
    assert forged not in str(refused.value)
    _no_secret_in_log(store, forged)
    assert store.decisions(rfc.rfc_id) == []


def test_decide_when_expected_digest_differs_then_stale_digest(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    with _refused("STALE_DIGEST"):
        decide(store, rfc.rfc_id, decision="approve", token=tokens.risk_officer, token_store=tokens.store,
               comment="ok", channel="cli", expected_digest="ab" * 32)
    assert store.decisions(rfc.rfc_id) == [] and store.rfc_status(rfc.rfc_id) == "pending"
    assert store.events(kind="approval_refused")[-1].principal == OFFICER


def test_approval_status_when_candidate_changed_after_approval_then_void_and_old_rfc_undecidable(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    decide(store, rfc.rfc_id, decision="approve", token=tokens.risk_officer, token_store=tokens.store,
           comment="ok", channel="cli")
    assert approval_status(store, rfc.rfc_id)[0]
    changed = store.save_rfc(make_rfc(version="5"))
    approved, reason = approval_status(store, rfc.rfc_id)
    assert not approved and "void" in reason and changed.digest[:12] in reason and rfc.digest[:12] in reason
    assert store.rfc_status(rfc.rfc_id) == "superseded"
    new_approved, new_reason = approval_status(store, changed.rfc_id)
    assert not new_approved and new_reason.startswith(f"no decision recorded for {changed.rfc_id}")
    assert f"marlops rfc approve {changed.rfc_id}" in new_reason and "Dagster UI" in new_reason
    with _refused("STALE_DIGEST"):
        decide(store, rfc.rfc_id, decision="approve", token=tokens.risk_officer, token_store=tokens.store,
               comment="again", channel="cli")


def test_decide_when_reject_without_comment_then_refused_and_with_comment_rejected_final(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    with _refused("EMPTY_COMMENT"):
        decide(store, rfc.rfc_id, decision="reject", token=tokens.risk_officer, token_store=tokens.store,
               comment="  ", channel="cli")
    assert store.decisions(rfc.rfc_id) == []
    decide(store, rfc.rfc_id, decision="reject", token=tokens.risk_officer, token_store=tokens.store,
           comment="drawdown too deep", channel="dagster")
    assert store.rfc_status(rfc.rfc_id) == "rejected"
    assert approval_status(store, rfc.rfc_id) == (False, f"rejected by {OFFICER} (risk_officer): drawdown too deep")
    with _refused("RFC_CLOSED") as closed:
        decide(store, rfc.rfc_id, decision="approve", token=tokens.risk_officer, token_store=tokens.store,
               comment="changed my mind", channel="cli")
    assert "a decision is final" in str(closed.value)
    assert len(store.decisions(rfc.rfc_id)) == 1


def test_decide_when_rfc_deployed_or_decision_invalid_or_rfc_unknown_then_refused(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    with _refused("INVALID_DECISION"):
        decide(store, rfc.rfc_id, decision="maybe", token=tokens.risk_officer, token_store=tokens.store,
               comment="?", channel="cli")
    with pytest.raises(RfcNotFoundError):
        decide(store, "RFC-4-00000000", decision="approve", token=tokens.risk_officer, token_store=tokens.store,
               comment="ok", channel="cli")
    store.set_rfc_status(rfc.rfc_id, "rolled_back")
    with _refused("RFC_CLOSED"):
        decide(store, rfc.rfc_id, decision="approve", token=tokens.risk_officer, token_store=tokens.store,
               comment="ok", channel="cli")
    assert store.decisions(rfc.rfc_id) == []


# ---- one-time approval codes ----------------------------------------------------------------------------------------------
def test_approval_code_when_used_once_then_decides_as_its_officer_and_second_use_refused(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    code = issue_approval_code(store, rfc.rfc_id, token=tokens.risk_officer, token_store=tokens.store, now=T0)
    assert code.startswith("apc_") and len(code) > 30
    stored = store.approval_code(hash_code(code))
    assert stored is not None and (stored.rfc_id, stored.rfc_digest, stored.principal) == (
        rfc.rfc_id, rfc.digest, OFFICER)
    assert stored.expires_at == (T0 + timedelta(seconds=1800)).isoformat(timespec="microseconds")
    decision = decide_with_credential(store, rfc.rfc_id, decision="approve", credential=code,
                                      token_store=tokens.store, comment="ok from the UI", channel="dagster",
                                      now=T0 + timedelta(minutes=5))
    assert (decision.principal, decision.role, decision.channel) == (OFFICER, "risk_officer", "dagster")
    assert approval_status(store, rfc.rfc_id)[0]
    assert store.approval_code(hash_code(code)).used_at is not None  # type: ignore[union-attr]
    with _refused("CODE_USED"):
        decide_with_credential(store, rfc.rfc_id, decision="approve", credential=code, token_store=tokens.store,
                               comment="again", channel="dagster", now=T0 + timedelta(minutes=6))
    _no_secret_in_log(store, code, tokens.risk_officer)


def test_approval_code_when_expired_unknown_or_for_other_rfc_then_refused_and_unused(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    other = store.save_rfc(make_rfc("run-other"))
    code = issue_approval_code(store, rfc.rfc_id, token=tokens.risk_officer, token_store=tokens.store, ttl_s=60,
                               now=T0)
    cases = [("CODE_EXPIRED", rfc.rfc_id, code, T0 + timedelta(seconds=60)),
             ("UNKNOWN_CODE", rfc.rfc_id, "apc_never-issued", T0),
             ("UNKNOWN_CODE", other.rfc_id, code, T0)]
    for expected, rfc_id, credential, now in cases:
        with _refused(expected):
            decide_with_credential(store, rfc_id, decision="approve", credential=credential, token_store=tokens.store,
                                   comment="ok", channel="dagster", now=now)
    assert store.decisions(rfc.rfc_id) == [] and store.decisions(other.rfc_id) == []
    assert store.approval_code(hash_code(code)).used_at is None  # type: ignore[union-attr]
    assert [e.detail["code"] for e in store.events(kind="approval_refused")] == [c[0] for c in cases]
    decide_with_credential(store, rfc.rfc_id, decision="approve", credential=code, token_store=tokens.store,
                           comment="in time", channel="dagster", now=T0 + timedelta(seconds=59))
    assert approval_status(store, rfc.rfc_id)[0]


def test_approval_code_when_candidate_changes_after_issue_then_stale_digest(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    code = issue_approval_code(store, rfc.rfc_id, token=tokens.risk_officer, token_store=tokens.store, now=T0)
    store.save_rfc(make_rfc(sharpe=0.7))
    with _refused("STALE_DIGEST"):
        decide_with_credential(store, rfc.rfc_id, decision="approve", credential=code, token_store=tokens.store,
                               comment="ok", channel="dagster", now=T0)
    assert store.decisions(rfc.rfc_id) == []


def test_issue_approval_code_when_trader_or_no_token_then_refused_and_nothing_issued(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    with _refused("ROLE_NOT_ALLOWED"):
        issue_approval_code(store, rfc.rfc_id, token=tokens.trader, token_store=tokens.store)
    with _refused("NO_TOKEN"):
        issue_approval_code(store, rfc.rfc_id, token=None, token_store=tokens.store)
    assert store.events(kind="approval_code_issued") == []


def test_decide_with_credential_when_raw_token_then_same_as_decide(
    store: LifecycleStore, rfc: DeploymentRFC, tokens: Tokens
) -> None:
    with _refused("ROLE_NOT_ALLOWED"):
        decide_with_credential(store, rfc.rfc_id, decision="approve", credential=tokens.trader,
                               token_store=tokens.store, comment="ok", channel="dagster")
    decision = decide_with_credential(store, rfc.rfc_id, decision="reject", credential=tokens.risk_officer,
                                      token_store=tokens.store, comment="costs too high", channel="dagster")
    assert (decision.decision, decision.principal) == ("reject", OFFICER)
    assert store.rfc_status(rfc.rfc_id) == "rejected"
