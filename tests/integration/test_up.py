"""`marlops up` (what `make up` runs) as a user runs it: starts everything, trades, refuses anonymous control, stops clean.

One run, small: a fresh MARLOPS_HOME (so the demo policy is trained first), 6 symbols, free ports, Prometheus
scraping every second (the shipped 15 s would make the scrape proof wait). The replay (the demo's ~54 held-out
bars) runs at 0.5 bar/s: at 1 bar/s it could end before Dagster and MLflow are up on a loaded machine, and then
no bar is left for the first test to see decided.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.api.roles import ROUTE_ROLES
from gateway.serve import free_port
from marlops.net import wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MONITORING = ("alert context webhook", "playbook runner", "alertmanager", "prometheus")
MUTATING = sorted(path for (method, path), roles in ROUTE_ROLES.items() if method == "POST" and roles is not None)
OPERATOR_BODY = {"principal": "mallory", "reason": "because I can"}


def _processes() -> dict[int, str]:
    """pid -> command line of every live (non-zombie) process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z":
            found[int(entry.name)] = cmdline
    return found


def _running(pid: int) -> bool:
    return pid in _processes()


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    home: Path
    project: Path
    env: dict[str, str]
    log: Path

    def status(self) -> dict[str, object]:
        out = subprocess.run([sys.executable, "-m", "marlops.cli", "--config-dir", str(REPO / "config" / "rl"),
                              "status", "--json"], env=self.env, cwd=self.project, capture_output=True, timeout=60)
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def record(self) -> dict[str, object]:
        return json.loads((self.home / "up.json").read_text())  # type: ignore[no-any-return]

    def token(self, role: str) -> str:
        return (self.home / "tokens" / f"{role}.token").read_text().strip()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    project = tmp_path_factory.mktemp("project")
    (project / "workspace.yaml").write_text((REPO / "workspace.yaml").read_text())
    home = project / ".marlops"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "MLFLOW_", "MARLOPS_", "APCA_"))}
    env.update({"MARLOPS_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    log = project / "up.log"
    ports = {f"--{name}-port": str(free_port()) for name in
             ("dagster", "gateway", "exchange", "market-data", "mlflow", "trading-metrics", "triton-http",
              "triton-grpc", "triton-metrics", "master-metrics", "prometheus", "alertmanager", "alert-context", "playbooks")}
    argv = [sys.executable, "-m", "marlops.cli", "--config-dir", str(REPO / "config" / "rl"), "up", "--symbols", "6",
            "--days", "200", "--iterations", "3", "--bars-per-second", "0.5", "--scrape-interval", "1s",
            *[x for pair in ports.items() for x in pair]]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=project, stdout=out, stderr=subprocess.STDOUT)
    handle = Up(proc, home, project, env, log)
    try:
        wait_until(lambda: proc.poll() is not None or "Ctrl-C stops everything" in log.read_text(errors="replace"),
                   timeout_s=540, what=f"marlops up to start (log {log})", interval_s=1.0)
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        yield handle
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_up_when_started_then_every_service_healthy_and_bars_are_decided(up: Up) -> None:
    first = up.status()
    wait_until(lambda: int(up.status()["bars_decided"]) >= int(first["bars_decided"]) + 3,  # type: ignore[call-overload]
               timeout_s=120, what="the trading service to decide 3 more bars", interval_s=1.0)
    status = up.status()
    services = status["services"]
    assert isinstance(services, dict)
    assert {"gateway", "paper_exchange", "market_data", "triton_http", "trading_metrics", "dagster_ui",
            "mlflow_ui"} <= set(services)
    if "prometheus" in up.record()["urls"]:  # type: ignore[operator]  # installed by `make test`; else a warning
        assert {"master_metrics", "alert_context", "playbooks", "alertmanager", "prometheus"} <= set(services)
    assert all(s["healthy"] for s in services.values()), services
    assert status["trading_state"] == "ACTIVE"
    routing = status["routing"]
    assert isinstance(routing, dict) and routing["policies"]["production"]["model"] == "symbol_agent"
    # The demo policy trained here is tiny, so it may fail Go/No-Go: then `*` routes to sl_fallback.
    acting = routing["policies"][routing["routes"]["*"]["variant"]]
    served = status["policy_versions"]
    assert isinstance(served, dict)
    assert acting["version"] in served[acting["model"]]
    assert routing["policies"]["master"]["version"] in served["master_agent"]
    log = up.log.read_text(errors="replace")
    assert up.token("trader") not in log and up.token("admin") not in log


def test_up_when_called_without_token_then_every_mutating_route_refused_with_no_side_effect(up: Up) -> None:
    gateway = str(up.record()["urls"]["gateway"])  # type: ignore[index]
    before = httpx.get(f"{gateway}/v1/state", headers={"Authorization": f"Bearer {up.token('trader')}"}).json()
    for path in MUTATING:
        anonymous = httpx.post(f"{gateway}{path}", json=OPERATOR_BODY)
        assert anonymous.status_code == 401, (path, anonymous.text)
    trader = httpx.post(f"{gateway}/v1/resume", json={**OPERATOR_BODY, "principal": "local-trader"},
                        headers={"Authorization": f"Bearer {up.token('trader')}"})
    assert trader.status_code == 403
    after = httpx.get(f"{gateway}/v1/state", headers={"Authorization": f"Bearer {up.token('trader')}"}).json()
    assert after["trading_state"] == before["trading_state"] == "ACTIVE"


def test_up_when_redis_runs_then_master_directives_reach_the_gateway(up: Up) -> None:
    if not up.record().get("redis"):
        pytest.skip("Redis at the configured URL is not reachable: directives go over HTTP instead")
    gateway = str(up.record()["urls"]["gateway"])  # type: ignore[index]
    headers = {"Authorization": f"Bearer {up.token('trader')}"}

    def directives() -> int:
        summary = httpx.get(f"{gateway}/v1/audit/summary", headers=headers).json()
        return int(summary.get("counts", {}).get("directive", 0))

    wait_until(lambda: directives() >= 1, timeout_s=120, what="a master directive in the gateway's audit",
               interval_s=1.0)
    assert directives() >= 1


def test_up_when_monitoring_installed_then_prometheus_scrapes_every_service_with_the_shipped_rules(up: Up) -> None:
    urls = up.record()["urls"]
    assert isinstance(urls, dict)
    if "prometheus" not in urls:
        pytest.skip("Prometheus/Alertmanager not installed (bash scripts/install_monitoring.sh): up ran without them")
    printed = up.log.read_text(errors="replace").split("marlops is up:", 1)[1]
    for name in ("prometheus", "alertmanager", "alert_context", "playbooks"):
        assert f"{name:<16} {urls[name]}" in printed
    jobs = {"marlops-gateway", "marlops-trading", "triton"} | ({"marlops-master"} if up.record()["redis"] else set())

    def health() -> dict[str, str]:
        targets = httpx.get(f"{urls['prometheus']}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in targets}

    try:
        wait_until(lambda: health() == {job: "up" for job in jobs}, timeout_s=60, interval_s=1.0,
                   what=f"Prometheus to scrape {sorted(jobs)} healthy")
    finally:
        assert health() == {job: "up" for job in jobs}  # on a timeout: which job is missing or down
    rules = httpx.get(f"{urls['prometheus']}/api/v1/rules", timeout=5).json()["data"]["groups"]
    shipped = yaml.safe_load((REPO / "monitoring" / "prometheus" / "alert_rules.yml").read_text())["groups"]
    assert {g["name"] for g in rules} == {g["name"] for g in shipped}
    assert sum(len(g["rules"]) for g in rules) == sum(len(g["rules"]) for g in shipped)
    assert httpx.get(f"{urls['alertmanager']}/-/ready", timeout=5).status_code == 200
    # The webhook's bearer token: a 0600 file, never on a command line or in the log.
    token_file = up.home / "tokens" / "alert_context.token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    assert token and token not in up.log.read_text(errors="replace")
    assert not [cmd for cmd in _processes().values() if token in cmd]
    anonymous = httpx.post(f"{urls['alert_context']}/v1/alertmanager/page", json={"alerts": []}, timeout=5)
    assert anonymous.status_code == 401
    # The playbook runner: the same token, nobody else; it knows every playbook and has run none.
    assert httpx.post(f"{urls['playbooks']}/v1/alertmanager/playbooks", json={"alerts": []},
                      timeout=5).status_code == 401
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{urls['playbooks']}/v1/playbooks/runs", headers=bearer, timeout=5).json() == {"runs": []}
    # Alertmanager was rendered with the runner's receiver on this up's port.
    rendered = yaml.safe_load((up.home / "alertmanager" / "alertmanager.yml").read_text())
    hooks = {h["url"] for r in rendered["receivers"] for h in r["webhook_configs"]}
    assert f"{urls['playbooks']}/v1/alertmanager/playbooks" in hooks


def test_up_when_sigint_then_exits_zero_and_leaves_no_process(up: Up) -> None:
    named = up.record()["pids"]
    assert isinstance(named, dict)
    pids = [int(p) for p in named.values() if p]
    assert len(pids) >= 7
    if "prometheus" in up.record()["urls"]:  # type: ignore[operator]
        assert set(MONITORING) <= set(named)
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(timeout=120) == 0, up.log.read_text(errors="replace")[-3000:]
    assert [p for p in pids if _running(p)] == []
    leftovers = {pid: cmd for pid, cmd in _processes().items() if str(up.home) in cmd or str(up.project) in cmd}
    assert leftovers == {}
    assert not (up.home / "up.json").exists()
