"""AlpacaBroker's retry policy against the real paper exchange with injected faults (alpaca-py underneath)."""

import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from gateway_builders import T0

from contracts.orders import OrderIntent, OrderSide
from gateway.brokers.alpaca_broker import AlpacaBroker
from gateway.brokers.retry import RetryPolicy, is_retryable, retry_after_s
from gateway.errors import BrokerRejectedError, BrokerUnavailableError
from gateway.serve import ServerHandle
from gateway.settings import RetrySettings
from marlops.net import wait_until

FAST = RetrySettings(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, seed=1)
ORDERS = {"methods": ["POST"], "path_prefix": "/v2/orders"}
# A near-zero latency rule on order submissions counts every attempt that reached the exchange.
COUNT_SUBMITS = {"kind": "latency", "delay_s": 0.001, **ORDERS}


def intent(coid: str, qty: float = 5) -> OrderIntent:
    return OrderIntent(client_order_id=coid, symbol="AAPL", side=OrderSide.BUY, qty=qty, reference_price=100.0,
                       policy_version="v1", bar_index=0, timestep=T0)


def install(http: httpx.Client, *rules: dict[str, Any]) -> None:
    http.post("/_sim/faults", json={"seed": 0, "rules": list(rules)}).raise_for_status()


def fired(http: httpx.Client) -> dict[str, int]:
    return dict(http.get("/_sim/faults").json()["fired"])


def orders_for(http: httpx.Client, coid: str) -> list[dict[str, Any]]:
    return [o for o in http.get("/_sim/orders").json() if o["client_order_id"] == coid]


def retry_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.brokers.retry"]


@pytest.fixture
def http(exchange_http: httpx.Client) -> httpx.Client:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    return exchange_http


@pytest.fixture
def broker(paper_exchange: ServerHandle, http: httpx.Client) -> AlpacaBroker:
    return AlpacaBroker(paper_exchange.url, "marlops-paper", "marlops-paper-secret", timeout_s=0.3, retry=FAST)


def test_submit_when_timeout_after_accept_then_retry_finds_order_and_exchange_holds_one(
    broker: AlpacaBroker, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    install(http, {"kind": "timeout", "delay_s": 0.8, "after": "after", "count": 1, **ORDERS})
    with caplog.at_level(logging.WARNING):
        result = broker.submit_market_order(intent("mo-lost-answer"))
    assert (result.client_order_id, result.status, result.filled_qty) == ("mo-lost-answer", "filled", 5.0)
    placed = orders_for(http, "mo-lost-answer")
    assert len(placed) == 1 and placed[0]["id"] == result.broker_order_id
    assert any("found the order already placed by an earlier attempt" in r.getMessage() for r in caplog.records)
    assert fired(http) == {"timeout": 1}
    wait_until(lambda: http.get("/_sim/faults").json()["in_flight"] == 0, timeout_s=10,
               what="the timed-out request to finish", interval_s=0.05)
    assert len(orders_for(http, "mo-lost-answer")) == 1


@pytest.mark.parametrize("kind", ["http_503", "http_429"])
def test_submit_when_transient_error_then_retried_once_and_one_order(
    broker: AlpacaBroker, http: httpx.Client, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    install(http, {"kind": kind, "count": 1, **ORDERS})
    with caplog.at_level(logging.WARNING):
        result = broker.submit_market_order(intent(f"mo-{kind}"))
    assert result.status == "filled"
    assert len(orders_for(http, f"mo-{kind}")) == 1
    assert fired(http) == {kind: 1}
    messages = retry_messages(caplog)
    assert len(messages) == 1 and "attempt 1 of 3" in messages[0] and kind[-3:] in messages[0]


def test_submit_when_after_5xx_then_retry_returns_landed_order_not_a_second_one(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "http_500", "after": "after", "count": 1, **ORDERS})
    result = broker.submit_market_order(intent("mo-500-after"))
    assert result.status == "filled"
    assert [o["id"] for o in orders_for(http, "mo-500-after")] == [result.broker_order_id]


def test_get_account_when_429_then_wait_honours_retry_after_capped_at_max_delay(
    paper_exchange: ServerHandle, http: httpx.Client
) -> None:
    waits: list[float] = []
    broker = AlpacaBroker(paper_exchange.url, "marlops-paper", "marlops-paper-secret", retry=FAST,
                          sleep=waits.append)
    install(http, {"kind": "http_429", "count": 1, "path_prefix": "/v2/account"})
    assert broker.get_account().equity == pytest.approx(1_000_000.0)
    # Backoff alone after attempt 1 is at most base_delay_s (0.01); Retry-After: 1 raises it to the 0.05 cap.
    assert waits == [FAST.max_delay_s]


@pytest.mark.parametrize(("fault", "status", "code"), [
    ({"kind": "reject"}, 403, 40310000),
    (None, 422, 42210000),  # no price for the symbol: the exchange's own 4xx
])
def test_submit_when_4xx_then_not_retried_and_no_order(
    broker: AlpacaBroker, http: httpx.Client, caplog: pytest.LogCaptureFixture,
    fault: dict[str, Any] | None, status: int, code: int,
) -> None:
    # Either rule fires on every submission, so its counter is the number of attempts made.
    install(http, fault or COUNT_SUBMITS)
    order = intent("mo-4xx") if fault else intent("mo-4xx").model_copy(update={"symbol": "ZZZ"})
    with caplog.at_level(logging.WARNING), pytest.raises(BrokerRejectedError) as caught:
        broker.submit_market_order(order)
    assert (caught.value.status_code, caught.value.code) == (status, code)
    assert sum(fired(http).values()) == 1
    assert retry_messages(caplog) == []
    assert http.get("/_sim/orders").json() == []


def test_submit_when_first_attempt_duplicate_then_rejected_not_looked_up(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    first = broker.submit_market_order(intent("mo-taken"))
    with pytest.raises(BrokerRejectedError) as caught:
        broker.submit_market_order(intent("mo-taken"))
    assert (caught.value.status_code, caught.value.message) == (422, "client_order_id must be unique")
    assert [o["id"] for o in orders_for(http, "mo-taken")] == [first.broker_order_id]


def test_submit_when_503_persists_then_rejected_after_max_attempts(
    broker: AlpacaBroker, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    install(http, {"kind": "http_503", **ORDERS})
    with caplog.at_level(logging.WARNING), pytest.raises(BrokerRejectedError) as caught:
        broker.submit_market_order(intent("mo-503"))
    assert caught.value.status_code == 503
    assert fired(http) == {"http_503": FAST.max_attempts}
    assert sum("failed (attempt" in m for m in retry_messages(caplog)) == FAST.max_attempts - 1
    assert any(f"failed on all {FAST.max_attempts} attempts" in m for m in retry_messages(caplog))
    assert http.get("/_sim/orders").json() == []


def test_get_positions_when_timeouts_persist_then_unavailable_after_max_attempts(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "timeout", "delay_s": 0.6, "path_prefix": "/v2/positions"})
    with pytest.raises(BrokerUnavailableError, match="timed out"):
        broker.get_positions()
    assert fired(http) == {"timeout": FAST.max_attempts}
    wait_until(lambda: http.get("/_sim/faults").json()["in_flight"] == 0, timeout_s=10,
               what="the timed-out requests to finish", interval_s=0.05)


def test_get_order_when_partially_filled_then_filled_after_fill_open(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "partial_fill", "fill_ratio": 0.5, "count": 1})
    placed = broker.submit_market_order(intent("mo-half", qty=8))
    seen = broker.get_order_by_client_id("mo-half")
    assert seen is not None and (seen.status, seen.filled_qty, seen.is_terminal) == ("partially_filled", 4.0, False)
    assert [o.client_order_id for o in broker.list_orders(status="open")] == ["mo-half"]
    http.post("/_sim/fill_open").raise_for_status()
    done = broker.get_order_by_client_id("mo-half")
    assert done is not None and (done.status, done.filled_qty, done.is_terminal) == ("filled", 8.0, True)
    assert done.broker_order_id == placed.broker_order_id
    assert broker.list_orders(status="open") == []


def test_list_orders_when_more_than_limit_then_all_after_time_oldest_first(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    placed = [broker.submit_market_order(intent(f"mo-{n}", qty=1)) for n in range(7)]
    everything = broker.list_orders(limit=3)
    assert [o.client_order_id for o in everything] == [f"mo-{n}" for n in range(7)]
    later = broker.list_orders(after=placed[1].submitted_at, limit=2)
    assert [o.client_order_id for o in later] == [f"mo-{n}" for n in range(2, 7)]
    assert broker.list_orders(after=placed[-1].submitted_at + timedelta(seconds=1)) == []
    assert broker.list_orders(status="closed", limit=500) == everything
    with pytest.raises(ValueError, match="status must be one of"):
        broker.list_orders(status="pending")
    with pytest.raises(ValueError, match="limit must be within"):
        broker.list_orders(limit=501)


def test_submit_when_market_closed_then_rejected_with_reason_not_retried(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    http.post("/_sim/config", json={"market_open": False}).raise_for_status()
    install(http, COUNT_SUBMITS)
    clock = broker.get_clock()
    assert clock.is_open is False and clock.next_close > clock.timestamp
    with pytest.raises(BrokerRejectedError, match="market is closed") as caught:
        broker.submit_market_order(intent("mo-closed"))
    assert caught.value.status_code == 403
    assert fired(http) == {"latency": 1}


def test_retry_policy_when_same_seed_then_same_waits_within_exponential_caps() -> None:
    settings = RetrySettings(max_attempts=6, base_delay_s=0.1, max_delay_s=0.5, seed=42)

    def waits_of(policy_settings: RetrySettings) -> list[float]:
        waits: list[float] = []
        policy = RetryPolicy(policy_settings, sleep=waits.append)

        def always_down() -> None:
            raise BrokerUnavailableError("down")

        with pytest.raises(BrokerUnavailableError):
            policy.call("probe", always_down)
        return waits

    first = waits_of(settings)
    assert first == waits_of(settings)
    assert first != waits_of(settings.model_copy(update={"seed": 43}))
    assert len(first) == settings.max_attempts - 1
    for attempt, wait in enumerate(first, start=1):
        assert 0 <= wait <= min(settings.max_delay_s, settings.base_delay_s * 2 ** (attempt - 1))


def test_retry_policy_when_error_not_retryable_then_raised_at_once() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not a broker hiccup")

    with pytest.raises(ValueError):
        RetryPolicy(FAST, sleep=lambda _s: None).call("probe", broken)
    assert calls == [1]
    assert not is_retryable(BrokerRejectedError(404, "not found"))
    assert is_retryable(BrokerRejectedError(429, "slow down")) and is_retryable(BrokerRejectedError(502, "bad gw"))


def test_retry_after_when_seconds_date_or_reset_then_seconds_to_wait() -> None:
    assert retry_after_s({"Retry-After": "2"}, now=1000.0) == 2.0
    assert retry_after_s({"Retry-After": "Thu, 01 Jan 1970 00:16:50 GMT"}, now=1000.0) == 10.0
    assert retry_after_s({"X-RateLimit-Reset": "1003"}, now=1000.0) == 3.0
    assert retry_after_s({"X-RateLimit-Reset": "900"}, now=1000.0) == 0.0
    assert retry_after_s({"Retry-After": "soon"}, now=1000.0) is None
    assert retry_after_s({}, now=1000.0) is None
