"""Crash recovery: the process dies between committing intents and hearing the broker; the next
process settles every in-flight order from the durable state, with the real paper exchange."""

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from gateway_builders import PAPER_HEADERS, batch, directive

from contracts.config import MarketHoursRule, RiskOverlaysConfig
from contracts.orders import OrderIntent
from gateway.audit.store import AuditStore
from gateway.brokers.alpaca_broker import AlpacaBroker
from gateway.brokers.base import AccountSnapshot, BrokerPosition, OrderResult
from gateway.errors import StaleTimestepError
from gateway.serve import ServerHandle
from gateway.engine.state import GatewayState
from gateway.service import GatewayService
from gateway.settings import GatewaySettings


class ProcessDied(BaseException):
    """Stands for kill -9: nothing after it runs, no handler catches it."""


class DyingBroker:
    """The real broker; the process 'dies' on the Nth submit, before or after the request is sent."""

    def __init__(self, inner: AlpacaBroker, die_on: int | None = None, after_send: bool = False) -> None:
        self.inner = inner
        self.die_on = die_on
        self.after_send = after_send
        self.submits = 0

    def get_account(self) -> AccountSnapshot:
        return self.inner.get_account()

    def get_positions(self) -> list[BrokerPosition]:
        return self.inner.get_positions()

    def submit_market_order(self, intent: OrderIntent) -> OrderResult:
        self.submits += 1
        if self.submits >= (self.die_on or self.submits + 1):
            # From the dying call on, the process does nothing more (routing runs on worker threads, so
            # a later call would otherwise still reach the broker).
            if self.after_send and self.submits == self.die_on:
                self.inner.submit_market_order(intent)
            raise ProcessDied
        return self.inner.submit_market_order(intent)

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None:
        if self.die_on is not None and self.submits >= self.die_on:
            raise ProcessDied
        return self.inner.get_order_by_client_id(client_order_id)


PRICES = {"AAPL": 100.0, "MSFT": 50.0, "NVDA": 40.0}


@pytest.fixture
def boot(paper_exchange: ServerHandle, exchange_http: httpx.Client,
         tmp_path: Path) -> Iterator[Callable[..., tuple[GatewayService, AuditStore]]]:
    exchange_http.post("/_sim/prices", json={"prices": PRICES}).raise_for_status()
    stores: list[AuditStore] = []

    def _boot(die_on: int | None = None, after_send: bool = False) -> tuple[GatewayService, AuditStore]:
        store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
        stores.append(store)
        broker = DyingBroker(AlpacaBroker(paper_exchange.url, "marlops-paper", "marlops-paper-secret"),
                             die_on, after_send)
        settings = GatewaySettings(
            risk=RiskOverlaysConfig(market_hours=MarketHoursRule(source="off")), broker_base_url=paper_exchange.url,
            fill_wait_s=0.1, reconcile_interval_s=0, recovery_settle_s=0.0,
            routing_concurrency=1,  # one order on the wire at a time: "died at the 2nd order" is exact
        )
        service = GatewayService(settings, broker=broker, audit=store)  # type: ignore[arg-type]
        service.start()
        service.receive_directive(directive("normal"))
        return service, store

    yield _boot
    for store in stores:
        store.close()


def persisted_inflight(store: AuditStore) -> dict[str, object]:
    return dict(GatewayState.restore(store.read_state())[0].inflight)


def broker_orders(exchange_http: httpx.Client) -> dict[str, dict[str, object]]:
    orders = exchange_http.get("/v2/orders", headers=PAPER_HEADERS,
                               params={"status": "all", "limit": 500}).json()
    return {o["client_order_id"]: o for o in orders}


def last_status(store: AuditStore) -> dict[str, str]:
    out: dict[str, str] = {}
    for event in reversed(store.list(kind="order", limit=1000)):
        out[event["payload"]["client_order_id"]] = event["payload"]["status"]
    return out


@pytest.mark.parametrize("after_send", [False, True], ids=["died-before-send", "died-after-send"])
def test_restart_when_process_died_mid_routing_then_every_intent_settled_once(
    boot: Callable[..., tuple[GatewayService, AuditStore]], exchange_http: httpx.Client, after_send: bool
) -> None:
    service, store = boot(die_on=2, after_send=after_send)
    timestep = batch({s: (0.5, p) for s, p in PRICES.items()}, bar_index=0)
    with pytest.raises(ProcessDied):
        service.handle_timestep(timestep)
    inflight = persisted_inflight(store)  # what a restart reads
    assert len(inflight) == 2  # the first order was answered; the 2nd (dying) and 3rd were not

    restarted, store2 = boot()
    statuses = last_status(store2)
    at_broker = broker_orders(exchange_http)
    assert len(statuses) == 3
    for cid, status in statuses.items():
        if cid in at_broker:
            assert status in {"filled", "recovered"}
        else:
            assert status == "not_sent"
    assert len(at_broker) == (2 if after_send else 1)
    assert persisted_inflight(store2) == {}
    # The book is the broker's, fills of the recovered order included.
    positions = restarted.portfolio_summary()["positions"]
    assert {s for s in positions} == {at_broker[c]["symbol"] for c in at_broker}
    # The interrupted timestep was committed: sending it again is refused, nothing is traded twice.
    with pytest.raises(StaleTimestepError):
        restarted.handle_timestep(timestep)
    assert len(broker_orders(exchange_http)) == len(at_broker)
    assert store2.verify_chain()


def test_restart_when_recovered_then_next_bar_trades_normally(
    boot: Callable[..., tuple[GatewayService, AuditStore]], exchange_http: httpx.Client
) -> None:
    service, _ = boot(die_on=1, after_send=True)
    with pytest.raises(ProcessDied):
        service.handle_timestep(batch({"AAPL": (0.5, 100.0)}, bar_index=0))
    restarted, store = boot()
    fills = store.list(kind="fill", limit=10)
    assert len(fills) == 1 and fills[0]["payload"]["applied_to_book"] is False
    outcome = restarted.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=1))
    assert [o.status for o in outcome.orders] == ["filled"]
    assert restarted.portfolio_summary()["positions"]["AAPL"]["qty"] == pytest.approx(1000.0)
    fill = store.list(kind="fill", limit=1)[0]["payload"]
    assert fill["realized_cost"] == pytest.approx(0.0001 * 500 * 100.0)  # commission only: filled at the decision price
    assert fill["estimated_cost"] > 0
