"""`marlops alert-drill`'s defaults and refusals (the drill through real Alertmanager: tests/integration/
test_playbooks.py)."""

import json
from pathlib import Path
from typing import Any

import pytest

from marlops import alert_drill
from marlops.alert_drill import AlertDrillError, DrillResult, run_drill
from marlops.cli import main


def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / ".marlops"
    (home / "tokens").mkdir(parents=True)
    monkeypatch.setenv("MARLOPS_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


def test_drill_command_when_make_up_ran_then_its_urls_and_token_are_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = _home(tmp_path, monkeypatch)
    (home / "up.json").write_text(json.dumps({"urls": {"alertmanager": "http://127.0.0.1:19093/",
                                                       "alert_context": "http://127.0.0.1:19095"}}))
    token = home / "tokens" / "alert_context.token"
    token.write_text("the-webhook-token\n")
    token.chmod(0o600)
    seen: dict[str, Any] = {}

    def fake_drill(**kwargs: Any) -> DrillResult:
        seen.update(kwargs)
        return DrillResult(drill_id="abc", severity=kwargs["severity"], delivered=True, seconds=1.0,
                           destination="ticket", targets=["the local inbox"], failures=[], resolved_posted=True)

    monkeypatch.setattr(alert_drill, "run_drill", fake_drill)
    assert main(["alert-drill"]) == 0
    assert seen == {"alertmanager_url": "http://127.0.0.1:19093", "context_url": "http://127.0.0.1:19095",
                    "token": "the-webhook-token", "severity": "ticket", "timeout_s": alert_drill.DEFAULT_TIMEOUT_S}
    assert "delivered in 1.0s via the ticket route to the local inbox" in capsys.readouterr().out


def test_drill_command_when_not_delivered_then_exit_1_and_says_where_to_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = _home(tmp_path, monkeypatch)
    token = home / "tokens" / "alert_context.token"
    token.write_text("t\n")
    token.chmod(0o600)
    monkeypatch.setattr(alert_drill, "run_drill", lambda **kw: DrillResult(
        drill_id="abc", severity="page", delivered=False, seconds=5.0, destination=None, targets=[], failures=[],
        resolved_posted=True))
    assert main(["alert-drill", "--severity", "page", "--timeout", "5"]) == 1
    out = capsys.readouterr().out
    assert "NOT delivered within 5s" in out and "http://127.0.0.1:9095" in out  # make up's default webhook port


def test_drill_command_when_token_file_is_group_readable_then_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(tmp_path, monkeypatch)
    token = home / "tokens" / "alert_context.token"
    token.write_text("t\n")
    token.chmod(0o640)
    assert main(["alert-drill"]) == 2


def test_run_drill_when_severity_unknown_then_refused_before_any_request() -> None:
    with pytest.raises(AlertDrillError, match="ticket or page"):
        run_drill(alertmanager_url="http://127.0.0.1:1", context_url="http://127.0.0.1:1", token="t",
                  severity="critical")
