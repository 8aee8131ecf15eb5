"""monitoring/prometheus_launcher.py: the shipped prometheus.yml rendered for one stack's ports - only the target
ports, the Alertmanager port and the rule file path change; the copy is valid for the installed promtool."""

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.prometheus_launcher import (
    SHIPPED,
    PrometheusConfigError,
    prometheus_command,
    render_config,
    write_config,
)

PORTS = {"marlops-gateway": 18080, "marlops-trading": 19101, "triton": 18002, "marlops-master": 19102}
RULES = SHIPPED.parent / "alert_rules.yml"


def _shipped() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text())  # type: ignore[no-any-return]


def _targets(config: dict[str, Any]) -> dict[str, list[str]]:
    return {job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]] for job in config["scrape_configs"]}


def test_render_when_ports_given_then_only_ports_and_rule_path_change() -> None:
    rendered = render_config(PORTS, 19093)

    assert _targets(rendered) == {job: [f"127.0.0.1:{port}"] for job, port in PORTS.items()}
    assert rendered["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    assert rendered["rule_files"] == [str(RULES.resolve())] and Path(rendered["rule_files"][0]).is_absolute()
    # Everything else is the shipped file: put the shipped ports and rule path back and compare.
    restored = copy.deepcopy(rendered)
    shipped = _shipped()
    for job, original in zip(restored["scrape_configs"], shipped["scrape_configs"], strict=True):
        job["static_configs"] = original["static_configs"]
    restored["alerting"] = shipped["alerting"]
    restored["rule_files"] = shipped["rule_files"]
    assert restored == shipped
    assert rendered["global"]["scrape_interval"] == "15s"


def test_render_when_a_job_is_dropped_then_it_is_not_scraped() -> None:
    ports = {k: v for k, v in PORTS.items() if k != "marlops-master"}

    rendered = render_config(ports, 19093, drop=["marlops-master"])

    assert set(_targets(rendered)) == set(ports)


@pytest.mark.parametrize("ports, drop, message", [
    ({k: v for k, v in PORTS.items() if k != "triton"}, (), "got no port"),
    ({**PORTS, "marlops-nothing": 1}, (), "has no job"),
    (PORTS, ("marlops-nothing",), "has no job"),
])
def test_render_when_ports_and_shipped_jobs_disagree_then_refused(ports: dict[str, int], drop: tuple[str, ...],
                                                                  message: str) -> None:
    with pytest.raises(PrometheusConfigError, match=message):
        render_config(ports, 19093, drop=drop)


def test_render_when_scrape_interval_shortened_then_timeout_follows_and_bad_duration_refused() -> None:
    rendered = render_config(PORTS, 19093, scrape_interval="1s")

    assert rendered["global"]["scrape_interval"] == "1s" and rendered["global"]["scrape_timeout"] == "1s"
    assert rendered["global"]["evaluation_interval"] == _shipped()["global"]["evaluation_interval"]
    with pytest.raises(PrometheusConfigError, match="not a duration"):
        render_config(PORTS, 19093, scrape_interval="1 second")


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed: bash scripts/install_monitoring.sh installs it")
def test_rendered_config_when_written_elsewhere_then_promtool_finds_the_rules_and_accepts_it(tmp_path: Path) -> None:
    path = write_config(render_config(PORTS, 19093, scrape_interval="2s"), tmp_path / "run")

    result = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_command_when_built_then_config_storage_and_listen_flags() -> None:
    command = prometheus_command("/usr/bin/prometheus", Path("/h/p.yml"), Path("/h/data"), "127.0.0.1:19090")

    assert command == ["/usr/bin/prometheus", "--config.file=/h/p.yml", "--storage.tsdb.path=/h/data",
                       "--web.listen-address=127.0.0.1:19090"]
