"""`marlops up`'s monitoring start (marlops/up.py `_start_monitoring`), the parts that need no running stack: the
webhook's bearer token file, and the one warning when Prometheus/Alertmanager are not installed. The real start
(processes, scrapes, rules) is proven by tests/integration/test_up.py."""

import logging
import stat
from pathlib import Path

import pytest
import yaml

from marlops.paths import StatePaths
from marlops.processes import ProcessGroup
from marlops.up import UpOptions, _start_monitoring, ensure_secret_token, monitoring_missing
from monitoring.alertmanager_launcher import DEFAULT_CONTEXT_URL
from monitoring.prometheus_launcher import SHIPPED


def test_token_when_first_start_then_random_private_file_and_kept_afterwards(tmp_path: Path) -> None:
    path = ensure_secret_token(tmp_path / "tokens" / "alert_context.token")
    first = path.read_text()

    assert len(first.strip()) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_secret_token(path).read_text() == first
    assert ensure_secret_token(tmp_path / "other" / "alert_context.token").read_text() != first


def test_start_monitoring_when_binaries_missing_then_one_warning_naming_the_installer_and_nothing_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # neither prometheus nor alertmanager on it
    paths = StatePaths(root=tmp_path / "home", project_root=tmp_path)
    group, urls = ProcessGroup(), {"gateway": "http://127.0.0.1:8080"}

    with caplog.at_level(logging.WARNING, logger="marlops.up"):
        _start_monitoring(paths, UpOptions(), group, urls, {"marlops-gateway": 8080})

    assert monitoring_missing() == ["prometheus", "alertmanager"]
    [warning] = [r for r in caplog.records if r.name == "marlops.up"]
    assert "bash scripts/install_monitoring.sh" in warning.getMessage()
    assert group.processes == [] and urls == {"gateway": "http://127.0.0.1:8080"}
    assert not (paths.root / "tokens").exists()


def test_up_options_when_defaulted_then_the_ports_the_shipped_configs_name() -> None:
    options = UpOptions()
    shipped = yaml.safe_load(SHIPPED.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in shipped["scrape_configs"]}

    assert targets["marlops-master"] == f"127.0.0.1:{options.master_metrics_port}"
    assert targets["marlops-trading"] == f"127.0.0.1:{options.trading_metrics_port}"
    assert targets["marlops-gateway"] == f"127.0.0.1:{options.gateway_port}"
    assert shipped["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{options.alertmanager_port}"]
    assert DEFAULT_CONTEXT_URL == f"http://127.0.0.1:{options.alert_context_port}"
    assert options.prometheus_port == 9090 and options.with_monitoring and options.scrape_interval is None
