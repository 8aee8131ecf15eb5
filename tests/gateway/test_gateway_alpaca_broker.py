"""AlpacaBroker (alpaca-py's TradingClient underneath) against the real paper exchange."""

import socket
from collections.abc import Iterator

import httpx
import pytest
from gateway_builders import PAPER_HEADERS, T0

from contracts.orders import OrderIntent, OrderSide
from gateway.brokers.alpaca_broker import AlpacaBroker
from paper_exchange.app import create_paper_exchange_app
from gateway.brokers.rate_limit import RateLimitGovernor
from gateway.errors import BrokerConfigError, BrokerRejectedError, BrokerUnavailableError
from gateway.serve import ServerHandle, free_port, serve_app_in_thread


def intent(symbol: str, side: OrderSide, qty: float, coid: str) -> OrderIntent:
    return OrderIntent(client_order_id=coid, symbol=symbol, side=side, qty=qty, reference_price=100.0,
                       policy_version="v1", bar_index=0, timestep=T0)


@pytest.fixture
def broker(paper_exchange: ServerHandle, exchange_http: httpx.Client) -> AlpacaBroker:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 50.0}}).raise_for_status()
    return AlpacaBroker(paper_exchange.url, "marlops-paper", "marlops-paper-secret", timeout_s=5.0)


def test_submit_market_order_when_priced_then_filled_result(broker: AlpacaBroker) -> None:
    result = broker.submit_market_order(intent("AAPL", OrderSide.BUY, 10, "mo-1"))
    assert (result.client_order_id, result.symbol, result.side, result.qty) == ("mo-1", "AAPL", OrderSide.BUY, 10)
    assert (result.status, result.filled_qty, result.filled_avg_price) == ("filled", 10, 100.0)
    assert result.is_terminal and result.filled_at is not None


def test_get_positions_when_long_and_short_then_signed_quantities(broker: AlpacaBroker) -> None:
    broker.submit_market_order(intent("AAPL", OrderSide.BUY, 10, "mo-1"))
    broker.submit_market_order(intent("MSFT", OrderSide.SELL, 4, "mo-2"))
    positions = {p.symbol: (p.qty, p.avg_entry_price) for p in broker.get_positions()}
    assert positions == {"AAPL": (10.0, 100.0), "MSFT": (-4.0, 50.0)}
    account = broker.get_account()
    assert account.cash == pytest.approx(1_000_000.0 - 1_000.0 + 200.0)
    assert account.equity == pytest.approx(1_000_000.0)


def test_get_order_by_client_id_when_unknown_then_none(broker: AlpacaBroker) -> None:
    assert broker.get_order_by_client_id("mo-never-sent") is None
    broker.submit_market_order(intent("AAPL", OrderSide.BUY, 1, "mo-sent"))
    found = broker.get_order_by_client_id("mo-sent")
    assert found is not None and found.filled_qty == 1


def test_submit_market_order_when_duplicate_client_id_then_rejected_error_with_status(broker: AlpacaBroker) -> None:
    broker.submit_market_order(intent("AAPL", OrderSide.BUY, 1, "mo-dup"))
    with pytest.raises(BrokerRejectedError) as caught:
        broker.submit_market_order(intent("AAPL", OrderSide.BUY, 1, "mo-dup"))
    assert (caught.value.status_code, caught.value.code) == (422, 40010001)
    assert caught.value.message == "client_order_id must be unique"


def test_submit_market_order_when_no_price_then_rejected_error_names_symbol(broker: AlpacaBroker) -> None:
    with pytest.raises(BrokerRejectedError, match="no price for symbol 'ZZZ'") as caught:
        broker.submit_market_order(intent("ZZZ", OrderSide.BUY, 1, "mo-z"))
    assert caught.value.status_code == 422


def test_get_account_when_secret_wrong_then_rejected_403(paper_exchange: ServerHandle) -> None:
    with pytest.raises(BrokerRejectedError) as caught:
        AlpacaBroker(paper_exchange.url, "marlops-paper", "wrong").get_account()
    assert caught.value.status_code == 403


def test_get_account_when_nothing_listens_then_unavailable_error() -> None:
    broker = AlpacaBroker(f"http://127.0.0.1:{free_port()}", "k", "s", timeout_s=2.0)
    with pytest.raises(BrokerUnavailableError, match="unreachable during get_account"):
        broker.get_account()


def test_get_account_when_server_never_answers_then_unavailable_after_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        broker = AlpacaBroker(f"http://127.0.0.1:{silent.getsockname()[1]}", "k", "s", timeout_s=0.5)
        with pytest.raises(BrokerUnavailableError, match="timed out"):
            broker.get_account()


@pytest.mark.parametrize("url", ["http://127.0.0.1:5100/v2", "127.0.0.1:5100"])
def test_init_when_base_url_malformed_then_config_error(url: str) -> None:
    with pytest.raises(BrokerConfigError, match="base URL"):
        AlpacaBroker(url, "k", "s")


@pytest.fixture
def tight_exchange() -> Iterator[ServerHandle]:
    handle = serve_app_in_thread(create_paper_exchange_app(rate_limit_per_min=3))
    yield handle
    handle.stop()


def test_requests_when_budget_nearly_spent_then_broker_waits_for_reset_instead_of_429(
    tight_exchange: ServerHandle,
) -> None:
    waits: list[float] = []
    governor = RateLimitGovernor(reserve=1, sleep=waits.append)
    broker = AlpacaBroker(tight_exchange.url, "marlops-paper", "marlops-paper-secret", governor=governor)
    broker.get_account()
    broker.get_account()  # remaining is now 1 = the reserve
    broker.get_account()
    assert len(waits) == 1 and 0 < waits[0] <= 60
    snapshot = httpx.get(tight_exchange.url + "/v2/clock", headers=PAPER_HEADERS)
    assert snapshot.status_code == 429  # the exchange's budget was really spent: we paced, it did not refuse us


def test_governor_when_headers_show_budget_then_no_wait() -> None:
    governor = RateLimitGovernor(reserve=1, clock=lambda: 1000.0)
    governor.observe({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "150", "X-RateLimit-Reset": "1030"})
    assert governor.wait_needed() == 0.0
    governor.observe({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1030"})
    assert governor.wait_needed() == 30.0
