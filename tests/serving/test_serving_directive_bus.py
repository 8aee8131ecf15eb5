from __future__ import annotations

import os
import queue
from datetime import UTC, datetime

import pytest
import redis
from polling import wait_for
from redis_server import REDIS_URL, PrivateRedis

from contracts.config import DirectiveBusConfig
from contracts.decisions import MarketSnapshotMessage, MasterDirective, MasterDirectivePublished
from serving.directive_bus import DirectiveBus, InProcessDirectiveBus, RedisDirectiveBus, make_bus
from serving.errors import DirectiveBusError
from serving.redis_channel import ChannelHealth, RedisChannel
from serving.snapshot_bus import SNAPSHOT_CHANNEL, SnapshotBus

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
def redis_channel(machine_redis: str, request: pytest.FixtureRequest) -> str:
    return f"test-master-directives-{os.getpid()}-{request.node.name}"


def _next(inbox: queue.Queue[MasterDirective]) -> MasterDirective:
    return inbox.get(timeout=_WAIT_S)


_SECRET_URL = "redis://user:s3cret@127.0.0.1:1/0"  # nothing listens on port 1


def test_redis_bus_when_url_has_password_and_unreachable_then_error_and_logs_never_show_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    with pytest.raises(DirectiveBusError) as at_start:
        RedisDirectiveBus(_SECRET_URL)
    assert "s3cret" not in str(at_start.value) and "redis://user:***@127.0.0.1:1/0" in str(at_start.value)
    with pytest.raises(DirectiveBusError) as snapshot_start:
        SnapshotBus(_SECRET_URL)
    assert "s3cret" not in str(snapshot_start.value)
    # A channel that starts without Redis: the listener's lost/retry logs, the subscribe timeout and a
    # failed publish all name the URL, redacted.
    channel: RedisChannel[MarketSnapshotMessage] = RedisChannel(
        _SECRET_URL, "test-redacted", MarketSnapshotMessage, require_connection=False, connect_timeout_s=0.2,
        reconnect_pause_s=0.05)
    try:
        assert channel.shown_url == "redis://user:***@127.0.0.1:1/0"
        with pytest.raises(DirectiveBusError) as subscribing:
            channel.subscribe(lambda _message: None, wait_s=0.5)
        with pytest.raises(DirectiveBusError) as publishing:
            channel.publish_raw("{}")
    finally:
        channel.close()
    for exc in (subscribing.value, publishing.value):
        assert "s3cret" not in str(exc) and "user:***@127.0.0.1:1" in str(exc)
    assert "connection lost" in caplog.text and "user:***@127.0.0.1:1" in caplog.text
    assert "s3cret" not in caplog.text


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


# ---- envelope, health and reconnection, market snapshots --------------------------------------


@pytest.fixture
def private_redis(private_redis: PrivateRedis) -> PrivateRedis:
    """tests/conftest.py's private redis-server, started."""
    private_redis.start()
    return private_redis


def test_redis_bus_when_published_then_envelope_carries_publish_time(private_redis: PrivateRedis) -> None:
    bus = RedisDirectiveBus(private_redis.url)
    raw = redis.Redis.from_url(private_redis.url).pubsub()
    try:
        raw.subscribe("master-directives")
        wait_for(lambda: (m := raw.get_message(timeout=0.1)) is not None and m["type"] == "subscribe", "subscription",
                 timeout_s=_WAIT_S)
        before = datetime.now(UTC)
        bus.publish(_directive(5))
        message = wait_for(lambda: raw.get_message(ignore_subscribe_messages=True, timeout=0.1), "the envelope",
                           timeout_s=_WAIT_S)
        assert message is not None
        envelope = MasterDirectivePublished.model_validate_json(message["data"])
        assert envelope.directive == _directive(5)
        assert before <= envelope.published_at <= datetime.now(UTC)
    finally:
        raw.close()
        bus.close()


def test_redis_bus_when_bare_directive_published_then_still_delivered_without_publish_time(
    private_redis: PrivateRedis,
) -> None:
    bus = RedisDirectiveBus(private_redis.url)
    inbox: queue.Queue[tuple[MasterDirective, datetime | None]] = queue.Queue()
    raw = redis.Redis.from_url(private_redis.url)
    try:
        bus.subscribe_published(lambda d, at: inbox.put((d, at)))
        raw.publish("master-directives", _directive(1).model_dump_json())
        bus.publish(_directive(2))
        first, second = inbox.get(timeout=_WAIT_S), inbox.get(timeout=_WAIT_S)
        assert first == (_directive(1), None)
        assert second[0] == _directive(2) and second[1] is not None
    finally:
        raw.close()
        bus.close()


def test_redis_bus_when_redis_restarts_then_health_lost_with_reason_and_resubscribed(
    private_redis: PrivateRedis,
) -> None:
    changes: list[ChannelHealth] = []
    bus = RedisDirectiveBus(private_redis.url, on_health=changes.append, reconnect_pause_s=0.1)
    inbox: queue.Queue[MasterDirective] = queue.Queue()
    publisher = RedisDirectiveBus(private_redis.url)
    try:
        bus.subscribe(inbox.put)
        assert bus.health.connected and [c.connected for c in changes] == [True]
        private_redis.kill()
        wait_for(lambda: not bus.health.connected, "the health to report the loss", timeout_s=_WAIT_S)
        assert bus.health.reason  # e.g. "ConnectionError: Connection closed by server."
        with pytest.raises(DirectiveBusError, match="publishing directive master-v1-bar3"):
            publisher.publish(_directive(3))
        private_redis.start()  # same port
        wait_for(lambda: bus.health.connected, "the bus to resubscribe by itself", timeout_s=_WAIT_S)
        assert "resubscribed" in bus.health.reason
        publisher.publish(_directive(4))
        assert _next(inbox) == _directive(4)
        assert [c.connected for c in changes][0] is True and changes[-1].connected is True
        assert any(not c.connected for c in changes)
    finally:
        publisher.close()
        bus.close()


def test_snapshot_bus_when_snapshot_published_then_subscriber_receives_it(private_redis: PrivateRedis) -> None:
    publisher = SnapshotBus(private_redis.url)
    subscriber = SnapshotBus(private_redis.url)
    inbox: queue.Queue[MarketSnapshotMessage] = queue.Queue()
    try:
        subscriber.subscribe(inbox.put)
        sent = publisher.publish_snapshot(
            timestamp=datetime(2026, 3, 2, 21, 0, tzinfo=UTC), bar_index=7,
            master_features={"bench_ret_1": 0.01, "vix_level": 18.0}, regime_shift=True, feature_spec_hash="abc",
        )
        got = inbox.get(timeout=_WAIT_S)
        assert got == sent
        assert got.bar_index == 7 and got.regime_shift and got.master_features["vix_level"] == 18.0
        assert subscriber.channel == SNAPSHOT_CHANNEL == "market-snapshots"
        with pytest.raises(DirectiveBusError, match="timezone-aware"):
            publisher.publish_snapshot(timestamp=datetime(2026, 3, 2), bar_index=8, master_features={})
    finally:
        publisher.close()
        subscriber.close()
