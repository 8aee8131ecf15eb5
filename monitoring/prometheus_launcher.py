"""Prometheus for one deployment: monitoring/prometheus/prometheus.yml rendered with the ports it actually uses.

The shipped prometheus.yml says the scrape jobs once, on the default ports. A stack started on other ports
(`marlops up --gateway-port ...`, the integration test's free ports) gets a rendered copy in which only these
change:

  * each job's target port (its host is kept) - every job of the shipped file is either given a port or
    dropped by name (a service this stack does not run, e.g. `marlops-master` without Redis); a job neither
    given nor dropped is an error, so a job added to the shipped file is not silently left on its default port
  * the Alertmanager target's port
  * `rule_files`: the absolute path of the shipped alert_rules.yml (the copy lives elsewhere)
  * optionally the global scrape interval (tests; the shipped 15 s is what the alert rules assume), with the
    scrape timeout lowered to it when shorter

`prometheus_command` is the command line: config, TSDB storage and listen address as flags. No secret is
involved: every scraped /metrics endpoint is open on 127.0.0.1.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

SHIPPED = Path(__file__).resolve().parent / "prometheus" / "prometheus.yml"
BINARY = "prometheus"
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")


class PrometheusConfigError(ValueError):
    """The shipped config and the ports given do not fit together."""


def find_prometheus() -> str | None:
    return shutil.which(BINARY)


def _with_port(target: str, port: int) -> str:
    host, sep, _ = target.rpartition(":")
    if not sep:
        raise PrometheusConfigError(f"target {target!r} has no port")
    return f"{host}:{port}"


def _seconds(duration: str) -> float:
    value, unit = re.match(r"^([0-9]+)(ms|s|m|h)$", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def render_config(job_ports: Mapping[str, int], alertmanager_port: int, *, drop: Iterable[str] = (),
                  scrape_interval: str | None = None, template: Path = SHIPPED) -> dict[str, Any]:
    """The shipped config with each job's target port from `job_ports` (jobs in `drop` removed), the Alertmanager
    port replaced and rule_files made absolute; everything else as shipped."""
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load(template.read_text()))
    dropped = set(drop)
    shipped_jobs = [job["job_name"] for job in config.get("scrape_configs", [])]
    unknown = (set(job_ports) | dropped) - set(shipped_jobs)
    if unknown:
        raise PrometheusConfigError(f"{template} has no job {sorted(unknown)} (its jobs: {shipped_jobs})")
    unset = [job for job in shipped_jobs if job not in job_ports and job not in dropped]
    if unset:
        raise PrometheusConfigError(f"job(s) {unset} of {template} got no port and were not dropped")
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name in dropped:
            continue
        for static in job.get("static_configs", []):
            static["targets"] = [_with_port(t, job_ports[name]) for t in static["targets"]]
        jobs.append(job)
    config["scrape_configs"] = jobs
    for manager in config.get("alerting", {}).get("alertmanagers", []):
        for static in manager.get("static_configs", []):
            static["targets"] = [_with_port(t, alertmanager_port) for t in static["targets"]]
    config["rule_files"] = [str((template.parent / rule).resolve()) for rule in config.get("rule_files", [])]
    if scrape_interval is not None:
        if not _DURATION.match(scrape_interval):
            raise PrometheusConfigError(f"scrape interval {scrape_interval!r} is not a duration like 15s")
        config.setdefault("global", {})["scrape_interval"] = scrape_interval
        timeout = config["global"].get("scrape_timeout", "10s")  # Prometheus's default
        if _seconds(timeout) > _seconds(scrape_interval):
            config["global"]["scrape_timeout"] = scrape_interval
    return config


def write_config(config: dict[str, Any], run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "prometheus.yml"
    path.write_text("# Rendered by monitoring/prometheus_launcher.py from monitoring/prometheus/prometheus.yml: "
                    "edit that file, not this copy.\n" + yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_command(binary: str, config: Path, storage: Path, listen: str) -> list[str]:
    return [binary, f"--config.file={config}", f"--storage.tsdb.path={storage}", f"--web.listen-address={listen}"]
