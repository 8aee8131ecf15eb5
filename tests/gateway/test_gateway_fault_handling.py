"""The gateway service against the paper exchange's injected faults, through the real alpaca-py
client: lost answers, partial fills, rejects, outages and a closed market each end in the right
audited state with nothing lost and nothing sent twice."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_builders import batch, directive

from contracts.config import RiskOverlaysConfig
from contracts.orders import TradingState
from gateway.audit.store import AuditStore
from gateway.brokers.alpaca_broker import AlpacaBroker
from gateway.serve import ServerHandle
from gateway.service import GatewayService
from gateway.settings import GatewaySettings, RetrySettings

ORDERS = {"methods": ["POST"], "path_prefix": "/v2/orders"}
FAST = RetrySettings(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, seed=1)


@pytest.fixture
def service(paper_exchange: ServerHandle, exchange_http: httpx.Client, tmp_path: Path) -> Iterator[GatewayService]:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 50.0}}).raise_for_status()
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    # recovery_settle_s=0: an order in doubt that the broker does not know is "not received" at the first lookup.
    settings = GatewaySettings(risk=RiskOverlaysConfig(), broker_base_url=paper_exchange.url, fill_wait_s=0.2,
                               broker_timeout_s=0.3, retry=FAST, reconcile_interval_s=0, recovery_settle_s=0.0)
    broker = AlpacaBroker(paper_exchange.url, "marlops-paper", "marlops-paper-secret", timeout_s=0.3, retry=FAST)
    svc = GatewayService(settings, broker=broker, audit=store)
    svc.start()
    svc.receive_directive(directive("normal"))
    yield svc
    store.close()


def faults(http: httpx.Client, *rules: dict[str, Any]) -> None:
    http.post("/_sim/faults", json={"seed": 0, "rules": list(rules)}).raise_for_status()


def exchange_orders(http: httpx.Client) -> list[dict[str, Any]]:
    return list(http.get("/_sim/orders").json())


def statuses(service: GatewayService, cid: str) -> list[str]:
    return [e["payload"]["status"] for e in reversed(service.audit.list(kind="order", limit=200))
            if e["payload"]["client_order_id"] == cid]


def test_timestep_when_answer_lost_after_accept_then_one_order_and_fill_applied(
    service: GatewayService, exchange_http: httpx.Client
) -> None:
    faults(exchange_http, {"kind": "timeout", "delay_s": 0.8, "after": "after", "count": 1, **ORDERS})
    outcome = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}))
    order = outcome.orders[0]
    assert order.status == "filled"
    placed = exchange_orders(exchange_http)
    assert [o["client_order_id"] for o in placed] == [order.intent.client_order_id]
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] == pytest.approx(1000.0)
    assert service.audit.count("fill") == 1


def test_timestep_when_partial_fill_then_rest_picked_up_later_without_new_order(
    service: GatewayService, exchange_http: httpx.Client
) -> None:
    faults(exchange_http, {"kind": "partial_fill", "fill_ratio": 0.4, "count": 1, **ORDERS})
    first = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}))
    cid = first.orders[0].intent.client_order_id
    assert first.orders[0].status == "partially_filled"
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] == pytest.approx(400.0)
    # While the order is open the symbol gets no new order (no double-ordering of the remainder).
    second = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=1))
    assert {r.symbol: r.reason_code for r in second.plan.risk}["AAPL"] == "ORDER_PENDING"
    exchange_http.post("/_sim/fill_open").raise_for_status()
    service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=2))
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] == pytest.approx(1000.0)
    assert len(exchange_orders(exchange_http)) == 1
    fills = [e["payload"] for e in service.audit.list(kind="fill", limit=10)]
    assert sorted(f["qty"] for f in fills) == [400.0, 600.0]
    assert statuses(service, cid)[0] == "intent" and statuses(service, cid)[-1] == "filled"


def test_timestep_when_broker_rejects_then_audited_rejected_and_nothing_held(
    service: GatewayService, exchange_http: httpx.Client
) -> None:
    faults(exchange_http, {"kind": "reject", "count": 1, **ORDERS})
    outcome = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}))
    assert outcome.orders[0].status == "rejected"
    assert "insufficient buying power" in (outcome.orders[0].error or "")
    assert exchange_orders(exchange_http) == []
    assert service.portfolio_summary()["positions"] == {}
    assert service.inflight_order_ids() == []


def test_timestep_when_5xx_after_accept_once_then_retry_finds_the_order(
    service: GatewayService, exchange_http: httpx.Client
) -> None:
    faults(exchange_http, {"kind": "http_503", "after": "after", "count": 1, **ORDERS})
    first = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}))
    # The first attempt landed; the retry heard "duplicate" and found it: one order, filled.
    assert first.orders[0].status == "filled"
    assert len(exchange_orders(exchange_http)) == 1


def test_timestep_when_5xx_after_accept_on_every_attempt_then_in_doubt_then_found_once(
    service: GatewayService, exchange_http: httpx.Client
) -> None:
    faults(exchange_http, {"kind": "http_503", "after": "after", "count": 3, **ORDERS})
    first = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}))
    cid = first.orders[0].intent.client_order_id
    assert first.orders[0].status == "unknown"  # a 5xx does not say the order was not taken
    # Looked up right after the timestep's routing: found at the broker, filled, applied once.
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] == pytest.approx(1000.0)
    second = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=1))
    assert second.orders == ()  # found at the broker and filled: nothing left to order
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] == pytest.approx(1000.0)
    assert [o["client_order_id"] for o in exchange_orders(exchange_http)] == [cid]
    assert statuses(service, cid)[-1] == "filled"


def test_timestep_when_broker_down_for_every_attempt_then_unknown_then_not_received(
    service: GatewayService, exchange_http: httpx.Client
) -> None:
    faults(exchange_http, {"kind": "http_503", "after": "before", "count": 3, **ORDERS})
    first = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}))
    cid = first.orders[0].intent.client_order_id
    assert first.orders[0].status == "unknown"
    second = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=1))
    assert statuses(service, cid)[-1] == "not_received"
    # The symbol is free again: the next bar orders afresh, under its own id; the lost one never traded.
    assert [o["client_order_id"] for o in exchange_orders(exchange_http)] == [second.orders[0].intent.client_order_id]
    assert second.orders[0].intent.client_order_id != cid


def test_timestep_when_market_closed_then_denied_market_closed_and_nothing_sent(
    service: GatewayService, exchange_http: httpx.Client
) -> None:
    exchange_http.post("/_sim/config", json={"market_open": False}).raise_for_status()
    outcome = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}))
    assert [(r.approved, r.reason_code) for r in outcome.plan.risk] == [(False, "MARKET_CLOSED")]
    assert outcome.orders == () and exchange_orders(exchange_http) == []
    assert service.trading_state == TradingState.ACTIVE
