"""The alert context webhook's local destination (MARLOPS_ALERT_CONTEXT_INBOX_FILE): what `make up` uses on a host
without Slack or PagerDuty. Served for real; the gateway and state store are absent (named as context gaps)."""

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.serve import ServerHandle, free_port, serve_app_in_thread
from monitoring.alert_context import AlertContextError, AlertContextSettings, create_app

TOKEN = "am-to-webhook-inbox-token"


def _settings(tmp_path: Path, **overrides: Any) -> AlertContextSettings:
    token = tmp_path / "webhook.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    fields: dict[str, Any] = {"token_file": token, "gateway_url": f"http://127.0.0.1:{free_port()}",
                              "home": tmp_path / "home", "gateway_timeout_s": 0.5,
                              "inbox_file": tmp_path / "alerts" / "inbox.jsonl", **overrides}
    return AlertContextSettings(_env_file=None, **fields)  # type: ignore[call-arg]


@pytest.fixture
def served() -> Iterator[list[ServerHandle]]:
    handles: list[ServerHandle] = []
    yield handles
    for handle in handles:
        handle.stop()


def _notification(alertname: str, status: str = "firing") -> dict[str, Any]:
    labels = {"alertname": alertname, "severity": "page", "job": "marlops-gateway"}
    return {"version": "4", "status": status, "receiver": "marlops-page", "groupLabels": labels,
            "alerts": [{"status": status, "labels": labels, "annotations": {"summary": alertname, "value": "1"},
                        "fingerprint": "fp9"}]}


def _post(handle: ServerHandle, body: dict[str, Any], token: str | None = TOKEN) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{handle.url}/v1/alertmanager/page", json=body, headers=headers, timeout=10)


def test_page_when_only_the_inbox_is_set_then_each_notification_is_one_private_json_line(
        tmp_path: Path, served: list[ServerHandle]) -> None:
    settings = _settings(tmp_path)
    served.append(serve_app_in_thread(create_app(settings)))

    first = _post(served[0], _notification("ServiceDown"))
    second = _post(served[0], _notification("ServiceDown", status="resolved"))

    assert first.status_code == 200, first.text
    assert first.json()["inbox"] == 1 and first.json()["slack"] == 0 and first.json()["pagerduty"] == 0
    assert second.status_code == 200
    inbox = settings.inbox_file
    assert inbox is not None
    lines = [json.loads(line) for line in inbox.read_text().splitlines()]
    assert [(c["alerts"][0]["alertname"], c["status"]) for c in lines] == [("ServiceDown", "firing"),
                                                                           ("ServiceDown", "resolved")]
    assert lines[0]["destination"] == "page" and "trading_state" in lines[0]["unavailable"]
    assert stat.S_IMODE(inbox.stat().st_mode) == 0o600
    assert stat.S_IMODE(inbox.parent.stat().st_mode) == 0o700


def test_page_when_unauthenticated_then_401_and_the_inbox_stays_empty(
        tmp_path: Path, served: list[ServerHandle]) -> None:
    settings = _settings(tmp_path)
    served.append(serve_app_in_thread(create_app(settings)))

    assert _post(served[0], _notification("ServiceDown"), token="wrong").status_code == 401

    assert settings.inbox_file is not None and not settings.inbox_file.exists()


def test_page_when_the_inbox_cannot_be_written_then_502_so_alertmanager_retries(
        tmp_path: Path, served: list[ServerHandle]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    served.append(serve_app_in_thread(create_app(_settings(tmp_path, inbox_file=blocker / "inbox.jsonl"))))

    answer = _post(served[0], _notification("ServiceDown"))

    assert answer.status_code == 502
    assert "inbox" in json.dumps(answer.json())


def test_create_app_when_neither_slack_nor_inbox_then_refuses(tmp_path: Path) -> None:
    with pytest.raises(AlertContextError, match="SLACK_WEBHOOK_URL nor .*INBOX_FILE"):
        create_app(_settings(tmp_path, inbox_file=None))


def test_settings_when_inbox_in_environment_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARLOPS_ALERT_CONTEXT_INBOX_FILE", str(tmp_path / "in.jsonl"))

    assert AlertContextSettings(_env_file=None).inbox_file == tmp_path / "in.jsonl"  # type: ignore[call-arg]
