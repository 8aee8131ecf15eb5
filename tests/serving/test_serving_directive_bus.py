from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from contracts.config import DirectiveBusConfig
from contracts.decisions import MasterDirective
from serving.directive_bus import DirectiveBus, InProcessDirectiveBus, RedisDirectiveBus, make_bus
from serving.errors import DirectiveBusError

REDIS_URL = os.environ.get("MARLOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_WAIT_S = 5.0


def _directive(bar_index: int, mode: str = "cautious") -> MasterDirective:
    return MasterDirective(
        directive_id=f"master-v1-bar{bar_index}",
        issued_at=datetime(2026, 3, 2, 21, 0, tzinfo=UTC),
        ttl_seconds=864000.0,
        mode=mode,  # type: ignore[arg-type]
        max_position_size=0.05,
        risk_scale=0.6,
        defensive=False,
        policy_version="v1",
    )


def test_in_process_bus_when_published_then_every_subscriber_called_before_return() -> None:
    bus = InProcessDirectiveBus()
    first: list[MasterDirective] = []
    second: list[MasterDirective] = []
    bus.subscribe(first.append)
    bus.subscribe(second.append)
    bus.publish(_directive(5))
    assert first == second == [_directive(5)]


def test_in_process_bus_when_subscriber_raises_then_others_still_receive(caplog: pytest.LogCaptureFixture) -> None:
    bus = InProcessDirectiveBus()
    received: list[MasterDirective] = []

    def broken(directive: MasterDirective) -> None:
        raise RuntimeError("gateway overlay down")

    bus.subscribe(broken)
    bus.subscribe(received.append)
    bus.publish(_directive(10))
    assert received == [_directive(10)]
    assert "failed on directive master-v1-bar10" in caplog.text


def test_in_process_bus_when_closed_then_publish_refused() -> None:
    bus = InProcessDirectiveBus()
    bus.close()
    with pytest.raises(DirectiveBusError, match="closed"):
        bus.publish(_directive(0))


def test_make_bus_when_kind_inprocess_then_in_process_bus() -> None:
    bus = make_bus(DirectiveBusConfig(kind="inprocess"))
    assert isinstance(bus, InProcessDirectiveBus) and isinstance(bus, DirectiveBus)


def test_redis_bus_when_unreachable_then_error_names_url() -> None:
    with pytest.raises(DirectiveBusError, match="redis at redis://127.0.0.1:1/0 unreachable"):
        RedisDirectiveBus("redis://127.0.0.1:1/0")


@pytest.fixture
def redis_channel(request: pytest.FixtureRequest) -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(
            f"Redis not reachable at {REDIS_URL} ({exc}); set MARLOPS_TEST_REDIS_URL to run the Redis bus tests"
        )
    finally:
        client.close()
    yield f"test-master-directives-{os.getpid()}-{request.node.name}"


def _next(inbox: queue.Queue[MasterDirective]) -> MasterDirective:
    return inbox.get(timeout=_WAIT_S)


def test_redis_bus_when_published_then_other_bus_instance_receives(redis_channel: str) -> None:
    publisher = RedisDirectiveBus(REDIS_URL, redis_channel)
    subscriber = RedisDirectiveBus(REDIS_URL, redis_channel)
    inbox: queue.Queue[MasterDirective] = queue.Queue()
    try:
        subscriber.subscribe(inbox.put)
        publisher.publish(_directive(5, "defensive"))
        publisher.publish(_directive(10, "normal"))
        assert [_next(inbox), _next(inbox)] == [_directive(5, "defensive"), _directive(10, "normal")]
    finally:
        publisher.close()
        subscriber.close()


def test_redis_bus_when_message_malformed_then_skipped_and_next_delivered(
    redis_channel: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = RedisDirectiveBus(REDIS_URL, redis_channel)
    inbox: queue.Queue[MasterDirective] = queue.Queue()
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        bus.subscribe(inbox.put)
        raw.publish(redis_channel, b"{not json")
        raw.publish(redis_channel, _directive(1).model_dump_json().replace('"cautious"', '"yolo"'))
        bus.publish(_directive(15))
        assert _next(inbox) == _directive(15)
        assert bus.malformed_count == 2
        assert inbox.empty()
        assert "skipped malformed message on " + redis_channel in caplog.text
    finally:
        raw.close()
        bus.close()


def test_redis_bus_when_closed_then_publish_refused(redis_channel: str) -> None:
    bus = make_bus(DirectiveBusConfig(kind="redis", redis_url=REDIS_URL, channel=redis_channel))
    assert isinstance(bus, RedisDirectiveBus)
    bus.close()
    with pytest.raises(DirectiveBusError, match="closed"):
        bus.publish(_directive(0))
