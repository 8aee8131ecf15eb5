"""GatewayService (no HTTP) routing through AlpacaBroker to the real paper exchange.

The brokers below wrap the real AlpacaBroker to stage what a network or an operator does at a
precise moment (an answer lost in transit, the kill switch pressed mid-timestep).
"""

from collections.abc import Callable

from typing import Any

import httpx
import pytest
from gateway_builders import batch, directive

from contracts.config import RiskOverlaysConfig
from contracts.orders import OrderIntent, OrderSide, TradingState
from gateway.audit.store import AuditStore
from gateway.brokers.alpaca_broker import AlpacaBroker
from gateway.brokers.base import AccountSnapshot, BrokerPosition, OrderResult
from gateway.domain.orders import client_order_id, intent_text
from gateway.errors import BrokerUnavailableError
from gateway.serve import ServerHandle
from gateway.service import GatewayService
from gateway.settings import GatewaySettings


class StagedBroker:
    """The real broker, with a hook that runs around each submit."""

    def __init__(
        self, inner: AlpacaBroker, on_submit: Callable[[OrderIntent, Callable[[], OrderResult]], OrderResult]
    ) -> None:
        self.inner = inner
        self.on_submit = on_submit

    def get_account(self) -> AccountSnapshot:
        return self.inner.get_account()

    def get_positions(self) -> list[BrokerPosition]:
        return self.inner.get_positions()

    def submit_market_order(self, intent: OrderIntent) -> OrderResult:
        return self.on_submit(intent, lambda: self.inner.submit_market_order(intent))

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None:
        return self.inner.get_order_by_client_id(client_order_id)


@pytest.fixture
def alpaca(paper_exchange: ServerHandle, exchange_http: httpx.Client) -> AlpacaBroker:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 200.0}}).raise_for_status()
    return AlpacaBroker(paper_exchange.url, "marlops-paper", "marlops-paper-secret")


def service_with(broker: object, audit: AuditStore, url: str, **overrides: Any) -> GatewayService:
    settings = GatewaySettings(**{"risk": RiskOverlaysConfig(), "broker_base_url": url, "fill_wait_s": 0.1,
                                  **overrides})
    service = GatewayService(settings, broker=broker, audit=audit)  # type: ignore[arg-type]
    service.start()
    service.receive_directive(directive("normal"))
    return service


def order_statuses(audit: AuditStore) -> list[str]:
    return [e["payload"]["status"] for e in reversed(audit.list(kind="order", limit=100))]


def test_kill_switch_when_pressed_mid_timestep_then_remaining_orders_not_sent(
    alpaca: AlpacaBroker, audit_store: AuditStore, paper_exchange: ServerHandle, exchange_http: httpx.Client
) -> None:
    service: GatewayService

    def press_after_first(intent: OrderIntent, send: Callable[[], OrderResult]) -> OrderResult:
        result = send()
        service.change_state(TradingState.HALTED, principal="alice", reason="pressed while routing")
        return result

    # One routing worker: "the rest" of the timestep is exactly the second order. With N workers, up to N
    # orders already on the wire complete; tests/gateway/test_gateway_concurrent_routing.py covers that.
    service = service_with(StagedBroker(alpaca, press_after_first), audit_store, paper_exchange.url,
                           routing_concurrency=1)
    outcome = service.handle_timestep(batch({"AAPL": (1.0, 100.0), "MSFT": (1.0, 200.0)}))
    assert [o.status for o in outcome.orders] == ["filled", "not_sent"]
    assert exchange_http.get("/_sim/state").json()["orders"] == 1
    assert order_statuses(audit_store) == ["intent", "intent", "filled", "not_sent"]


def test_submit_when_answer_lost_then_order_found_and_fill_applied_once(
    alpaca: AlpacaBroker, audit_store: AuditStore, paper_exchange: ServerHandle
) -> None:
    def lose_answer(intent: OrderIntent, send: Callable[[], OrderResult]) -> OrderResult:
        send()  # the exchange fills it...
        raise BrokerUnavailableError("connection reset before the answer arrived")  # ...we never hear

    staged = StagedBroker(alpaca, lose_answer)
    service = service_with(staged, audit_store, paper_exchange.url)
    first = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}))
    assert first.orders[0].status == "unknown"
    # Looked up right after the timestep's routing (not on the next bar): found filled, applied once.
    assert first.portfolio["positions"]["AAPL"]["qty"] == 1000.0
    assert first.portfolio["open_orders"] == []
    staged.on_submit = lambda intent, send: send()
    second = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=1))
    assert second.portfolio["positions"]["AAPL"]["qty"] == 1000.0  # picked up, not ordered again
    assert second.orders == ()
    assert audit_store.count("fill") == 1


def test_submit_when_request_never_arrived_then_symbol_freed_and_reordered(
    alpaca: AlpacaBroker, audit_store: AuditStore, paper_exchange: ServerHandle, exchange_http: httpx.Client
) -> None:
    def drop(intent: OrderIntent, send: Callable[[], OrderResult]) -> OrderResult:
        raise BrokerUnavailableError("connection refused")

    staged = StagedBroker(alpaca, drop)
    # No settle window: "not at the broker" is concluded at the first lookup after the failed submit.
    service = service_with(staged, audit_store, paper_exchange.url, recovery_settle_s=0.0)
    assert service.handle_timestep(batch({"AAPL": (1.0, 100.0)})).orders[0].status == "unknown"
    staged.on_submit = lambda intent, send: send()
    second = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=1))
    assert [o.status for o in second.orders] == ["filled"]
    assert "not_received" in order_statuses(audit_store)
    assert exchange_http.get("/_sim/state").json()["orders"] == 1


def test_submit_when_client_order_id_already_at_broker_then_not_sent_twice(
    alpaca: AlpacaBroker, audit_store: AuditStore, paper_exchange: ServerHandle, exchange_http: httpx.Client
) -> None:
    service = service_with(alpaca, audit_store, paper_exchange.url)
    # The same order id an earlier run of the gateway would have used for this very decision.
    coid = client_order_id("v1", "AAPL", 0, intent_text(OrderSide.BUY, 1000))
    exchange_http.post("/v2/orders", json={"symbol": "AAPL", "qty": 1000, "side": "buy", "type": "market",
                                           "time_in_force": "day", "client_order_id": coid}).raise_for_status()
    outcome = service.handle_timestep(batch({"AAPL": (1.0, 100.0)}))
    assert outcome.orders[0].intent.client_order_id == coid
    assert outcome.orders[0].status == "duplicate"
    assert exchange_http.get("/_sim/state").json()["orders"] == 1
