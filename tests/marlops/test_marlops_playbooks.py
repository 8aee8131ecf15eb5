"""Playbooks: the definitions against the shipped alert rules, the runner's one-run-per-incident and failure
records, the webhook's authentication. The whole chain (Prometheus -> Alertmanager -> runner -> gateway) is
tests/integration/test_playbooks.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from marlops.lifecycle.records import LIVE_SCOPE, BarRecord, SymbolBar
from marlops.lifecycle.store import LifecycleStore
from marlops.paths import StatePaths
from marlops.playbooks.actions import StepError
from marlops.playbooks.definitions import LABEL, PLAYBOOKS
from marlops.playbooks.runner import PlaybookRunner
from marlops.playbooks.service import PlaybookError, PlaybookSettings, create_app
from marlops.playbooks.store import PlaybookRunStore
from monitoring.alert_context import AmNotification

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus" / "alert_rules.yml"


class RecordingActions:
    """Records the calls the steps make (the real effects are the integration test's); can be told to fail."""

    def __init__(self, fail: str | None = None, rolled_back: bool = True) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail
        self.rolled_back = rolled_back

    def gateway(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((path, body))
        if path == self.fail:
            raise StepError(f"gateway POST {path} answered 503: not started")
        return {"changed": True}

    def rollback(self, *, principal: str, reason: str) -> dict[str, Any]:
        self.calls.append(("rollback", {"principal": principal, "reason": reason}))
        return {"rolled_back": self.rolled_back}


def _notification(alertname: str, playbook: str | None, *, status: str = "firing",
                  fingerprint: str = "fp1", starts: str = "2026-11-30T10:00:00Z") -> AmNotification:
    labels = {"alertname": alertname, "severity": "page", **({LABEL: playbook} if playbook else {})}
    return AmNotification.model_validate({"status": status, "alerts": [{
        "status": status, "labels": labels, "annotations": {"summary": "s", "value": "0.31"},
        "startsAt": starts, "fingerprint": fingerprint}]})


@pytest.fixture
def store(tmp_path: Path) -> PlaybookRunStore:
    s = PlaybookRunStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def test_rules_when_read_then_every_playbook_label_is_defined_and_every_playbook_has_a_rule() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    named = {r["alert"]: r["labels"][LABEL] for r in rules if LABEL in r.get("labels", {})}
    assert set(named.values()) <= set(PLAYBOOKS), f"rules name unknown playbooks: {named}"
    assert set(PLAYBOOKS) <= set(named.values()), "a playbook no alert starts"
    assert named["CostRatioHigh"] == "cost_explosion" and named["ModelAnomaly"] == "model_anomaly"
    assert {n for n, p in named.items() if p == "latency_spike"} == {"SymbolAgentLatencyHigh", "MasterAgentLatencyHigh"}


def test_runner_when_the_same_incident_is_notified_twice_then_it_runs_once_with_the_alert_in_the_reason(
        store: PlaybookRunStore) -> None:
    actions = RecordingActions()
    runner = PlaybookRunner(actions, store)
    [first] = runner.handle(_notification("IntradayDrawdownHigh", "drawdown_breach"))
    [again] = runner.handle(_notification("IntradayDrawdownHigh", "drawdown_breach"))
    assert first["outcome"] == "ran" and first["status"] == "done" and again["outcome"] == "already_run"
    assert [path for path, _ in actions.calls] == ["/v1/kill-switch", "/v1/flatten"]
    kill, unwind = (body for _, body in actions.calls)
    assert kill["trigger"] == "playbook:drawdown_breach" and "IntradayDrawdownHigh" in kill["reason"]
    assert "fp1" in kill["reason"] and "value 0.31" in kill["reason"]
    assert unwind["fraction_per_interval"] == 1.0
    # A new start of the same alert is a new incident.
    [later] = runner.handle(_notification("IntradayDrawdownHigh", "drawdown_breach", starts="2026-11-30T12:00:00Z"))
    assert later["outcome"] == "ran" and len(store.runs()) == 2


def test_runner_when_resolved_or_unlabelled_or_unknown_then_nothing_runs(store: PlaybookRunStore) -> None:
    actions = RecordingActions()
    runner = PlaybookRunner(actions, store)
    outcomes = [runner.handle(n)[0]["outcome"] for n in (
        _notification("CostRatioHigh", "cost_explosion", status="resolved"),
        _notification("TradingHalted", None),
        _notification("Odd", "no_such_playbook"))]
    assert outcomes == ["resolved", "no_playbook", "unknown_playbook"]
    assert actions.calls == [] and store.runs() == []


def test_runner_when_a_step_fails_then_the_run_is_failed_with_the_error_and_later_steps_not_tried(
        store: PlaybookRunStore) -> None:
    actions = RecordingActions(fail="/v1/kill-switch")
    [outcome] = PlaybookRunner(actions, store).handle(_notification("DrawdownFromPeakHigh", "drawdown_breach"))
    assert outcome["status"] == "failed" and [p for p, _ in actions.calls] == ["/v1/kill-switch"]
    [run] = store.runs()
    assert run["status"] == "failed" and "503" in run["steps"][0]["error"]
    assert run["alert"]["labels"]["alertname"] == "DrawdownFromPeakHigh"


def test_runner_when_rollback_not_confirmed_then_declined(store: PlaybookRunStore) -> None:
    actions = RecordingActions(rolled_back=False)
    [outcome] = PlaybookRunner(actions, store).handle(_notification("ModelAnomaly", "model_anomaly"))
    assert outcome["status"] == "declined"
    assert actions.calls[0][1]["principal"] == "playbook:model_anomaly"


def test_lifecycle_store_when_a_model_answered_nan_then_the_bar_reads_back_as_nan(tmp_path: Path) -> None:
    row = SymbolBar(bar_index=0, timestamp="2024-01-03T15:00:00+00:00", symbol="AAPL", variant="production",
                    policy_version="symbol_agent/2", action=1, probabilities=(math.nan, math.inf, 0.5), price=1.0,
                    position_qty=0.0, position_value=0.0, pnl=0.0, cost=0.0, traded_notional=0.0, denied=False,
                    error=False, inference_ms=1.0)
    store = LifecycleStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        store.append_bars(LIVE_SCOPE, [BarRecord(0, row.timestamp, (row,), 1.0, 1e6, "ACTIVE")])
        [bar] = store.bars(LIVE_SCOPE, last=1)
    finally:
        store.close()
    probabilities = bar.symbols[0].probabilities
    assert math.isnan(probabilities[0]) and probabilities[2] == 0.5
    assert not math.isfinite(probabilities[1])


def test_webhook_when_token_missing_or_wrong_then_401_and_nothing_runs(tmp_path: Path) -> None:
    token = tmp_path / "am.token"
    token.write_text("right-token\n")
    token.chmod(0o600)
    settings = PlaybookSettings(_env_file=None, token_file=token, gateway_url="http://127.0.0.1:9")  # type: ignore[call-arg]
    paths = StatePaths(root=tmp_path / "home", project_root=REPO)
    with TestClient(create_app(settings, paths=paths)) as client:
        body = _notification("CostRatioHigh", "cost_explosion").model_dump()
        assert client.post("/v1/alertmanager/playbooks", json=body).status_code == 401
        wrong = client.post("/v1/alertmanager/playbooks", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = {"Authorization": "Bearer right-token"}
        assert client.get("/v1/playbooks/runs", headers=ok).json() == {"runs": []}
        listed = client.get("/v1/playbooks", headers=ok).json()["playbooks"]
        assert {p["name"] for p in listed} == set(PLAYBOOKS)
        # Authorized, the gateway unreachable: the run fails, says why, and Alertmanager is told to retry (502).
        failed = client.post("/v1/alertmanager/playbooks", json=body, headers=ok)
        assert failed.status_code == 502 and "whoami" in failed.text
    token.chmod(0o644)
    with pytest.raises(PlaybookError, match="readable by others|chmod"):
        create_app(settings, paths=paths)
