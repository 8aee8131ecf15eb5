"""monitoring/alertmanager/alertmanager.yml: valid for the installed Alertmanager (amtool), routed and inhibited
as docs/operations.md says, free of secrets; and the launcher's rendered copy is valid too."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.alertmanager_launcher import TEMPLATE, render_config, write_config

AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool not installed: scripts/install_monitoring.sh "
                                                         "installs prometheus-alertmanager (amtool included)")
# The names of monitoring/prometheus/alert_rules.yml that TradingHalted explains.
EXPLAINED_BY_HALT = {"SymbolAgentLatencyHigh", "MasterAgentLatencyHigh", "IntradayDrawdownHigh",
                     "DrawdownFromPeakHigh", "CostRatioHigh", "FeatureDriftScoreHigh"}


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert AMTOOL is not None
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=20)


@needs_amtool
def test_config_when_checked_by_amtool_then_valid() -> None:
    result = _amtool("check-config", str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_amtool
@pytest.mark.parametrize("labels, receiver", [
    (["alertname=TradingHalted", "severity=page"], "marlops-page"),
    (["alertname=FeedProviderQuarantined", "severity=ticket"], "marlops-ticket"),
    (["alertname=Unclassified"], "marlops-ticket"),  # no severity: a ticket, nobody is woken
    # An alert naming a playbook reaches the runner AND people.
    (["alertname=IntradayDrawdownHigh", "severity=page", "playbook=drawdown_breach"], "marlops-playbooks,marlops-page"),
])
def test_routes_when_severity_given_then_receiver(labels: list[str], receiver: str) -> None:
    result = _amtool("config", "routes", "test", f"--config.file={TEMPLATE}", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


def test_config_when_read_then_grouping_inhibition_and_receivers_as_documented() -> None:
    config = yaml.safe_load(TEMPLATE.read_text())
    assert config["route"]["group_by"] == ["alertname", "severity"]
    [halt] = [r for r in config["inhibit_rules"] if r["source_matchers"] == ['alertname="TradingHalted"']]
    [target] = halt["target_matchers"]
    assert set(target.split("=~", 1)[1].strip('"').split("|")) == EXPLAINED_BY_HALT
    hooks = [h for r in config["receivers"] for h in r["webhook_configs"]]
    assert {h["url"].rsplit("/", 1)[1] for h in hooks} == {"page", "ticket", "playbooks"}
    assert all("credentials_file" in h["http_config"]["authorization"] for h in hooks)
    # People hear when it is over; the playbook runner acts on firing alerts only (it never loosens anything).
    assert all(h["send_resolved"] != h["url"].endswith("/playbooks") for h in hooks)
    [playbooks] = [r for r in config["route"]["routes"] if r["receiver"] == "marlops-playbooks"]
    assert playbooks["continue"] is True and playbooks["group_by"] == ["..."] and playbooks["group_wait"] == "0s"
    # Only the context webhook: Slack and PagerDuty credentials never live in this file.
    assert not any(k in r for r in config["receivers"] for k in ("slack_configs", "pagerduty_configs"))
    assert "hooks.slack.com" not in TEMPLATE.read_text() and "routing_key" not in TEMPLATE.read_text()


@needs_amtool
def test_launcher_when_rendered_then_valid_and_points_at_the_webhook_with_the_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(0o600)

    path = write_config(render_config("https://ctx.internal:9443/marlops", token,
                                      playbooks_url="http://runner.internal:9096"), tmp_path / "run")

    assert oct(path.stat().st_mode & 0o777) == "0o600"
    result = _amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    hooks = [h for r in yaml.safe_load(path.read_text())["receivers"] for h in r["webhook_configs"]]
    assert {h["url"] for h in hooks} == {"https://ctx.internal:9443/marlops/v1/alertmanager/page",
                                         "https://ctx.internal:9443/marlops/v1/alertmanager/ticket",
                                         "http://runner.internal:9096/v1/alertmanager/playbooks"}
    assert {h["http_config"]["authorization"]["credentials_file"] for h in hooks} == {str(token)}


def test_inhibit_rules_when_compared_with_the_prometheus_rules_then_every_name_exists() -> None:
    """A rule renamed in alert_rules.yml without this file would silently stop being inhibited."""
    rules_file = TEMPLATE.parents[1] / "prometheus" / "alert_rules.yml"
    if not rules_file.exists():
        pytest.skip(f"{rules_file} not written yet")
    defined = {r["alert"] for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"] if "alert" in r}
    named: set[str] = set()
    for rule in yaml.safe_load(TEMPLATE.read_text())["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            named |= set(matcher.split("=", 1)[1].lstrip("~").strip('"').split("|"))
    assert named - defined == set()
