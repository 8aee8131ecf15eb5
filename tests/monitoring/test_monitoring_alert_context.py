"""The alert context webhook, served for real: a real gateway over the paper exchange, a real routing store, and
one local HTTP receiver standing in for both Slack and PagerDuty (and, last, the real Alertmanager in front)."""

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_receiver import Receiver
from polling import wait_for

from contracts.config import RiskOverlaysConfig
from contracts.decisions import MasterDirective, SymbolDecision, TimestepDecisions
from gateway.app import create_app as create_gateway
from gateway.directives import InProcessDirectiveSource
from gateway.serve import ServerHandle, free_port, serve_app_in_thread
from gateway.settings import GatewaySettings
from gateway.tokens import new_token
from marlops.routing_store import RoutingStore
from monitoring.alert_context import (
    AlertContextError,
    AlertContextSettings,
    AmNotification,
    build_context,
    create_app,
    pagerduty_events,
)
from monitoring.alertmanager_launcher import alertmanager_command, find_alertmanager, render_config, write_config

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=timezone.utc)
WEBHOOK_TOKEN = "am-to-webhook-test-token"
ROUTING_KEY = "pd-routing-key-test"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def gateway(tmp_path: Path, paper_exchange: ServerHandle, exchange_http: httpx.Client
            ) -> Iterator[tuple[ServerHandle, Path]]:
    """A real gateway with authentication on, that has traded one bar; and the viewer token file."""
    viewer, viewer_grant = new_token("alert-context", "viewer")
    trader, trader_grant = new_token("trader", "trader")
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    bus = InProcessDirectiveSource()
    settings = GatewaySettings(risk=RiskOverlaysConfig(), audit_url=f"sqlite:///{tmp_path / 'audit.db'}",
                               broker_base_url=paper_exchange.url, fill_wait_s=0.2,
                               api_tokens=(viewer_grant, trader_grant))
    handle = serve_app_in_thread(create_gateway(settings, directive_source=bus))
    bus.publish(MasterDirective(directive_id="d-1", issued_at=T0, ttl_seconds=10 * 86400, mode="normal",
                                max_position_size=0.1, risk_scale=1.0, defensive=False))
    bar = TimestepDecisions(timestep=T0, bar_index=0, policy_version="v1",
                            decisions=(SymbolDecision(symbol="AAPL", action=0, target_level=1.0, price=100.0),))
    answer = httpx.post(handle.url + "/v1/decisions", params={"wait": "settled"}, content=bar.model_dump_json(),
                        headers={"content-type": "application/json", "authorization": f"Bearer {trader}"})
    assert answer.status_code == 200, answer.text
    yield handle, _secret_file(tmp_path / "viewer.token", viewer)
    handle.stop()


def _settings(tmp_path: Path, receiver: Receiver, gateway_url: str, **overrides: Any) -> AlertContextSettings:
    fields: dict[str, Any] = {
        "token_file": _secret_file(tmp_path / "webhook.token", WEBHOOK_TOKEN),
        "gateway_url": gateway_url, "home": tmp_path / "home",
        "slack_webhook_url": receiver.url + "/slack", "pagerduty_routing_key": ROUTING_KEY,
        "pagerduty_url": receiver.url + "/pagerduty", "source": "marlops-test", "gateway_timeout_s": 1.0,
        **overrides,
    }
    return AlertContextSettings(_env_file=None, **fields)  # type: ignore[call-arg]


@pytest.fixture
def serve() -> Iterator[Any]:
    handles: list[ServerHandle] = []

    def start(settings: AlertContextSettings) -> ServerHandle:
        handles.append(serve_app_in_thread(create_app(settings)))
        return handles[-1]

    yield start
    for handle in handles:
        handle.stop()


def notification(alertname: str, severity: str, *, status: str = "firing", value: str = "0.031",
                 fingerprint: str = "fp01") -> dict[str, Any]:
    """An Alertmanager version-4 webhook body with one alert."""
    labels = {"alertname": alertname, "severity": severity, "job": "gateway", "symbol": "AAPL"}
    return {
        "version": "4", "groupKey": "{}:{alertname=\"%s\"}" % alertname, "truncatedAlerts": 0, "status": status,
        "receiver": f"marlops-{severity}", "groupLabels": {"alertname": alertname, "severity": severity},
        "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://alertmanager.test:9093",
        "alerts": [{"status": status, "labels": labels,
                    "annotations": {"summary": f"{alertname} on AAPL", "value": value},
                    "startsAt": "2024-01-02T21:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus.test/graph", "fingerprint": fingerprint}],
    }


def _post(webhook: ServerHandle, destination: str, body: dict[str, Any], token: str | None = WEBHOOK_TOKEN
          ) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{webhook.url}/v1/alertmanager/{destination}", json=body, headers=headers, timeout=10)


def test_page_when_gateway_up_then_slack_and_pagerduty_carry_the_incident_context(
        tmp_path: Path, receiver: Receiver, gateway: tuple[ServerHandle, Path], serve: Any) -> None:
    handle, viewer_file = gateway
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    RoutingStore(state_url).close()  # the marlops routing store's own tables, revision 0
    webhook = serve(_settings(tmp_path, receiver, handle.url, gateway_token_file=viewer_file, state_url=state_url))

    answer = _post(webhook, "page", notification("CostRatioHigh", "page"))

    assert answer.status_code == 200, answer.text
    assert answer.json()["unavailable"] == {}
    [slack] = receiver.bodies("/slack")
    assert "CostRatioHigh" in slack["text"] and "FIRING" in slack["text"]
    rendered = json.dumps(slack["blocks"])
    assert "value=0.031" in rendered and "ACTIVE" in rendered and "AAPL" in rendered
    [event] = receiver.bodies("/pagerduty")
    assert event["routing_key"] == ROUTING_KEY and event["event_action"] == "trigger"
    assert event["dedup_key"] == "CostRatioHigh-fp01"
    assert event["payload"]["severity"] == "critical" and event["payload"]["source"] == "marlops-test"
    details = event["payload"]["custom_details"]
    assert details["alert"]["value"] == "0.031" and details["alert"]["labels"]["symbol"] == "AAPL"
    assert details["trading_state"]["trading_state"] == "ACTIVE"
    assert any(e["kind"] in ("order", "fill") for e in details["recent_orders"])
    assert any(e["kind"] == "decision" for e in details["recent_decisions"])
    assert isinstance(details["gateway_alerts"], list)
    assert details["routing_table"]["revision"] == 0 and "routes" in json.dumps(details["routing_table"]["table"])
    assert details["unavailable"] == {}

    # Resolved: the same dedup_key closes that PagerDuty incident.
    assert _post(webhook, "page", notification("CostRatioHigh", "page", status="resolved")).status_code == 200
    assert receiver.bodies("/pagerduty")[-1]["event_action"] == "resolve"
    assert receiver.bodies("/pagerduty")[-1]["dedup_key"] == "CostRatioHigh-fp01"


def test_post_when_token_missing_or_wrong_then_401_and_nothing_forwarded(
        tmp_path: Path, receiver: Receiver, serve: Any) -> None:
    webhook = serve(_settings(tmp_path, receiver, f"http://127.0.0.1:{free_port()}"))

    assert _post(webhook, "page", notification("ServiceDown", "page"), token=None).status_code == 401
    assert _post(webhook, "page", notification("ServiceDown", "page"), token="wrong").status_code == 401
    assert _post(webhook, "page", {"not": "a notification"}, token=None).status_code == 401  # before the body
    assert receiver.posts == []


def test_page_when_gateway_and_state_store_down_then_still_forwarded_naming_the_gaps(
        tmp_path: Path, receiver: Receiver, serve: Any) -> None:
    webhook = serve(_settings(tmp_path, receiver, f"http://127.0.0.1:{free_port()}"))

    answer = _post(webhook, "page", notification("TradingHalted", "page", value="1"))

    assert answer.status_code == 200, answer.text
    [event] = receiver.bodies("/pagerduty")
    gaps = event["payload"]["custom_details"]["unavailable"]
    assert set(gaps) == {"trading_state", "recent_orders", "recent_decisions", "gateway_alerts", "routing_table"}
    assert "unreachable" in gaps["trading_state"] and "no state store" in gaps["routing_table"]
    assert event["payload"]["custom_details"]["trading_state"] is None
    [slack] = receiver.bodies("/slack")
    assert "Context not available" in json.dumps(slack["blocks"])
    assert not (tmp_path / "home" / "state.db").exists()  # a missing store is reported, not created


def test_ticket_when_posted_then_slack_only(tmp_path: Path, receiver: Receiver, serve: Any) -> None:
    webhook = serve(_settings(tmp_path, receiver, f"http://127.0.0.1:{free_port()}"))

    assert _post(webhook, "ticket", notification("FeedProviderQuarantined", "ticket")).status_code == 200

    assert len(receiver.bodies("/slack")) == 1 and receiver.bodies("/pagerduty") == []


def test_post_when_slack_fails_then_502_so_alertmanager_retries(
        tmp_path: Path, receiver: Receiver, serve: Any) -> None:
    webhook = serve(_settings(tmp_path, receiver, f"http://127.0.0.1:{free_port()}"))
    receiver.status = 500

    answer = _post(webhook, "ticket", notification("ReconcileMismatch", "ticket"))

    assert answer.status_code == 502 and "slack: HTTP 500" in answer.text
    assert receiver.url not in answer.text  # the Slack URL is the secret: never echoed


def test_create_app_when_token_file_unsafe_or_absent_or_no_slack_then_refuses(
        tmp_path: Path, receiver: Receiver) -> None:
    settings = _settings(tmp_path, receiver, "http://127.0.0.1:1")
    settings.token_file.chmod(0o644)  # type: ignore[union-attr]
    with pytest.raises(AlertContextError, match="readable by others"):
        create_app(settings)
    with pytest.raises(AlertContextError, match="TOKEN_FILE is not set"):
        create_app(_settings(tmp_path, receiver, "http://127.0.0.1:1", token_file=None))
    with pytest.raises(AlertContextError, match="SLACK_WEBHOOK_URL"):
        create_app(_settings(tmp_path, receiver, "http://127.0.0.1:1", slack_webhook_url=None))
    create_app(_settings(tmp_path, receiver, "http://127.0.0.1:1", token_file=None), insecure_no_auth=True)


@pytest.mark.skipif(find_alertmanager() is None,
                    reason="alertmanager not installed: scripts/install_monitoring.sh installs prometheus-alertmanager")
def test_real_alertmanager_when_alerts_posted_then_routed_through_webhook_and_halt_inhibits(
        tmp_path: Path, receiver: Receiver, serve: Any) -> None:
    settings = _settings(tmp_path, receiver, f"http://127.0.0.1:{free_port()}")
    webhook = serve(settings)
    config = render_config(webhook.url, settings.token_file)  # type: ignore[arg-type]
    # No batching wait in a test: the production waits are checked by test_monitoring_alertmanager.py.
    for route in [config["route"], *config["route"]["routes"]]:
        route["group_wait"] = "0s"
    path = write_config(config, tmp_path / "am")
    port = free_port()
    binary = find_alertmanager()
    assert binary is not None
    am = subprocess.Popen(alertmanager_command(binary, path, tmp_path / "am" / "data", f"127.0.0.1:{port}"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        api = f"http://127.0.0.1:{port}/api/v2/alerts"

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "alertmanager ready")

        def alert(name: str, severity: str) -> dict[str, Any]:
            return {"labels": {"alertname": name, "severity": severity, "symbol": "AAPL"},
                    "annotations": {"summary": name, "value": "7"}}

        def received(name: str) -> list[Any]:
            return [b for p, b in receiver.posts if p == "/slack" and name in b["text"]]

        httpx.post(api, json=[alert("TradingHalted", "page")]).raise_for_status()
        wait_for(lambda: received("TradingHalted"), "TradingHalted at the stand-in Slack")
        wait_for(lambda: receiver.bodies("/pagerduty"), "TradingHalted at the stand-in PagerDuty")
        assert receiver.bodies("/pagerduty")[0]["payload"]["custom_details"]["alert"]["value"] == "7"

        # The halt explains the drawdown: only the unrelated ticket gets through.
        httpx.post(api, json=[alert("IntradayDrawdownHigh", "page"), alert("DirectiveBusDown", "ticket")]
                   ).raise_for_status()
        wait_for(lambda: received("DirectiveBusDown"), "DirectiveBusDown at the stand-in Slack")

        def drawdown_inhibited() -> bool:
            alerts = httpx.get(api, params={"filter": 'alertname="IntradayDrawdownHigh"'}).json()
            return bool(alerts) and alerts[0]["status"]["state"] == "suppressed" and \
                bool(alerts[0]["status"]["inhibitedBy"])

        wait_for(drawdown_inhibited, "IntradayDrawdownHigh suppressed by TradingHalted in alertmanager")
        assert received("IntradayDrawdownHigh") == []
        assert len(receiver.bodies("/pagerduty")) == 1
    finally:
        am.terminate()
        try:
            am.wait(10)
        except subprocess.TimeoutExpired:
            am.kill()
            am.wait()


def test_forward_when_logged_at_debug_then_no_secret_in_the_log(
        tmp_path: Path, receiver: Receiver, serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs request URLs at INFO; the Slack URL, the routing key and the tokens must never reach a log."""
    secret_path = "/slack/T000/B000/XXXXSECRET"
    webhook = serve(_settings(tmp_path, receiver, f"http://127.0.0.1:{free_port()}",
                              slack_webhook_url=receiver.url + secret_path))
    caplog.set_level("DEBUG")

    assert _post(webhook, "page", notification("ServiceDown", "page")).status_code == 200
    assert _post(webhook, "page", notification("ServiceDown", "page"), token="wrong-token").status_code == 401

    assert receiver.bodies(secret_path) and receiver.bodies("/pagerduty")
    for secret in ("XXXXSECRET", ROUTING_KEY, WEBHOOK_TOKEN, "wrong-token"):
        assert secret not in caplog.text


def test_settings_when_environment_set_then_prefixed_names_and_shared_marlops_names(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", "/not/marlops")  # $HOME is not MARLOPS_HOME
    monkeypatch.delenv("MARLOPS_HOME", raising=False)
    monkeypatch.delenv("MARLOPS_STATE_URL", raising=False)
    monkeypatch.setenv("MARLOPS_ALERT_CONTEXT_SLACK_WEBHOOK_URL", "https://hooks.example/secret")
    monkeypatch.setenv("MARLOPS_ALERT_CONTEXT_GATEWAY_URL", "http://gw:8080")
    settings = AlertContextSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.gateway_url == "http://gw:8080" and settings.home == Path(".marlops")
    assert "secret" not in repr(settings)
    monkeypatch.setenv("MARLOPS_STATE_URL", "sqlite:////srv/state.db")
    assert AlertContextSettings(_env_file=None).effective_state_url == "sqlite:////srv/state.db"  # type: ignore[call-arg]


def test_pagerduty_event_when_context_too_large_then_lists_halved_under_the_limit() -> None:
    big = [{"seq": i, "kind": "decision", "payload": {"detail": "x" * 40_000}} for i in range(20)]
    read = {"trading_state": {"trading_state": "HALTED"}, "recent_orders": [], "recent_decisions": big,
            "gateway_alerts": [], "routing_table": None, "unavailable": {}}
    context = build_context(AmNotification(**notification("TradingHalted", "page")), read, "page")

    [event] = pagerduty_events(context, ROUTING_KEY, "src")

    assert len(json.dumps(event)) < 512_000 and event["payload"]["custom_details"]["clipped"] is True
    assert 0 < len(event["payload"]["custom_details"]["recent_decisions"]) < 20
