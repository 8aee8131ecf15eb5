"""Each playbook fired by its planted fault, through the whole alerting chain as shipped:

  fault -> the service's /metrics -> real Prometheus (the shipped alert_rules.yml, `for:` set to 0s and 1 s
  intervals so a test waits seconds, not minutes) -> real Alertmanager (the shipped alertmanager.yml rendered by
  the launcher, group waits 0 s) -> the playbook runner (marlops.playbooks) -> the real gateway / routing table,
  audited with the alert that started it; and the people-facing path: the context webhook delivering to a local
  stand-in for Slack and PagerDuty, whose payload carries the incident context.

The gateway runs over the real paper exchange; the trading service's metrics are its own TradingMetrics registry
and ModelAnomalyWatch served over HTTP (a full trading service with Triton is what tests/integration/
test_trading_service.py runs). Faults planted: adverse fills (cost explosion), slow inference through
`timed_inference` (latency spike), the trading service's FEATURE_DRIFT alert (the data -> halt path is
test_data_safety_replay.py's), production answering NaN probabilities (model anomaly), a 20% price drop (drawdown).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from http_receiver import Receiver
from polling import wait_for
from prometheus_client import start_http_server

from contracts.config import KillSwitchConfig, MarketHoursRule, RiskOverlaysConfig
from gateway.app import create_app as create_gateway
from gateway.serve import ServerHandle, free_port, serve_app_in_thread
from gateway.settings import GatewaySettings
from marlops.chaos_procs import BROKER_HEADERS
from marlops.lifecycle.health import AnomalyRules
from marlops.lifecycle.records import LIVE_SCOPE, BarRecord, SymbolBar
from marlops.lifecycle.store import LifecycleStore
from marlops.model_watch import ModelAnomalyWatch
from marlops.paths import StatePaths
from marlops.playbooks.service import PlaybookSettings
from marlops.playbooks.service import create_app as create_playbooks
from marlops.routing import PolicyRef, RoutingChange
from marlops.routing_store import RoutingStore
from marlops.trading import TradingMetrics, timed_inference
from monitoring.alert_context import AlertContextSettings
from monitoring.alert_context import create_app as create_context
from monitoring.alertmanager_launcher import alertmanager_command, find_alertmanager, render_config, write_config
from paper_exchange.app import create_paper_exchange_app

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus" / "alert_rules.yml"
TOKEN = "alertmanager-bearer-token-for-the-playbook-test"
T0 = datetime(2024, 1, 3, 15, 0, tzinfo=timezone.utc)  # one New York session for every bar of the module
WAIT_S = 60.0  # scrape 1 s + evaluation 1 s + Alertmanager flush + the step; generous for a busy CI machine

if shutil.which("prometheus") is None or find_alertmanager() is None:
    pytest.skip("prometheus / alertmanager not installed: run scripts/install_monitoring.sh (make test does)",
                allow_module_level=True)


@dataclass
class Chain:
    exchange: httpx.Client
    gateway: httpx.Client
    runner: httpx.Client
    metrics: TradingMetrics
    watch: ModelAnomalyWatch
    paths: StatePaths
    receiver: Receiver
    alertmanager_url: str
    context_url: str
    bar: int = 0

    def timestep(self, levels: dict[str, float], price: float, exchange_price: float) -> dict[str, Any]:
        """One bar decided at `price` while the exchange fills at `exchange_price` (a gap = slippage)."""
        self.exchange.post("/_sim/prices", json={"prices": {s: exchange_price for s in levels}}).raise_for_status()
        self.bar += 1
        body = {"timestep": (T0 + timedelta(minutes=self.bar)).isoformat(), "bar_index": self.bar,
                "policy_version": "symbol_agent/1",
                "decisions": [{"symbol": s, "action": 0, "target_level": lvl, "price": price}
                              for s, lvl in levels.items()]}
        answer = self.gateway.post("/v1/decisions", json=body, params={"wait": "settled"})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def run_of(self, playbook: str) -> dict[str, Any]:
        """The runner's finished run of `playbook`, waited for."""
        def finished() -> dict[str, Any] | None:
            runs = self.runner.get("/v1/playbooks/runs").json()["runs"]
            return next((r for r in runs if r["playbook"] == playbook and r["status"] != "running"), None)

        return dict(wait_for(finished, f"a finished {playbook} run", timeout_s=WAIT_S))

    def state_changes(self, trigger: str) -> list[dict[str, Any]]:
        events = self.gateway.get("/v1/audit", params={"kind": "state_change", "limit": 200}).json()["events"]
        return [e["payload"] for e in events if e["payload"].get("trigger") == trigger]

    def resume(self) -> None:
        body = {"principal": "ops", "reason": "playbook test: next fault"}
        self.gateway.post("/v1/defensive/clear", json=body).raise_for_status()
        self.gateway.post("/v1/resume", json=body).raise_for_status()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("playbooks")
    servers: list[ServerHandle] = []
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[httpx.Client] = []
    receiver = Receiver()
    try:
        exchange = serve_app_in_thread(create_paper_exchange_app(initial_cash=1_000_000.0))
        servers.append(exchange)
        risk = RiskOverlaysConfig(per_symbol_cap=1.0, max_order_notional=1e9,
                                  market_hours=MarketHoursRule(source="off"),
                                  kill_switch=KillSwitchConfig(max_drawdown=0.9, intraday_drawdown=0.15))
        gateway = serve_app_in_thread(create_gateway(GatewaySettings(
            risk=risk, audit_url=f"sqlite:///{tmp / 'audit.db'}", broker_base_url=exchange.url, fill_wait_s=0.2,
            reconcile_interval_s=0)))
        servers.append(gateway)
        gw = httpx.Client(base_url=gateway.url, timeout=10.0)
        clients.append(gw)
        gw.post("/v1/directives", json={
            "directive_id": "d-normal", "issued_at": T0.isoformat(), "ttl_seconds": 86400.0, "mode": "normal",
            "max_position_size": 1.0, "risk_scale": 1.0, "defensive": False}).raise_for_status()

        metrics = TradingMetrics()
        watch = ModelAnomalyWatch(metrics.registry, AnomalyRules(window_bars=3))
        trading_port = free_port()
        trading_server, _ = start_http_server(trading_port, addr="127.0.0.1", registry=metrics.registry)

        paths = StatePaths(root=tmp / "home", project_root=REPO)
        routing = RoutingStore(paths.state_url)
        routing.apply(RoutingChange(policies={"production": PolicyRef("symbol_agent", 2),
                                              "sl_fallback": PolicyRef("sl_fallback", 1)},
                                    routes={"*": ("production", None)}), principal="test", reason="initial routing")
        routing.close()

        token_file = _secret(tmp / "alertmanager.token", TOKEN)
        context = serve_app_in_thread(create_context(AlertContextSettings(  # type: ignore[call-arg]
            _env_file=None, token_file=token_file, gateway_url=gateway.url, home=paths.root,
            slack_webhook_url=receiver.url + "/slack", pagerduty_routing_key="test-routing-key",
            pagerduty_url=receiver.url + "/pagerduty", source="marlops-playbook-test")))
        servers.append(context)
        runner = serve_app_in_thread(create_playbooks(PlaybookSettings(  # type: ignore[call-arg]
            _env_file=None, token_file=token_file, gateway_url=gateway.url, config_dir=REPO / "config" / "rl"),
            paths=paths))
        servers.append(runner)

        am_config = render_config(context.url, token_file, playbooks_url=runner.url)
        for route in [am_config["route"], *am_config["route"]["routes"]]:
            route["group_wait"], route["group_interval"] = "0s", "1s"
        am_port = free_port()
        binary = find_alertmanager()
        assert binary is not None
        procs.append(subprocess.Popen(
            alertmanager_command(binary, write_config(am_config, tmp / "am"), tmp / "am" / "data",
                                 f"127.0.0.1:{am_port}"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule["for"] = "0s"
        (tmp / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        prom_port = free_port()
        (tmp / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [
                {"job_name": "marlops-gateway", "static_configs": [{"targets": [gateway.url.split("//")[1]]}]},
                {"job_name": "marlops-trading", "static_configs": [{"targets": [f"127.0.0.1:{trading_port}"]}]},
            ]}))
        procs.append(subprocess.Popen(
            [str(shutil.which("prometheus")), f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'prom'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: _ready(f"http://127.0.0.1:{am_port}/-/ready"), "alertmanager ready", timeout_s=WAIT_S)
        wait_for(lambda: _ready(f"http://127.0.0.1:{prom_port}/-/ready"), "prometheus ready", timeout_s=WAIT_S)

        def scraped() -> bool:
            targets = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/targets").json()["data"]["activeTargets"]
            return len(targets) == 2 and all(t["health"] == "up" for t in targets)

        wait_for(scraped, "prometheus scraping the gateway and the trading service", timeout_s=WAIT_S)
        run = httpx.Client(base_url=runner.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10.0)
        ex = httpx.Client(base_url=exchange.url, headers=BROKER_HEADERS, timeout=10.0)
        clients += [run, ex]
        yield Chain(exchange=ex, gateway=gw, runner=run, metrics=metrics, watch=watch, paths=paths, receiver=receiver,
                    alertmanager_url=f"http://127.0.0.1:{am_port}", context_url=context.url)
        trading_server.shutdown()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        for client in clients:
            client.close()
        for server in reversed(servers):
            server.stop()
        receiver.close()


def test_cost_explosion_when_fills_are_adverse_then_defensive_override_and_slack_gets_the_context(
        chain: Chain) -> None:
    # Bought at 102 and sold at 98 on decisions priced 100: 2 $/share adverse each way, no gross profit.
    chain.timestep({"AAPL": 0.5}, price=100.0, exchange_price=102.0)
    chain.timestep({"AAPL": 0.0}, price=100.0, exchange_price=98.0)
    run = chain.run_of("cost_explosion")
    assert run["status"] == "done" and run["alertname"] == "CostRatioHigh"
    override = chain.gateway.get("/v1/status").json()["defensive_override"]
    assert override["trigger"] == "playbook:cost_explosion" and "CostRatioHigh" in override["reason"]
    # The next bar is defensive whatever the master says: no new position.
    answer = chain.timestep({"MSFT": 1.0}, price=50.0, exchange_price=50.0)
    assert [r["reason_code"] for r in answer["risk"]] == ["DEFENSIVE_MODE"]
    rows = [p for p in chain.state_changes("playbook:cost_explosion") if p.get("event") == "defensive_override"]
    assert rows and "CostRatioHigh" in rows[0]["reason"]
    # People hear of it too, with the incident context (the ticket route: Slack only).
    slack = wait_for(lambda: [b for b in chain.receiver.bodies("/slack") if "CostRatioHigh" in b["text"]],
                     "CostRatioHigh at the stand-in Slack", timeout_s=WAIT_S)
    message = json.dumps(slack[0]).lower()
    assert "trading state" in message and "routing" in message and "+inf" in message
    chain.resume()


def test_latency_spike_when_inference_is_slow_then_safe_mode(chain: Chain) -> None:
    slow = timed_inference(chain.metrics, PolicyRef("symbol_agent", 2), lambda _obs: time.sleep(0.3))
    for _ in range(3):  # the planted fault: three 300 ms requests (limit 250 ms p99)
        slow(None)  # type: ignore[arg-type]
    run = chain.run_of("latency_spike")
    assert run["status"] == "done" and run["alertname"] == "SymbolAgentLatencyHigh"
    state = chain.gateway.get("/v1/status").json()
    assert state["trading_state"] == "HALTED" and state["safe_mode"] is not None
    [change] = [p for p in chain.state_changes("playbook:latency_spike") if p.get("event") == "safe_mode"]
    assert "SymbolAgentLatencyHigh" in change["reason"]
    chain.resume()


def test_feature_drift_when_a_key_feature_breaches_then_trading_paused(chain: Chain) -> None:
    # The trading service's FEATURE_DRIFT alert (a key feature beyond its limit; it also halts in band, a path
    # test_data_safety_replay.py proves): the playbook is the second, independent path to the pause.
    chain.metrics.alert.labels("FEATURE_DRIFT").set(1)
    run = chain.run_of("feature_drift")
    assert run["status"] == "done" and run["alertname"] == "FeatureDriftHalt"
    assert chain.gateway.get("/v1/state").json()["trading_state"] == "HALTED"
    [change] = chain.state_changes("playbook:feature_drift")
    assert change["current"] == "HALTED" and "FeatureDriftHalt" in change["reason"]
    chain.metrics.alert.labels("FEATURE_DRIFT").set(0)
    chain.resume()


def _nan_bar(index: int) -> BarRecord:
    stamp = (T0 + timedelta(minutes=100 + index)).isoformat()
    rows = tuple(SymbolBar(bar_index=index, timestamp=stamp, symbol=s, variant="production",
                           policy_version="symbol_agent/2", action=1, probabilities=(float("nan"),) * 3, price=100.0,
                           position_qty=0.0, position_value=0.0, pnl=0.0, cost=0.0, traded_notional=0.0, denied=False,
                           error=False, inference_ms=1.0) for s in ("AAPL", "MSFT"))
    return BarRecord(bar_index=index, timestamp=stamp, symbols=rows, decision_latency_ms=5.0, equity=1e6,
                     trading_state="ACTIVE")


def test_model_anomaly_when_production_answers_nan_then_rolled_back_and_pagerduty_paged(chain: Chain) -> None:
    lifecycle = LifecycleStore(chain.paths.state_url)
    try:
        for index in range(3):  # what `marlops trade` records and watches each bar
            bar = _nan_bar(index)
            lifecycle.append_bars(LIVE_SCOPE, [bar], advance_clock="market")
            chain.watch.observe(bar)
    finally:
        lifecycle.close()
    run = chain.run_of("model_anomaly")
    assert run["status"] == "done" and run["alertname"] == "ModelAnomaly", run
    result = run["steps"][0]["result"]
    assert result["rolled_back"] is True and result["principal"] == "playbook:model_anomaly"
    routing = RoutingStore(chain.paths.state_url)
    try:
        table = routing.read()
    finally:
        routing.close()
    # No last-known-good is registered in this store: the playbook falls back to the SL fallback, as documented.
    assert result["to"] == "sl_fallback" and "ModelAnomaly" in result["reason"] and "MODEL_OUTPUT_NAN" in result["reason"]
    assert table.revision == result["routing_revision"] and table.routes["*"].variant == "sl_fallback"
    page = wait_for(lambda: [e for e in chain.receiver.bodies("/pagerduty")
                             if e["payload"]["custom_details"]["alert"]["alertname"] == "ModelAnomaly"],
                    "ModelAnomaly at the stand-in PagerDuty", timeout_s=WAIT_S)
    details = page[0]["payload"]["custom_details"]
    assert details["trading_state"]["trading_state"] == "ACTIVE" and details["routing_table"]


def test_drawdown_breach_when_price_drops_20_percent_then_kill_switch_and_unwind(chain: Chain) -> None:
    chain.timestep({"AAPL": 1.0}, price=100.0, exchange_price=100.0)
    held = chain.gateway.get("/v1/portfolio").json()["positions"]["AAPL"]["qty"]
    assert held > 5000
    chain.exchange.post("/_sim/prices", json={"prices": {"AAPL": 75.0}}).raise_for_status()
    chain.timestep({"AAPL": 1.0}, price=75.0, exchange_price=75.0)
    run = chain.run_of("drawdown_breach")
    assert run["status"] == "done" and run["alertname"] == "IntradayDrawdownHigh"
    assert [s["step"] for s in run["steps"]] == ["kill_switch", "unwind"]
    changes = chain.state_changes("playbook:drawdown_breach")
    assert {p.get("event") for p in changes} == {"trading_state", "safe_mode"}
    assert all("IntradayDrawdownHigh" in p["reason"] for p in changes)
    chain.timestep({"AAPL": 1.0}, price=75.0, exchange_price=75.0)  # the next interval unwinds everything
    assert chain.gateway.get("/v1/portfolio").json()["positions"].get("AAPL", {"qty": 0.0})["qty"] == 0.0
    assert chain.gateway.get("/v1/state").json()["trading_state"] == "HALTED"


def _drill(chain: Chain, token_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "marlops.cli", "alert-drill", "--alertmanager-url", chain.alertmanager_url,
         "--alert-context-url", chain.context_url, "--token-file", str(token_file), "--timeout", str(WAIT_S),
         "--json", *extra], capture_output=True, text=True, timeout=180, cwd=REPO)


def test_alert_drill_when_paged_then_slack_and_pagerduty_get_it_and_it_resolves_and_no_playbook_runs(
        chain: Chain, tmp_path: Path) -> None:
    done = _drill(chain, _secret(tmp_path / "token", TOKEN), "--severity", "page")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["delivered"] and result["destination"] == "page" and result["resolved_posted"]
    assert set(result["targets"]) == {"slack", "pagerduty"} and result["failures"] == []
    drill_id = result["drill_id"]

    def events(status: str) -> list[dict[str, Any]]:
        return [e for e in chain.receiver.bodies("/pagerduty") if e["event_action"] == status
                and e["payload"]["custom_details"]["alert"]["labels"].get("drill_id") == drill_id]

    trigger = wait_for(lambda: events("trigger"), "the drill's PagerDuty trigger", timeout_s=WAIT_S)[0]
    assert trigger["payload"]["custom_details"]["alert"]["summary"] == "alerting drill: not an incident"
    assert trigger["payload"]["custom_details"]["trading_state"]  # the same incident context as a real alert
    assert any(drill_id in json.dumps(body) for body in chain.receiver.bodies("/slack"))
    resolve = wait_for(lambda: events("resolve"), "the drill's PagerDuty resolve", timeout_s=WAIT_S)[0]
    assert resolve["dedup_key"] == trigger["dedup_key"]
    runs = chain.runner.get("/v1/playbooks/runs").json()["runs"]
    assert not [r for r in runs if r["alertname"] == "MarlopsAlertDrill"]


def test_alert_drill_when_token_is_wrong_then_exit_2_and_nothing_fired(chain: Chain, tmp_path: Path) -> None:
    done = _drill(chain, _secret(tmp_path / "token", "not-the-token"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refused the token (401)" in done.stderr and "not-the-token" not in done.stderr + done.stdout
    # Alertmanager lists no drill alert (the earlier drill resolved its own; resolved alerts are not listed).
    fired = httpx.get(f"{chain.alertmanager_url}/api/v2/alerts", params={"filter": 'alertname="MarlopsAlertDrill"'})
    assert fired.status_code == 200 and fired.json() == []
