"""The gateway subscribing to the Redis directive bus itself: directives applied, outage alerted, the
defensive fallback once the last directive's TTL has passed, recovery when Redis returns.

A private redis-server per test (the `private_redis` fixture of tests/conftest.py: free port, no
persistence) so that it can be killed and restarted."""

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from gateway_builders import DAY, T0, batch, directive
from polling import wait_for
from redis_server import DIRECTIVE_CHANNEL, PrivateRedis

from contracts.decisions import MasterDirective, MasterDirectivePublished
from gateway.serve import ServerHandle

CHANNEL = DIRECTIVE_CHANNEL
_WAIT_S = 10.0


GatewayFactory = Callable[..., ServerHandle]


@pytest.fixture
def make_gateway(make_gateway: GatewayFactory, exchange_http: httpx.Client) -> GatewayFactory:
    """tests/gateway/conftest.py's, `factory(bus_url)`: a gateway subscribed to CHANNEL on the Redis at `bus_url`."""
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()

    def factory(bus_url: str) -> ServerHandle:
        return make_gateway(directive_bus_url=bus_url, directive_channel=CHANNEL)

    return factory


def published(d: MasterDirective) -> str:
    return MasterDirectivePublished(directive=d, published_at=datetime.now(UTC)).model_dump_json()


def latest_directive_id(gateway: ServerHandle) -> str | None:
    latest = httpx.get(gateway.url + "/v1/state").json()["latest_directive"]
    return None if latest is None else str(latest["directive_id"])


def alert_codes(gateway: ServerHandle) -> set[str]:
    return {a["name"] for a in httpx.get(gateway.url + "/v1/alerts").json()["alerts"]}


def metric(gateway: ServerHandle, name: str) -> float | None:
    text = httpx.get(gateway.url + "/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def decide(gateway: ServerHandle, bar_index: int) -> dict[str, Any]:
    response = httpx.post(gateway.url + "/v1/decisions",
                          content=batch({"AAPL": (0.5, 100.0)}, bar_index=bar_index).model_dump_json(),
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_directive_applied_when_published_on_redis_then_decisions_use_it_and_latency_recorded(
    private_redis: PrivateRedis, make_gateway: GatewayFactory
) -> None:
    private_redis.start()
    gateway = make_gateway(private_redis.url)
    assert alert_codes(gateway) == set()

    assert private_redis.publish(published(directive("cautious", max_position_size=0.05, risk_scale=0.5,
                                                     directive_id="master-v1-bar0"))) == 1
    wait_for(lambda: latest_directive_id(gateway) == "master-v1-bar0", "the directive to reach the book")
    body = decide(gateway, 0)
    assert body["directive"]["directive_id"] == "master-v1-bar0"
    assert body["directive_fallback"] is False and body["overlay"]["mode"] == "cautious"

    assert (metric(gateway, "marlops_gateway_directive_propagation_seconds_count") or 0) == 1
    bus = httpx.get(gateway.url + "/v1/status").json()["directive_bus"]
    assert bus["connected"] is True and bus["channel"] == CHANNEL
    assert bus["last_directive_id"] == "master-v1-bar0" and 0 <= bus["last_propagation_seconds"] < _WAIT_S

    # A bare MasterDirective (publishers before the envelope) is still applied; no latency without a stamp.
    private_redis.publish(directive("normal", issued_at=T0 + DAY, directive_id="master-v1-bar1").model_dump_json())
    wait_for(lambda: latest_directive_id(gateway) == "master-v1-bar1", "the bare directive to reach the book")
    assert metric(gateway, "marlops_gateway_directive_propagation_seconds_count") == 1


def test_redis_outage_when_redis_killed_then_alert_fallback_past_ttl_and_recovery_on_restart(
    private_redis: PrivateRedis, make_gateway: GatewayFactory
) -> None:
    private_redis.start()
    gateway = make_gateway(private_redis.url)
    alert_metric = 'marlops_gateway_alert_active{name="DIRECTIVE_BUS_DOWN"}'
    # Live for two days of market time.
    private_redis.publish(published(directive("normal", ttl_seconds=2 * 86400, directive_id="master-v1-bar0")))
    wait_for(lambda: latest_directive_id(gateway) == "master-v1-bar0", "the first directive")

    private_redis.kill()
    wait_for(lambda: "DIRECTIVE_BUS_DOWN" in alert_codes(gateway), "the DIRECTIVE_BUS_DOWN alert")
    assert metric(gateway, alert_metric) == 1.0
    status = httpx.get(gateway.url + "/v1/status").json()
    assert status["directive_bus"]["connected"] is False and status["directive_bus"]["last_error"]
    alert = next(a for a in status["alerts"] if a["name"] == "DIRECTIVE_BUS_DOWN")
    assert alert["severity"] == "warning" and f"127.0.0.1:{private_redis.port}" in alert["detail"]

    within_ttl = decide(gateway, 1)  # T0 + 1 day: the last directive is still live
    assert within_ttl["directive_fallback"] is False and within_ttl["directive"]["directive_id"] == "master-v1-bar0"
    past_ttl = decide(gateway, 3)  # T0 + 3 days: past its TTL -> the defensive fallback
    assert past_ttl["directive_fallback"] is True and past_ttl["directive"] is None
    assert past_ttl["overlay"]["mode"] == "defensive"

    private_redis.start()  # same port
    wait_for(lambda: "DIRECTIVE_BUS_DOWN" not in alert_codes(gateway), "the alert to clear")
    assert metric(gateway, alert_metric) == 0.0
    assert httpx.get(gateway.url + "/v1/status").json()["directive_bus"]["connected"] is True
    private_redis.publish(published(directive("cautious", issued_at=T0 + 4 * DAY, max_position_size=0.05,
                                              risk_scale=0.5, directive_id="master-v1-bar4")))
    wait_for(lambda: latest_directive_id(gateway) == "master-v1-bar4", "the directive after the outage")
    after = decide(gateway, 4)
    assert after["directive_fallback"] is False and after["directive"]["directive_id"] == "master-v1-bar4"
    assert (metric(gateway, "marlops_gateway_directive_propagation_seconds_count") or 0) == 2


def test_gateway_start_when_redis_down_then_alert_until_redis_up_and_directive_applies(
    private_redis: PrivateRedis, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(private_redis.url)  # nothing listens on the port yet: the gateway still starts
    assert httpx.get(gateway.url + "/healthz").status_code == 200
    assert "DIRECTIVE_BUS_DOWN" in alert_codes(gateway)
    assert decide(gateway, 0)["directive_fallback"] is True

    private_redis.start()
    wait_for(lambda: "DIRECTIVE_BUS_DOWN" not in alert_codes(gateway), "the subscription once redis is up")
    private_redis.publish(published(directive("normal", issued_at=T0 + DAY, directive_id="master-v1-bar1")))
    wait_for(lambda: latest_directive_id(gateway) == "master-v1-bar1", "the directive")
    assert decide(gateway, 1)["directive_fallback"] is False


def test_gateway_when_bus_url_has_password_and_redis_down_then_alerts_status_and_logs_never_show_it(
    private_redis: PrivateRedis, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    secret_url = private_redis.url.replace("redis://", "redis://user:s3cret@")  # nothing listens there yet
    gateway = make_gateway(secret_url)
    wait_for(lambda: "DIRECTIVE_BUS_DOWN" in alert_codes(gateway), "the bus-down alert")
    wait_for(lambda: "unreachable" in caplog.text, "the subscriber's log line")
    alerts = httpx.get(gateway.url + "/v1/alerts").text
    status = httpx.get(gateway.url + "/v1/status").text
    for text in (alerts, status, caplog.text):
        assert "s3cret" not in text
    assert "user:***@127.0.0.1" in caplog.text
