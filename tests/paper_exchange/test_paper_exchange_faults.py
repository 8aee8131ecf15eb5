"""Fault injection in the paper exchange, observed through the real alpaca-py client (AlpacaBroker)."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from exchange_builders import PAPER_HEADERS, T0

from contracts.orders import OrderIntent, OrderSide
from gateway.brokers.alpaca_broker import AlpacaBroker
from gateway.errors import BrokerRejectedError, BrokerUnavailableError
from gateway.serve import ServerHandle, free_port
from marlops.net import http_ok, wait_until

ORDERS = {"methods": ["POST"], "path_prefix": "/v2/orders"}


def intent(coid: str, qty: float = 10, side: OrderSide = OrderSide.BUY) -> OrderIntent:
    return OrderIntent(client_order_id=coid, symbol="AAPL", side=side, qty=qty, reference_price=100.0,
                       policy_version="v1", bar_index=0, timestep=T0)


def install(http: httpx.Client, *rules: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    response = http.post("/_sim/faults", json={"seed": seed, "rules": list(rules)})
    assert response.status_code == 200, response.text
    return dict(response.json())


def faults(http: httpx.Client) -> dict[str, Any]:
    return dict(http.get("/_sim/faults").json())


def sim_orders(http: httpx.Client) -> list[dict[str, Any]]:
    return list(http.get("/_sim/orders").json())


def wait_until_served(http: httpx.Client) -> None:
    """Until the exchange has finished every faulted request (a sleeping timeout included)."""
    wait_until(lambda: faults(http)["in_flight"] == 0, timeout_s=10, what="faulted requests to finish",
               interval_s=0.05)


@pytest.fixture
def http(exchange_http: httpx.Client) -> httpx.Client:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    return exchange_http


@pytest.fixture
def broker(paper_exchange: ServerHandle, http: httpx.Client) -> AlpacaBroker:
    """No retry policy: each call is exactly one request, so the client sees each fault as it is."""
    return AlpacaBroker(paper_exchange.url, "marlops-paper", "marlops-paper-secret", timeout_s=0.3)


@pytest.mark.parametrize(("rule", "reason"), [
    ({"kind": "latency"}, "latency needs delay_s > 0"),
    ({"kind": "partial_fill"}, "fill_ratio is required for partial_fill"),
    ({"kind": "http_500", "fill_ratio": 0.5}, "fill_ratio is required for partial_fill and applies to nothing"),
    ({"kind": "reject", "methods": ["GET"]}, "reject acts on order submissions"),
    ({"kind": "http_429", "after": "after"}, "after='after' applies to timeout, http_500 and http_503 only"),
    ({"kind": "http_500", "probability": 1.5}, "probability"),
    ({"kind": "http_500", "path_prefix": "/_sim/"}, "faults never apply to /_sim/*"),
    ({"kind": "http_500", "colour": "red"}, "colour"),
    ({"kind": "meteor"}, "kind"),
])
def test_install_plan_when_rule_invalid_then_422_with_reason_and_plan_kept(
    http: httpx.Client, rule: dict[str, Any], reason: str
) -> None:
    install(http, {"kind": "http_503", "count": 1})
    response = http.post("/_sim/faults", json={"rules": [rule]})
    assert response.status_code == 422
    assert reason in response.json()["message"]
    assert [r["kind"] for r in faults(http)["plan"]["rules"]] == ["http_503"]


def test_latency_when_injected_then_call_still_succeeds_and_fault_counted(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "latency", "delay_s": 0.05, "path_prefix": "/v2/account"})
    assert broker.get_account().cash == pytest.approx(1_000_000.0)
    assert faults(http)["fired"] == {"latency": 1}


def test_timeout_before_when_client_gives_up_then_unavailable_and_no_order(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "timeout", "delay_s": 0.8, **ORDERS})
    with pytest.raises(BrokerUnavailableError, match="timed out"):
        broker.submit_market_order(intent("mo-tb"))
    wait_until_served(http)
    assert sim_orders(http) == []
    assert faults(http)["fired"] == {"timeout": 1}


def test_timeout_after_when_client_gives_up_then_order_exists_at_exchange(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "timeout", "delay_s": 0.8, "after": "after", "count": 1, **ORDERS})
    with pytest.raises(BrokerUnavailableError):
        broker.submit_market_order(intent("mo-ta"))
    assert [o["client_order_id"] for o in sim_orders(http)] == ["mo-ta"]
    found = broker.get_order_by_client_id("mo-ta")  # the lookup a gateway does after an unknown outcome
    assert found is not None and found.status == "filled"
    wait_until_served(http)


@pytest.mark.parametrize(("kind", "after", "status", "orders"), [
    ("http_500", "before", 500, 0),
    ("http_503", "before", 503, 0),
    ("http_500", "after", 500, 1),
    ("http_503", "after", 503, 1),
])
def test_http_5xx_when_injected_then_rejected_error_and_order_only_if_after(
    broker: AlpacaBroker, http: httpx.Client, kind: str, after: str, status: int, orders: int
) -> None:
    install(http, {"kind": kind, "after": after, **ORDERS})
    with pytest.raises(BrokerRejectedError) as caught:
        broker.submit_market_order(intent("mo-5xx"))
    assert caught.value.status_code == status
    assert "injected" in caught.value.message and caught.value.code == status * 100000
    assert len(sim_orders(http)) == orders


def test_http_429_when_injected_then_rate_limit_headers_and_alpaca_py_does_not_retry(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "http_429", "path_prefix": "/v2/account"})
    raw = http.get("/v2/account")
    assert raw.status_code == 429
    assert (raw.headers["Retry-After"], raw.headers["X-RateLimit-Remaining"]) == ("1", "0")
    assert time.time() - 5 < int(raw.headers["X-RateLimit-Reset"]) <= time.time() + 1
    with pytest.raises(BrokerRejectedError) as caught:
        broker.get_account()
    assert caught.value.status_code == 429
    # alpaca-py's own 429 loop (3 retries, 3 s apart) would have fired the fault 4 more times.
    assert faults(http)["fired"] == {"http_429": 2}


def test_reject_when_injected_then_403_insufficient_buying_power_and_no_order(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "reject"})
    with pytest.raises(BrokerRejectedError) as caught:
        broker.submit_market_order(intent("mo-rej"))
    assert (caught.value.status_code, caught.value.code) == (403, 40310000)
    assert caught.value.message == "insufficient buying power (injected)"
    assert sim_orders(http) == []
    assert broker.get_account().cash == pytest.approx(1_000_000.0)  # reject applies to submissions only


def test_partial_fill_when_injected_then_open_until_fill_open_fills_rest(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "partial_fill", "fill_ratio": 0.4, "count": 1})
    first = broker.submit_market_order(intent("mo-part", qty=10))
    assert (first.status, first.filled_qty, first.remaining_qty, first.is_terminal) == (
        "partially_filled", 4.0, 6.0, False)
    assert broker.get_positions()[0].qty == pytest.approx(4.0)
    http.post("/_sim/prices", json={"prices": {"AAPL": 110.0}}).raise_for_status()
    filled = http.post("/_sim/fill_open").json()["filled"]
    assert [o["client_order_id"] for o in filled] == ["mo-part"]
    later = broker.get_order_by_client_id("mo-part")
    assert later is not None
    assert (later.status, later.filled_qty, later.remaining_qty) == ("filled", 10.0, 0.0)
    assert later.filled_avg_price == pytest.approx((4 * 100.0 + 6 * 110.0) / 10)
    assert broker.get_positions()[0].qty == pytest.approx(10.0)
    assert http.post("/_sim/fill_open").json()["filled"] == []  # nothing left open


def test_count_when_limited_then_fault_fires_that_many_times_then_normal(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    install(http, {"kind": "http_503", "count": 2, "path_prefix": "/v2/account"})
    codes = []
    for _ in range(3):
        try:
            broker.get_account()
            codes.append(200)
        except BrokerRejectedError as exc:
            codes.append(exc.status_code or 0)
    assert codes == [503, 503, 200]
    assert faults(http)["remaining"] == [0]


def _fired_sequence(http: httpx.Client, broker: AlpacaBroker, seed: int) -> list[tuple[int, str]]:
    install(http, {"kind": "http_500", "probability": 0.3}, {"kind": "latency", "delay_s": 0.001,
                                                              "probability": 0.5}, seed=seed)
    for _ in range(20):
        try:
            broker.get_account()
        except BrokerRejectedError:
            pass  # the injected 500s are what is being counted
    return [(h["request"], h["kind"]) for h in faults(http)["history"]]


def test_fault_sequence_when_same_seed_then_same_fired_sequence(broker: AlpacaBroker, http: httpx.Client) -> None:
    first = _fired_sequence(http, broker, seed=7)
    again = _fired_sequence(http, broker, seed=7)
    other = _fired_sequence(http, broker, seed=8)
    assert first == again
    kinds = [kind for _, kind in first]
    assert 0 < kinds.count("http_500") < 20 and 0 < kinds.count("latency") < 20
    assert other != first


def test_sim_paths_when_faults_cover_everything_then_never_faulted(http: httpx.Client) -> None:
    install(http, {"kind": "http_500", "path_prefix": "/"})
    assert http.get("/v2/account").status_code == 500
    assert http.get("/_sim/state").status_code == 200
    assert http.post("/_sim/prices", json={"prices": {"MSFT": 1.0}}).status_code == 200
    cleared = http.delete("/_sim/faults").json()
    assert cleared["plan"]["rules"] == [] and cleared["fired"] == {}
    assert http.get("/v2/account").status_code == 200


def test_sim_orders_when_more_than_a_page_then_every_order_oldest_first(http: httpx.Client) -> None:
    for n in range(60):
        body = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day",
                "client_order_id": f"mo-{n:02d}"}
        http.post("/v2/orders", json=body).raise_for_status()
    assert len(http.get("/v2/orders", params={"status": "all"}).json()) == 50  # Alpaca's default page
    assert [o["client_order_id"] for o in sim_orders(http)] == [f"mo-{n:02d}" for n in range(60)]


def test_market_closed_when_configured_then_clock_closed_and_order_refused(
    broker: AlpacaBroker, http: httpx.Client
) -> None:
    assert http.post("/_sim/config", json={"market_open": False}).json()["market_open"] is False
    assert broker.get_clock().is_open is False
    with pytest.raises(BrokerRejectedError) as caught:
        broker.submit_market_order(intent("mo-closed"))
    assert (caught.value.status_code, caught.value.code, caught.value.message) == (403, 40310000, "market is closed")
    extended = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day",
                "client_order_id": "mo-ext", "extended_hours": True}
    assert http.post("/v2/orders", json=extended).status_code == 200
    assert [o["client_order_id"] for o in sim_orders(http)] == ["mo-ext"]
    http.post("/_sim/config", json={"market_open": True}).raise_for_status()
    assert broker.get_clock().is_open is True
    assert broker.submit_market_order(intent("mo-open")).status == "filled"


def test_cli_when_faults_file_given_then_plan_active_at_start(tmp_path: Path) -> None:
    plan = {"seed": 3, "rules": [{"kind": "http_503", "count": 1, "path_prefix": "/v2/account"}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "paper_exchange", "--port", str(port),
         "--faults", str(tmp_path / "plan.json"), "--log-level", "warning"],
    )
    try:
        wait_until(http_ok(url + "/_sim/state", PAPER_HEADERS), timeout_s=30, what="paper exchange CLI")
        with httpx.Client(base_url=url, headers=PAPER_HEADERS) as client:
            assert faults(client)["plan"] == {"seed": 3, "rules": [
                {"kind": "http_503", "probability": 1.0, "count": 1, "methods": None,
                 "path_prefix": "/v2/account", "delay_s": 0.0, "fill_ratio": None, "after": "before"}]}
            assert [client.get("/v2/account").status_code for _ in range(2)] == [503, 200]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_cli_when_faults_file_invalid_then_exits_with_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"rules": [{"kind": "timeout"}]}))
    done = subprocess.run(
        [sys.executable, "-m", "paper_exchange", "--port", str(free_port()),
         "--faults", str(tmp_path / "bad.json")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "timeout needs delay_s > 0" in done.stderr
