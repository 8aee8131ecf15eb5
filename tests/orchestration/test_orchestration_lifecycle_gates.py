"""The approval gate in Dagster: without a risk officer's decision for the RFC's digest, `rfc_is_approved` fails and
the canary (and everything after it) does not run. Upstream assets are stand-ins; the gate, the check and the
store are the real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import AssetKey, asset, instance_for_test, materialize

from gateway.token_file import bootstrap_token_store, read_token_file
from marlops.lifecycle.approval import decide, issue_approval_code
from marlops.lifecycle.errors import ApprovalRefusedError
from marlops.lifecycle.rfc import DeploymentRFC, build_rfc
from marlops.lifecycle.store import LifecycleStore
from orchestration.lifecycle_assets import canary, rfc_approval
from orchestration.lifecycle_checks import rfc_is_approved
from orchestration.resources import MarlopsResource

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "run-gate-test"


def _rfc(sharpe: float = 1.2) -> DeploymentRFC:
    return build_rfc(candidate_run_id=RUN_ID, candidate={"symbol_agent": "4", "master_agent": "4", "sl_fallback": "4"},
                     production=None, metrics={"held_out": {"candidate": {"sharpe": sharpe}}},
                     risk={"drift": {"status": "ok"}}, rollback_plan=["marlops rollback"],
                     artifacts={"symbol_agent": {"sha256": "ab" * 32}})


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    bootstrap_token_store(tmp_path / "auth" / "tokens.yaml", tmp_path / "tokens")
    return tmp_path


def _store(home: Path) -> LifecycleStore:
    return LifecycleStore(f"sqlite:///{home / 'state.db'}")


def _run(home: Path, rfc: DeploymentRFC, approval_config: dict[str, Any] | None = None) -> Any:
    with _store(home) as store:
        store.save_rfc(rfc)

    @asset(name="deployment_rfc")
    def rfc_stand_in() -> DeploymentRFC:
        return rfc

    @asset(name="market_feed")
    def feed_stand_in() -> pd.DataFrame:
        return pd.DataFrame()

    @asset(name="market_bars")
    def bars_stand_in() -> pd.DataFrame:
        return pd.DataFrame()

    @asset(name="registered_policy")
    def registered_stand_in() -> None:
        return None

    with instance_for_test() as instance:
        return materialize(
            [rfc_stand_in, feed_stand_in, bars_stand_in, registered_stand_in, rfc_approval, rfc_is_approved, canary],
            resources={"marlops": MarlopsResource(project_root=str(REPO), state_dir=str(home))},
            run_config={"ops": {"rfc_approval": {"config": approval_config or {}}}},
            instance=instance, raise_on_error=False)


def _gate(result: Any) -> tuple[bool, str, set[AssetKey]]:
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["rfc_is_approved"]
    keys = {e.asset_key for e in result.get_asset_materialization_events()}
    return check.passed, str(check.metadata["reason"].value), keys


def test_gate_when_no_decision_then_check_fails_and_canary_does_not_run(home: Path) -> None:
    passed, reason, keys = _gate(_run(home, _rfc()))
    assert not passed and "no decision recorded" in reason and "marlops rfc approve" in reason
    assert AssetKey("rfc_approval") in keys and AssetKey("canary") not in keys


@pytest.mark.parametrize(("role", "code"), [("trader", "ROLE_NOT_ALLOWED"), ("admin", "ROLE_NOT_ALLOWED")])
def test_gate_when_approved_with_a_non_risk_officer_token_then_refused_and_canary_does_not_run(
        home: Path, role: str, code: str) -> None:
    token = read_token_file(home / "tokens" / f"{role}.token")
    passed, reason, keys = _gate(_run(home, _rfc(), {"decision": "approve", "credential": token, "comment": "ok"}))
    assert not passed and code in reason and AssetKey("canary") not in keys
    with _store(home) as store:
        assert [e.detail.get("code") for e in store.events(kind="approval_refused")] == [code]
        assert not any(token in str(e.detail) for e in store.events())  # the token is never recorded


def test_gate_when_approved_without_a_token_then_refused(home: Path) -> None:
    passed, reason, keys = _gate(_run(home, _rfc(), {"decision": "approve", "comment": "ok"}))
    assert not passed and "NO_TOKEN" in reason and AssetKey("canary") not in keys


def test_gate_when_risk_officer_code_from_launchpad_then_check_passes(home: Path) -> None:
    rfc = _rfc()
    with _store(home) as store:
        store.save_rfc(rfc)
        code = issue_approval_code(store, rfc.rfc_id, token=read_token_file(home / "tokens" / "risk_officer.token"),
                                   token_store=home / "auth" / "tokens.yaml")
    # The canary stand-ins are empty: an approved gate lets the canary start, and it fails on them. Only the
    # gate is asserted here; the canary itself is tested on the real stack (tests/integration/test_lifecycle.py).
    result = _run(home, rfc, {"decision": "approve", "credential": code, "comment": "committee 2026-11-30"})
    passed, reason, _ = _gate(result)
    assert passed and "local-risk-officer (risk_officer)" in reason and "via dagster" in reason


def test_gate_when_candidate_changed_after_approval_then_approval_void_and_canary_does_not_run(home: Path) -> None:
    first, changed = _rfc(1.2), _rfc(0.4)
    token = read_token_file(home / "tokens" / "risk_officer.token")
    with _store(home) as store:
        store.save_rfc(first)
        code = issue_approval_code(store, first.rfc_id, token=token, token_store=home / "auth" / "tokens.yaml")
        decide(store, first.rfc_id, decision="approve", token=token, token_store=home / "auth" / "tokens.yaml",
               comment="ok", channel="cli", expected_digest=first.digest)
    passed, reason, keys = _gate(_run(home, changed, {"decision": "approve", "credential": code, "comment": "x"}))
    assert not passed and AssetKey("canary") not in keys
    assert "UNKNOWN_CODE" in reason  # the code was bound to the first RFC
    with _store(home) as store, pytest.raises(ApprovalRefusedError) as refused:
        decide(store, first.rfc_id, decision="approve", token=token, token_store=home / "auth" / "tokens.yaml",
               comment="again", channel="cli", expected_digest=first.digest)
    assert refused.value.code == "STALE_DIGEST"
