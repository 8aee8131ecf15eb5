"""The gateway's HTTP API, served by uvicorn, routing through alpaca-py to the real paper exchange."""

import functools
from collections.abc import Callable
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
def make_gateway(make_gateway: GatewayFactory, bus: InProcessDirectiveSource) -> GatewayFactory:
    """tests/gateway/conftest.py's, every gateway reading the test's in-process directive source."""
    return functools.partial(make_gateway, directive_source=bus)


@pytest.fixture
def gateway(make_gateway: GatewayFactory, bus: InProcessDirectiveSource, exchange_http: httpx.Client) -> ServerHandle:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 200.0}}).raise_for_status()
    handle = make_gateway()
    bus.publish(directive("normal"))
    return handle


def post(handle: ServerHandle, decisions: TimestepDecisions, *, wait: str = "settled", **kwargs: Any) -> httpx.Response:
    """POST a timestep; by default wait for its orders to settle (these tests read the fills in the answer)."""
    return httpx.post(handle.url + "/v1/decisions", params={"wait": wait}, content=decisions.model_dump_json(),
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


def test_post_decisions_when_trigger_unknown_or_flag_lower_case_then_422_names_it_and_nothing_audited(
        gateway: ServerHandle) -> None:
    before = audit_counts(gateway)
    body = batch({"AAPL": (1.0, 100.0)}).model_dump(mode="json")
    response = httpx.post(gateway.url + "/v1/decisions", json={**body, "triggers": [
        {"code": "HALT_EVERYTHING", "reason": "no such trigger"}]})
    assert response.status_code == 422
    assert any(r.startswith("body.triggers.0") and "HALT_EVERYTHING" in r for r in response.json()["reasons"])
    body["decisions"][0]["no_new_risk"] = "stale"
    response = httpx.post(gateway.url + "/v1/decisions", json=body)
    assert response.status_code == 422
    assert any(r.startswith("body.decisions.0.no_new_risk") for r in response.json()["reasons"])
    assert audit_counts(gateway) == before


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
        "previous": "ACTIVE", "current": "HALTED", "principal": "alice", "reason": "drill", "trigger": "manual"}}
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
    reconciled = httpx.get(handle.url + "/v1/audit", params={"kind": "reconciliation"}).json()["events"][0]
    assert reconciled["payload"]["positions"]["AAPL"]["qty"] == -7.0 and reconciled["payload"]["mismatches"] == []


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


def test_flatten_when_positions_held_then_halted_with_safe_mode_plan_and_alert(gateway: ServerHandle) -> None:
    assert post(gateway, batch({"AAPL": (1.0, 100.0)})).status_code == 200
    answer = httpx.post(gateway.url + "/v1/flatten", json={"principal": "rita", "reason": "desk closing"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["trading_state"] == "HALTED" and body["changed"] is True
    assert body["event"]["principal"] == "rita" and body["event"]["reason"] == "desk closing"
    assert body["safe_mode"] is not None and body["safe_mode"]["remaining_positions"] == 1
    status = httpx.get(gateway.url + "/v1/status").json()
    assert status["trading_state"] == "HALTED" and status["safe_mode"]["flat"] is False
    alerts = httpx.get(gateway.url + "/v1/alerts").json()["alerts"]
    assert any(a["severity"] == "critical" and "safe mode by rita" in a["detail"] for a in alerts), alerts


def test_flatten_when_principal_blank_then_422_and_still_active(gateway: ServerHandle) -> None:
    answer = httpx.post(gateway.url + "/v1/flatten", json={"principal": " ", "reason": "x"})
    assert answer.status_code == 422 and answer.json()["reasons"][0].startswith("body.principal")
    assert httpx.get(gateway.url + "/v1/status").json()["trading_state"] == "ACTIVE"


def test_reconcile_when_posted_then_report_names_requester_and_is_audited(gateway: ServerHandle) -> None:
    before = audit_counts(gateway).get("reconciliation", 0)
    answer = httpx.post(gateway.url + "/v1/reconcile", json={"principal": "rita", "reason": "eod check"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["requested_by"] == "rita" and answer.json()["trading_state"] == "ACTIVE"
    assert audit_counts(gateway)["reconciliation"] == before + 1
    row = httpx.get(gateway.url + "/v1/audit", params={"kind": "reconciliation", "limit": 1}).json()["events"][0]
    assert row["payload"]["requested_by"] == "rita" and row["payload"]["reason"] == "eod check"
    assert httpx.get(gateway.url + "/v1/status").json()["last_reconcile"] is not None


def test_orders_when_listed_then_orders_and_fills_only_newest_first(gateway: ServerHandle) -> None:
    post(gateway, batch({"AAPL": (1.0, 100.0), "MSFT": (-0.5, 200.0)}))
    counts = audit_counts(gateway)
    page = httpx.get(gateway.url + "/v1/orders").json()
    assert page["count"] == counts["order"] + counts["fill"] == len(page["events"])
    assert {e["kind"] for e in page["events"]} == {"order", "fill"}
    seqs = [e["seq"] for e in page["events"]]
    assert seqs == sorted(seqs, reverse=True)
    newest = httpx.get(gateway.url + "/v1/orders", params={"limit": 2}).json()["events"]
    assert [e["seq"] for e in newest] == seqs[:2]
    older = httpx.get(gateway.url + "/v1/orders", params={"before_seq": seqs[1]}).json()["events"]
    assert [e["seq"] for e in older] == seqs[2:]


def test_decisions_when_listed_then_decisions_and_risk_decisions_newest_first(gateway: ServerHandle) -> None:
    post(gateway, batch({"AAPL": (1.0, 100.0), "MSFT": (-0.5, 200.0)}))
    events = httpx.get(gateway.url + "/v1/decisions", params={"limit": 1000}).json()["events"]
    assert sorted(e["kind"] for e in events) == ["decision", "decision", "risk_decision", "risk_decision"]
    assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)
    assert {e["payload"]["symbol"] for e in events} == {"AAPL", "MSFT"}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"before_seq": 0}, {"before_seq": 2**63},
                                    {"limit": "many"}])
def test_event_listings_when_paging_out_of_range_then_422_naming_parameter(
    gateway: ServerHandle, params: dict[str, Any]
) -> None:
    for path in ("/v1/orders", "/v1/decisions", "/v1/audit"):
        answer = httpx.get(gateway.url + path, params=params)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["reasons"][0].startswith(f"query.{next(iter(params))}")


def test_exposure_when_positions_in_sectors_then_long_short_and_weights_per_sector(
    make_gateway: GatewayFactory, bus: InProcessDirectiveSource, exchange_http: httpx.Client
) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 200.0, "XOM": 50.0}}).raise_for_status()
    handle = make_gateway(sectors={"AAPL": "tech", "MSFT": "tech"})
    bus.publish(directive("normal"))
    post(handle, batch({"AAPL": (1.0, 100.0), "MSFT": (-0.5, 200.0), "XOM": (0.5, 50.0)}))
    exposure = httpx.get(handle.url + "/v1/exposure").json()
    assert set(exposure["sectors"]) == {"tech", "unclassified"}
    tech = exposure["sectors"]["tech"]
    assert tech["long"] == pytest.approx(100_000.0) and tech["short"] == pytest.approx(-50_000.0)
    assert tech["gross"] == pytest.approx(150_000.0) and tech["net"] == pytest.approx(50_000.0)
    assert tech["gross_weight"] == pytest.approx(150_000.0 / exposure["equity"])
    assert exposure["sectors"]["unclassified"]["net"] == pytest.approx(50_000.0)


@pytest.mark.parametrize(("field", "value"), [
    ("price", 1e-323), ("price", 1e12), ("symbol", "AA PL"), ("symbol", "\u0000"), ("probabilities", [2.0]),
])
def test_post_decisions_when_value_absurd_then_422_names_field_and_nothing_audited(
    gateway: ServerHandle, exchange_http: httpx.Client, field: str, value: Any
) -> None:
    before = audit_counts(gateway)
    body = batch({"AAPL": (1.0, 100.0)}).model_dump(mode="json")
    body["decisions"][0][field] = value
    answer = httpx.post(gateway.url + "/v1/decisions", json=body)
    assert answer.status_code == 422, answer.text
    assert any(r.startswith(f"body.decisions.0.{field}") for r in answer.json()["reasons"])
    assert audit_counts(gateway) == before
    assert exchange_http.get("/_sim/state").json()["orders"] == 0


@pytest.mark.parametrize("timestep", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_post_decisions_when_timestep_outside_plausible_years_then_422(gateway: ServerHandle, timestep: str) -> None:
    body = batch({"AAPL": (1.0, 100.0)}).model_dump(mode="json") | {"timestep": timestep}
    answer = httpx.post(gateway.url + "/v1/decisions", json=body)
    assert answer.status_code == 422 and "year must be between" in answer.json()["reasons"][0]


def test_post_body_when_not_utf8_then_400_not_500(gateway: ServerHandle) -> None:
    answer = httpx.post(gateway.url + "/v1/kill-switch", content=b"\xff\xfe{",
                        headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"] == "bad_request"
    assert httpx.get(gateway.url + "/v1/state").json()["trading_state"] == "ACTIVE"
