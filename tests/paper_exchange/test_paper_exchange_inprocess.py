"""InProcessBroker: the paper book behind the gateway's Broker protocol in the same process.

The parity test runs one script of orders through InProcessBroker and through AlpacaBroker (alpaca-py)
against the real HTTP paper exchange and compares what the two brokers answer.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from exchange_builders import KEY_ID, SECRET_KEY, T0

from contracts.config import RiskOverlaysConfig
from contracts.decisions import SymbolDecision, TimestepDecisions
from contracts.orders import OrderIntent, OrderSide
from gateway.audit.store import AuditStore
from gateway.brokers.alpaca_broker import AlpacaBroker
from gateway.brokers.base import Broker, OrderResult
from gateway.errors import BrokerRejectedError
from gateway.serve import ServerHandle, free_port
from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from paper_exchange.book import PaperBook
from paper_exchange.inprocess import InProcessBroker

PRICES = {"AAPL": 100.0, "MSFT": 250.0}


def intent(coid: str, symbol: str, side: OrderSide, qty: float) -> OrderIntent:
    return OrderIntent(client_order_id=coid, symbol=symbol, side=side, qty=qty, reference_price=PRICES.get(symbol, 1.0),
                       policy_version="v1", bar_index=0, timestep=T0)


@dataclass
class Venue:
    """One broker and the simulator controls of the book behind it."""

    broker: Broker
    set_prices: Callable[[dict[str, float]], Any]
    configure: Callable[..., Any]
    fill_open: Callable[[], Any]


def http_venue(paper_exchange: ServerHandle, http: httpx.Client) -> Venue:
    def post(path: str, body: dict[str, Any] | None = None) -> Any:
        response = http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    return Venue(
        broker=AlpacaBroker(paper_exchange.url, KEY_ID, SECRET_KEY),
        set_prices=lambda prices: post("/_sim/prices", {"prices": prices}),
        configure=lambda **config: post("/_sim/config", config),
        fill_open=lambda: post("/_sim/fill_open"),
    )


def inprocess_venue(broker: InProcessBroker) -> Venue:
    return Venue(broker=broker, set_prices=broker.set_prices, configure=broker.book.configure,
                 fill_open=broker.book.fill_open)


def comparable(result: OrderResult | None) -> dict[str, Any] | None:
    """An order's fields without the broker's id and the wall-clock times (whether filled_at is set stays)."""
    if result is None:
        return None
    fields = result.model_dump(exclude={"broker_order_id", "submitted_at", "filled_at"})
    fields["has_filled_at"] = result.filled_at is not None
    return fields


def attempt(broker: Broker, order: OrderIntent) -> dict[str, Any] | tuple[str, int | None, int | None, str]:
    try:
        return comparable(broker.submit_market_order(order)) or {}
    except BrokerRejectedError as exc:
        return ("rejected", exc.status_code, exc.code, exc.message)


def run_script(venue: Venue) -> dict[str, Any]:
    """Buy, a partial fill, a price move, a sell, a sell into a short, then the refusals; everything the
    broker answers along the way."""
    broker = venue.broker
    venue.set_prices(PRICES)
    steps: list[Any] = [attempt(broker, intent("p-1", "AAPL", OrderSide.BUY, 10))]
    venue.configure(fill_ratio=0.3)
    steps.append(attempt(broker, intent("p-2", "MSFT", OrderSide.BUY, 7)))
    venue.configure(fill_ratio=1.0)
    venue.set_prices({"AAPL": 101.25})
    steps.append(attempt(broker, intent("p-3", "AAPL", OrderSide.SELL, 4)))
    steps.append(attempt(broker, intent("p-4", "AAPL", OrderSide.SELL, 16.5)))  # through flat into a short
    steps.append(attempt(broker, intent("p-1", "AAPL", OrderSide.BUY, 10)))  # duplicate client_order_id
    steps.append(attempt(broker, intent("p-5", "MSFT", OrderSide.BUY, 100_000)))  # 25M > buying power
    steps.append(attempt(broker, intent("p-6", "ZZZZ", OrderSide.BUY, 1)))  # no price
    venue.configure(market_open=False)
    closed_clock = broker.get_clock().is_open
    steps.append(attempt(broker, intent("p-7", "AAPL", OrderSide.BUY, 1)))
    venue.configure(market_open=True)
    open_before_fill = [comparable(r) for r in broker.list_orders(status="open")]
    venue.set_prices({"MSFT": 251.1})  # the rest fills at a later price (equity gets float noise the wire rounds off)
    venue.fill_open()
    return {
        "steps": steps,
        "closed_clock": closed_clock,
        "open_clock": broker.get_clock().is_open,
        "open_before_fill": open_before_fill,
        "p-2 after fill_open": comparable(broker.get_order_by_client_id("p-2")),
        "unknown id": broker.get_order_by_client_id("never-sent"),
        "all": [comparable(r) for r in broker.list_orders(status="all")],
        "open": [comparable(r) for r in broker.list_orders(status="open")],
        "closed": [comparable(r) for r in broker.list_orders(status="closed")],
        "positions": [p.model_dump() for p in broker.get_positions()],
        "account": broker.get_account().model_dump(),
    }


def test_order_script_when_run_in_process_and_over_http_then_same_answers(
    paper_exchange: ServerHandle, exchange_http: httpx.Client
) -> None:
    over_http = run_script(http_venue(paper_exchange, exchange_http))
    in_process = run_script(inprocess_venue(InProcessBroker(initial_cash=1_000_000.0)))

    for key in over_http:
        assert in_process[key] == over_http[key], key
    # ...and the answers are the ones a venue should give, not merely the same mistake twice.
    steps = in_process["steps"]
    assert [s["status"] for s in steps[:4]] == ["filled", "partially_filled", "filled", "filled"]
    assert (steps[1]["filled_qty"], steps[1]["filled_avg_price"], steps[1]["has_filled_at"]) == (2.1, 250.0, False)
    assert steps[3]["filled_avg_price"] == 101.25
    assert [s[:2] for s in steps[4:]] == [("rejected", 422), ("rejected", 403), ("rejected", 422), ("rejected", 403)]
    assert "client_order_id" in steps[4][3]
    assert "insufficient buying power" in steps[5][3]
    assert steps[7][3] == "market is closed"
    assert (in_process["closed_clock"], in_process["open_clock"]) == (False, True)
    assert [o["client_order_id"] for o in in_process["open_before_fill"]] == ["p-2"]
    after_fill = in_process["p-2 after fill_open"]
    assert (after_fill["status"], after_fill["filled_qty"], after_fill["has_filled_at"]) == ("filled", 7.0, True)
    msft_avg = (2.1 * 250.0 + 4.9 * 251.1) / 7
    assert after_fill["filled_avg_price"] == pytest.approx(msft_avg, abs=1e-9)
    assert in_process["unknown id"] is None
    assert [o["client_order_id"] for o in in_process["all"]] == ["p-1", "p-2", "p-3", "p-4"]
    assert in_process["open"] == []
    assert in_process["positions"] == [
        {"symbol": "AAPL", "qty": -10.5, "avg_entry_price": 101.25},
        {"symbol": "MSFT", "qty": 7.0, "avg_entry_price": pytest.approx(msft_avg, abs=1e-9)},
    ]
    # 10 @ 100 bought, 20.5 @ 101.25 sold, 7 MSFT bought for 7 x msft_avg; marks AAPL 101.25, MSFT 251.1.
    cash = 1_000_000.0 - 1000.0 + 20.5 * 101.25 - 7 * msft_avg
    assert in_process["account"]["cash"] == pytest.approx(cash, abs=1e-6)
    assert in_process["account"]["equity"] == pytest.approx(cash - 10.5 * 101.25 + 7 * 251.1, abs=1e-6)


def test_submit_when_same_client_order_id_from_many_threads_then_exactly_one_accepted() -> None:
    broker = InProcessBroker()
    broker.set_prices({"AAPL": 100.0})
    accepted: list[OrderResult] = []
    refused: list[BrokerRejectedError] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        try:
            accepted.append(broker.submit_market_order(intent("same", "AAPL", OrderSide.BUY, 1)))
        except BrokerRejectedError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(accepted) == 1
    assert [(e.status_code, "client_order_id" in e.message) for e in refused] == [(422, True)] * 7
    assert [(p.symbol, p.qty) for p in broker.get_positions()] == [("AAPL", 1.0)]


def test_submit_when_many_threads_route_at_once_then_every_order_booked_once() -> None:
    broker = InProcessBroker()
    broker.set_prices({"AAPL": 100.0, "MSFT": 250.0})
    start = threading.Barrier(6)
    errors: list[Exception] = []

    def route(worker: int) -> None:
        start.wait()
        try:
            for n in range(25):
                symbol = "AAPL" if n % 2 else "MSFT"
                broker.submit_market_order(intent(f"w{worker}-{n}", symbol, OrderSide.BUY, 2))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=route, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(broker.list_orders(status="all")) == 150
    assert {p.symbol: p.qty for p in broker.get_positions()} == {"AAPL": 6 * 12 * 2.0, "MSFT": 6 * 13 * 2.0}
    spent = 6 * 12 * 2 * 100.0 + 6 * 13 * 2 * 250.0
    assert broker.get_account().cash == pytest.approx(1_000_000.0 - spent)


def test_list_orders_when_after_given_then_only_later_orders_and_bad_arguments_refused() -> None:
    broker = InProcessBroker()
    broker.set_prices({"AAPL": 100.0})
    first = broker.submit_market_order(intent("a", "AAPL", OrderSide.BUY, 1))
    time.sleep(0.005)  # the book stamps orders with the wall clock: keep the two apart
    broker.submit_market_order(intent("b", "AAPL", OrderSide.BUY, 1))

    later = broker.list_orders(after=first.submitted_at)
    naive_before = (first.submitted_at - timedelta(seconds=1)).astimezone(timezone.utc).replace(tzinfo=None)

    assert [o.client_order_id for o in later] == ["b"]
    assert [o.client_order_id for o in broker.list_orders(after=naive_before)] == ["a", "b"]
    with pytest.raises(ValueError, match="status"):
        broker.list_orders(status="pending")
    with pytest.raises(ValueError, match="limit"):
        broker.list_orders(limit=501)


def test_set_prices_when_price_not_positive_then_refused_and_nothing_set() -> None:
    broker = InProcessBroker()
    with pytest.raises(ValueError, match="'MSFT'"):
        broker.set_prices({"AAPL": 100.0, "MSFT": 0.0})
    assert broker.book.prices() == {}
    assert broker.set_prices({"AAPL": 100.0}) == {"AAPL": 100.0}


def test_broker_when_given_a_book_then_trades_that_book() -> None:
    book = PaperBook(initial_cash=50_000.0, seed=3)
    broker = InProcessBroker(book)
    broker.set_prices({"AAPL": 100.0})
    broker.submit_market_order(intent("x", "AAPL", OrderSide.BUY, 5))

    assert broker.book is book
    position = book.position("AAPL")
    assert position is not None and position[0].qty == 5.0
    assert book.cash == 49_500.0


def timestep(levels: dict[str, tuple[float, float]], bar_index: int = 0) -> TimestepDecisions:
    """`levels` maps symbol -> (target_level, price)."""
    return TimestepDecisions(
        timestep=T0 + timedelta(days=bar_index), bar_index=bar_index, policy_version="v1",
        decisions=tuple(SymbolDecision(symbol=s, action=0, target_level=lvl, price=px)
                        for s, (lvl, px) in levels.items()),
    )


def test_gateway_service_when_routing_to_in_process_broker_then_orders_filled_in_its_book(tmp_path: Path) -> None:
    broker = InProcessBroker(initial_cash=1_000_000.0)
    broker.set_prices({"AAPL": 100.0, "MSFT": 200.0})
    # A URL nothing listens on: the service must never need it (the broker is the one given). No directive is
    # sent: the "normal" preset stands in for one (10 % of equity per symbol).
    settings = GatewaySettings(risk=RiskOverlaysConfig(missing_directive_fallback="normal"),
                               broker_base_url=f"http://127.0.0.1:{free_port()}",
                               fill_wait_s=0.1)
    audit = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        service = GatewayService(settings, broker=broker, audit=audit)
        service.start()
        outcome = service.handle_timestep(timestep({"AAPL": (1.0, 100.0), "MSFT": (1.0, 200.0)}))
        summary = service.portfolio_summary()
    finally:
        audit.close()

    assert sorted((o.intent.symbol, o.status) for o in outcome.orders) == [("AAPL", "filled"), ("MSFT", "filled")]
    booked = {p.symbol: p.qty for p in broker.get_positions()}
    assert booked == {"AAPL": 1000.0, "MSFT": 500.0}
    sent = {o.intent.symbol: o.intent.qty for o in outcome.orders}
    assert booked == sent
    assert broker.book.state()["orders"] == 2
    assert {s: p["qty"] for s, p in summary["positions"].items()} == booked
    assert summary["cash"] == pytest.approx(broker.get_account().cash)
