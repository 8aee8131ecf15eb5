"""The gateway's HTTP API, served by uvicorn, routing through alpaca-py to the real paper exchange."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from gateway_builders import batch, directive

from contracts.config import RiskOverlaysConfig
from contracts.decisions import TimestepDecisions
from gateway.app import create_app
from gateway.directives import InProcessDirectiveSource
from gateway.serve import ServerHandle, ServerStartError, free_port, serve_app_in_thread
from gateway.settings import ApiToken, GatewaySettings
from gateway.tokens import hash_token

GatewayFactory = Callable[..., ServerHandle]


@pytest.fixture
def bus() -> InProcessDirectiveSource:
    return InProcessDirectiveSource()


@pytest.fixture
def make_gateway(
    tmp_path: Path, paper_exchange: ServerHandle, bus: InProcessDirectiveSource
) -> Iterator[GatewayFactory]:
    handles: list[ServerHandle] = []

    def factory(**overrides: Any) -> ServerHandle:
        settings = GatewaySettings(**{
            "risk": RiskOverlaysConfig(),
            "audit_url": f"sqlite:///{tmp_path / 'gateway' / 'audit.db'}",
            "broker_base_url": paper_exchange.url,
            "fill_wait_s": 0.2,
            **overrides,
        })
        handle = serve_app_in_thread(create_app(settings, directive_source=bus))
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        if handle.running:
            handle.stop()


@pytest.fixture
def gateway(make_gateway: GatewayFactory, bus: InProcessDirectiveSource, exchange_http: httpx.Client) -> ServerHandle:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 200.0}}).raise_for_status()
    handle = make_gateway()
    bus.publish(directive("normal"))
    return handle


def post(handle: ServerHandle, decisions: TimestepDecisions, **kwargs: Any) -> httpx.Response:
    return httpx.post(handle.url + "/v1/decisions", content=decisions.model_dump_json(),
                      headers={"content-type": "application/json", **kwargs.pop("headers", {})}, **kwargs)


def audit_counts(handle: ServerHandle) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(handle.url + "/v1/audit/summary").json()["counts"]
    return counts


def test_post_decisions_when_valid_then_orders_filled_and_portfolio_updated(
    gateway: ServerHandle, exchange_http: httpx.Client
) -> None:
    response = post(gateway, batch({"AAPL": (1.0, 100.0), "MSFT": (-0.5, 200.0)}))
    assert response.status_code == 200
    body = response.json()
    assert body["trading_state"] == "ACTIVE" and body["directive_fallback"] is False
    assert body["directive"]["directive_id"] == "d-1"
    assert [(o["symbol"], o["side"], o["qty"], o["status"]) for o in body["orders"]] == [
        ("AAPL", "buy", 1000.0, "filled"), ("MSFT", "sell", 250.0, "filled")]
    positions = httpx.get(gateway.url + "/v1/portfolio").json()["positions"]
    assert positions["AAPL"]["qty"] == 1000.0 and positions["MSFT"]["qty"] == -250.0
    assert positions["AAPL"]["weight"] == pytest.approx(0.1)
    assert exchange_http.get("/_sim/state").json()["fills"] == 2


def test_post_decisions_when_json_malformed_then_422_with_reason_and_no_audit_row(
    gateway: ServerHandle, exchange_http: httpx.Client
) -> None:
    before = audit_counts(gateway)
    response = httpx.post(gateway.url + "/v1/decisions", content=b'{"timestep": ',
                          headers={"content-type": "application/json"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert any("JSON decode error" in r for r in body["reasons"])
    assert audit_counts(gateway) == before
    assert exchange_http.get("/_sim/state").json()["orders"] == 0


def test_post_decisions_when_field_invalid_then_422_names_field(gateway: ServerHandle) -> None:
    good = batch({"AAPL": (1.0, 100.0)}).model_dump(mode="json")
    good["decisions"][0]["price"] = -5
    response = httpx.post(gateway.url + "/v1/decisions", json=good)
    assert response.status_code == 422
    assert any(r.startswith("body.decisions.0.price") and "-5" in r for r in response.json()["reasons"])


def test_post_decisions_when_symbol_duplicated_then_422_and_nothing_audited(gateway: ServerHandle) -> None:
    before = audit_counts(gateway)
    duplicated = batch({"AAPL": (1.0, 100.0)})
    duplicated = duplicated.model_copy(update={"decisions": duplicated.decisions * 2})
    response = post(gateway, duplicated)
    assert response.status_code == 422
    assert response.json()["reasons"] == ["decisions: symbol 'AAPL' appears more than once in one timestep"]
    assert audit_counts(gateway) == before


def test_post_decisions_when_bar_replayed_then_409_and_no_second_order(
    gateway: ServerHandle, exchange_http: httpx.Client
) -> None:
    assert post(gateway, batch({"AAPL": (1.0, 100.0)}, bar_index=5)).status_code == 200
    again = post(gateway, batch({"AAPL": (0.5, 100.0)}, bar_index=5))
    assert again.status_code == 409
    assert "already decided at bar_index 5" in again.json()["reasons"][0]
    assert exchange_http.get("/_sim/state").json()["orders"] == 1


def test_kill_switch_when_posted_then_halted_audited_and_next_timestep_denied(
    gateway: ServerHandle, exchange_http: httpx.Client
) -> None:
    response = httpx.post(gateway.url + "/v1/kill-switch", json={"reason": "drill", "principal": "alice"})
    assert response.json() == {"trading_state": "HALTED", "changed": True, "event": {
        "previous": "ACTIVE", "current": "HALTED", "principal": "alice", "reason": "drill"}}
    assert httpx.get(gateway.url + "/v1/state").json()["trading_state"] == "HALTED"
    event = httpx.get(gateway.url + "/v1/audit", params={"kind": "state_change", "limit": 1}).json()["events"][0]
    assert event["principal"] == "alice" and event["payload"]["reason"] == "drill"
    body = post(gateway, batch({"AAPL": (1.0, 100.0)})).json()
    assert [r["reason_code"] for r in body["risk"]] == ["TRADING_HALTED"] and body["orders"] == []
    assert exchange_http.get("/_sim/state").json()["orders"] == 0
    resumed = httpx.post(gateway.url + "/v1/resume", json={"reason": "drill over", "principal": "bob"})
    assert resumed.json()["trading_state"] == "ACTIVE"


def test_kill_switch_when_reason_missing_then_422(gateway: ServerHandle) -> None:
    response = httpx.post(gateway.url + "/v1/kill-switch", json={"principal": "alice"})
    assert response.status_code == 422
    assert any("reason" in r for r in response.json()["reasons"])
    assert httpx.get(gateway.url + "/v1/state").json()["trading_state"] == "ACTIVE"


def test_start_when_audit_says_halted_then_gateway_restarts_halted(gateway: ServerHandle,
                                                                   make_gateway: GatewayFactory) -> None:
    httpx.post(gateway.url + "/v1/kill-switch", json={"reason": "incident 42", "principal": "alice"})
    gateway.stop()
    restarted = make_gateway()
    assert httpx.get(restarted.url + "/healthz").json()["trading_state"] == "HALTED"


def test_start_when_broker_holds_positions_then_portfolio_reconciled(
    paper_exchange: ServerHandle, exchange_http: httpx.Client, make_gateway: GatewayFactory
) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    TradingClient("marlops-paper", "marlops-paper-secret", url_override=paper_exchange.url).submit_order(
        MarketOrderRequest(symbol="AAPL", qty=7, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
    handle = make_gateway()
    portfolio = httpx.get(handle.url + "/v1/portfolio").json()
    assert portfolio["positions"]["AAPL"]["qty"] == -7.0
    assert portfolio["cash"] == pytest.approx(1_000_700.0)
    reconciled = httpx.get(handle.url + "/v1/audit", params={"kind": "state_change"}).json()["events"][0]
    assert reconciled["payload"]["event"] == "reconciled"


def test_post_decisions_when_broker_rejects_then_order_rejected_and_audited(
    gateway: ServerHandle,
) -> None:
    body = post(gateway, batch({"NOPX": (1.0, 50.0)})).json()
    assert body["orders"][0]["status"] == "rejected"
    assert "no price for symbol 'NOPX'" in body["orders"][0]["error"]
    rejected = httpx.get(gateway.url + "/v1/audit", params={"kind": "order", "limit": 1}).json()["events"][0]
    assert rejected["payload"]["status"] == "rejected" and rejected["payload"]["http_status"] == 422
    assert "NOPX" not in httpx.get(gateway.url + "/v1/portfolio").json()["positions"]
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'marlops_gateway_orders_rejected_total{reason="http_422"} 1.0' in metrics


def test_post_decisions_when_partially_filled_then_half_applied_and_symbol_pending(
    gateway: ServerHandle, exchange_http: httpx.Client
) -> None:
    exchange_http.post("/_sim/config", json={"fill_ratio": 0.5}).raise_for_status()
    body = post(gateway, batch({"AAPL": (1.0, 100.0)})).json()
    assert body["orders"][0]["status"] == "partially_filled" and body["orders"][0]["filled_qty"] == 500.0
    assert body["portfolio"]["positions"]["AAPL"]["qty"] == 500.0
    assert body["portfolio"]["open_orders"] == [body["orders"][0]["client_order_id"]]
    following = post(gateway, batch({"AAPL": (1.0, 100.0)}, bar_index=1)).json()
    assert following["risk"][0]["reason_code"] == "ORDER_PENDING" and following["orders"] == []


def test_post_directive_when_sent_over_http_then_audited_and_used(make_gateway: GatewayFactory,
                                                                  exchange_http: httpx.Client) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    handle = make_gateway()
    assert post(handle, batch({"AAPL": (1.0, 100.0)})).json()["directive_fallback"] is True
    sent = httpx.post(handle.url + "/v1/directives",
                      content=directive("cautious", max_position_size=0.05, risk_scale=0.6).model_dump_json(),
                      headers={"content-type": "application/json"})
    assert sent.status_code == 202
    body = post(handle, batch({"AAPL": (1.0, 100.0)}, bar_index=1)).json()
    assert body["directive_fallback"] is False and body["overlay"]["mode"] == "cautious"
    assert body["orders"][0]["qty"] == 300.0  # 1.0 * min(0.10, 0.05) * 0.6 of 1M at $100
    assert audit_counts(handle)["directive"] == 1


def test_metrics_when_timestep_handled_then_counters_and_state_exported(gateway: ServerHandle) -> None:
    post(gateway, batch({"AAPL": (1.0, 100.0), "MSFT": (1.0, 200.0)}))
    httpx.post(gateway.url + "/v1/kill-switch", json={"reason": "drill", "principal": "alice"})
    post(gateway, batch({"AAPL": (0.0, 100.0)}, bar_index=1))
    text = httpx.get(gateway.url + "/metrics").text
    assert "marlops_gateway_decisions_total 3.0" in text
    assert 'marlops_gateway_orders_submitted_total{side="buy"} 2.0' in text
    assert "marlops_gateway_orders_filled_total 2.0" in text
    assert 'marlops_gateway_risk_denials_total{reason="TRADING_HALTED"} 1.0' in text
    assert 'marlops_gateway_trading_state{state="HALTED"} 1.0' in text
    assert "marlops_gateway_decision_seconds_count 2.0" in text


def test_audit_when_kind_unknown_then_422_and_when_filtered_then_only_that_kind(gateway: ServerHandle) -> None:
    post(gateway, batch({"AAPL": (1.0, 100.0)}))
    assert httpx.get(gateway.url + "/v1/audit", params={"kind": "bogus"}).status_code == 422
    fills = httpx.get(gateway.url + "/v1/audit", params={"kind": "fill", "limit": 5}).json()
    assert fills["count"] == 1 and fills["events"][0]["payload"]["symbol"] == "AAPL"
    summary = httpx.get(gateway.url + "/v1/audit/summary").json()
    assert summary["chain_ok"] is True and summary["total"] == sum(summary["counts"].values())


def test_start_when_broker_unreachable_then_server_start_fails(tmp_path: Path) -> None:
    settings = GatewaySettings(risk=RiskOverlaysConfig(), audit_url=f"sqlite:///{tmp_path / 'a.db'}",
                               broker_base_url=f"http://127.0.0.1:{free_port()}", broker_timeout_s=1.0)
    with pytest.raises(ServerStartError, match="failed to start"):
        serve_app_in_thread(create_app(settings))


TOKENS = {
    "t-view": ApiToken(principal="vera", role="viewer", token_sha256=hash_token("t-view")),
    "t-trade": ApiToken(principal="tom", role="trader", token_sha256=hash_token("t-trade")),
    "t-risk": ApiToken(principal="rita", role="risk_officer", token_sha256=hash_token("t-risk")),
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_auth_when_tokens_configured_then_roles_enforced(make_gateway: GatewayFactory,
                                                         exchange_http: httpx.Client) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    handle = make_gateway(api_tokens=tuple(TOKENS.values()))
    url = handle.url
    assert httpx.get(url + "/healthz").status_code == 200
    assert httpx.get(url + "/v1/portfolio").status_code == 401
    assert httpx.get(url + "/v1/portfolio", headers=auth("t-nope")).status_code == 401
    assert httpx.get(url + "/v1/portfolio", headers=auth("t-view")).status_code == 200
    denied = post(handle, batch({"AAPL": (1.0, 100.0)}), headers=auth("t-view"))
    assert denied.status_code == 403 and "viewer" in denied.json()["reasons"][0]
    assert post(handle, batch({"AAPL": (1.0, 100.0)}), headers=auth("t-trade")).status_code == 200
    spoofed = httpx.post(url + "/v1/kill-switch", json={"reason": "x", "principal": "rita"}, headers=auth("t-trade"))
    assert spoofed.status_code == 403
    halted = httpx.post(url + "/v1/kill-switch", json={"reason": "x", "principal": "tom"}, headers=auth("t-trade"))
    assert halted.json()["trading_state"] == "HALTED"
    trader_resume = httpx.post(url + "/v1/resume", json={"reason": "y", "principal": "tom"}, headers=auth("t-trade"))
    assert trader_resume.status_code == 403
    resumed = httpx.post(url + "/v1/resume", json={"reason": "y", "principal": "rita"}, headers=auth("t-risk"))
    assert resumed.json()["trading_state"] == "ACTIVE"
