"""The paper exchange, driven by alpaca-py's real TradingClient (its models parse our JSON)."""

import uuid

import httpx
import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, PositionSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest
from exchange_builders import PAPER_HEADERS

from paper_exchange.app import create_paper_exchange_app
from gateway.serve import ServerHandle, serve_app_in_thread


@pytest.fixture
def client(paper_exchange: ServerHandle) -> TradingClient:
    return TradingClient("marlops-paper", "marlops-paper-secret", paper=True, url_override=paper_exchange.url)


def order(symbol: str, qty: float, side: OrderSide, coid: str | None = None) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY, client_order_id=coid)


def test_get_account_when_fresh_then_trade_account_with_initial_cash(client: TradingClient) -> None:
    account = client.get_account()
    assert float(account.cash) == 1_000_000.0
    assert float(account.equity) == 1_000_000.0
    assert account.status.value == "ACTIVE"


def test_submit_order_when_priced_then_filled_at_last_price(client: TradingClient, exchange_http: httpx.Client) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 187.2}}).raise_for_status()
    placed = client.submit_order(order("AAPL", 10, OrderSide.BUY, "c-1"))
    assert placed.status == OrderStatus.FILLED
    assert float(placed.filled_qty) == 10 and float(placed.filled_avg_price) == 187.2
    assert placed.client_order_id == "c-1"
    account = client.get_account()
    assert float(account.cash) == pytest.approx(1_000_000.0 - 1_872.0)
    position = client.get_open_position("AAPL")
    assert (float(position.qty), float(position.avg_entry_price), position.side) == (10, 187.2, PositionSide.LONG)


def test_submit_order_when_fractional_qty_then_filled_fractionally(client: TradingClient,
                                                                   exchange_http: httpx.Client) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    placed = client.submit_order(order("AAPL", 0.25, OrderSide.BUY))
    assert float(placed.filled_qty) == 0.25
    assert float(client.get_open_position("AAPL").qty) == 0.25


def test_submit_order_when_selling_more_than_held_then_short_with_new_entry_price(
    client: TradingClient, exchange_http: httpx.Client
) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    client.submit_order(order("AAPL", 10, OrderSide.BUY))
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 110.0}}).raise_for_status()
    closing = client.submit_order(order("AAPL", 15, OrderSide.SELL))
    assert closing.position_intent is not None and closing.position_intent.value == "sell_to_close"
    position = client.get_all_positions()[0]
    assert (float(position.qty), float(position.avg_entry_price), position.side) == (-5, 110.0, PositionSide.SHORT)
    assert float(client.get_account().cash) == pytest.approx(1_000_000.0 - 1_000.0 + 1_650.0)


def test_submit_order_when_client_order_id_reused_then_422_like_alpaca(client: TradingClient,
                                                                       exchange_http: httpx.Client) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    client.submit_order(order("AAPL", 1, OrderSide.BUY, "same"))
    with pytest.raises(APIError) as caught:
        client.submit_order(order("AAPL", 1, OrderSide.BUY, "same"))
    assert caught.value.status_code == 422
    assert "client_order_id must be unique" in caught.value.message
    assert exchange_http.get("/_sim/state").json()["orders"] == 1


def test_submit_order_when_symbol_has_no_price_then_422_with_reason(client: TradingClient) -> None:
    with pytest.raises(APIError) as caught:
        client.submit_order(order("NOPE", 1, OrderSide.BUY))
    assert caught.value.status_code == 422
    assert "no price for symbol 'NOPE'" in caught.value.message


def test_submit_order_when_exposure_beyond_buying_power_then_403(client: TradingClient,
                                                                 exchange_http: httpx.Client) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    with pytest.raises(APIError) as caught:
        client.submit_order(order("AAPL", 50_000, OrderSide.BUY))  # $5M on $1M equity, 4x multiplier
    assert caught.value.status_code == 403
    assert "insufficient buying power" in caught.value.message


def test_get_orders_when_filtered_then_status_symbol_and_limit_apply(client: TradingClient,
                                                                     exchange_http: httpx.Client) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 200.0}}).raise_for_status()
    for i in range(3):
        client.submit_order(order("AAPL", 1, OrderSide.BUY, f"a-{i}"))
    client.submit_order(order("MSFT", 1, OrderSide.BUY, "m-0"))
    everything = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500))
    assert [o.client_order_id for o in everything] == ["m-0", "a-2", "a-1", "a-0"]  # newest first
    assert client.get_orders() == []  # default status=open; market orders filled at once
    only_aapl = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED, symbols=["AAPL"], limit=2))
    assert [o.client_order_id for o in only_aapl] == ["a-2", "a-1"]


def test_get_order_when_by_id_or_client_id_then_same_order(client: TradingClient, exchange_http: httpx.Client) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    placed = client.submit_order(order("AAPL", 2, OrderSide.BUY, "find-me"))
    assert client.get_order_by_id(placed.id).client_order_id == "find-me"
    assert client.get_order_by_client_id("find-me").id == placed.id
    with pytest.raises(APIError) as caught:
        client.get_order_by_client_id("missing")
    assert caught.value.status_code == 404


def test_cancel_order_when_partially_filled_then_canceled_and_filled_order_refuses(
    client: TradingClient, exchange_http: httpx.Client
) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    exchange_http.post("/_sim/config", json={"fill_ratio": 0.5}).raise_for_status()
    partial = client.submit_order(order("AAPL", 10, OrderSide.BUY))
    assert partial.status == OrderStatus.PARTIALLY_FILLED and float(partial.filled_qty) == 5
    assert [o.id for o in client.get_orders()] == [partial.id]
    client.cancel_order_by_id(partial.id)
    assert client.get_order_by_id(partial.id).status == OrderStatus.CANCELED
    with pytest.raises(APIError) as caught:
        client.cancel_order_by_id(partial.id)
    assert caught.value.status_code == 422
    with pytest.raises(APIError) as unknown:
        client.cancel_order_by_id(uuid.uuid4())
    assert unknown.value.status_code == 404


def test_get_position_when_none_held_then_404(client: TradingClient) -> None:
    with pytest.raises(APIError) as caught:
        client.get_open_position("AAPL")
    assert caught.value.status_code == 404
    assert caught.value.message == "position does not exist"


def test_get_clock_when_called_then_market_open(client: TradingClient) -> None:
    clock = client.get_clock()
    assert clock.is_open
    assert clock.next_close > clock.timestamp


def test_request_when_headers_missing_or_wrong_then_401_or_403(paper_exchange: ServerHandle) -> None:
    assert httpx.get(paper_exchange.url + "/v2/account").status_code == 401
    wrong = {"APCA-API-KEY-ID": "marlops-paper", "APCA-API-SECRET-KEY": "nope"}
    response = httpx.get(paper_exchange.url + "/v2/account", headers=wrong)
    assert response.status_code == 403
    with pytest.raises(APIError) as caught:
        TradingClient("marlops-paper", "nope", paper=True, url_override=paper_exchange.url).get_account()
    assert caught.value.status_code == 403


def test_response_when_authenticated_then_rate_limit_headers(exchange_http: httpx.Client) -> None:
    first = exchange_http.get("/v2/account")
    second = exchange_http.get("/v2/account")
    assert int(first.headers["X-RateLimit-Limit"]) >= 200
    assert int(second.headers["X-RateLimit-Remaining"]) == int(first.headers["X-RateLimit-Remaining"]) - 1
    assert int(first.headers["X-RateLimit-Reset"]) > 0


def test_request_when_rate_limit_spent_then_429_with_headers() -> None:
    handle = serve_app_in_thread(create_paper_exchange_app(rate_limit_per_min=2))
    try:
        with httpx.Client(base_url=handle.url, headers=PAPER_HEADERS) as http:
            codes = [http.get("/v2/clock").status_code for _ in range(3)]
            refused = http.get("/v2/clock")
        assert codes[:2] == [200, 200]
        assert refused.status_code == 429
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert refused.json()["message"] == "rate limit exceeded"
    finally:
        handle.stop()


def test_set_prices_when_price_not_positive_then_422_names_symbol(exchange_http: httpx.Client) -> None:
    response = exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "BAD": -1.0}})
    assert response.status_code == 422
    assert "'BAD': -1.0" in response.json()["message"]
    assert exchange_http.get("/_sim/state").json()["prices"] == {}


def test_post_order_when_body_invalid_then_alpaca_error_shape(exchange_http: httpx.Client) -> None:
    response = exchange_http.post("/v2/orders", json={"symbol": "AAPL", "qty": 1, "side": "hold"})
    assert response.status_code == 422
    body = response.json()
    assert isinstance(body["code"], int) and "side" in body["message"]


def test_sim_state_when_orders_filled_then_counts(client: TradingClient, exchange_http: httpx.Client) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    client.submit_order(order("AAPL", 1, OrderSide.BUY))
    client.submit_order(order("AAPL", 1, OrderSide.SELL))
    state = exchange_http.get("/_sim/state").json()
    assert (state["orders"], state["fills"], state["positions"]) == (2, 2, 0)
