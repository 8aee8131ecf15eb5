"""One Redis pub/sub channel carrying one pydantic message type, with connection health and reconnection.

    channel = RedisChannel(url, "market-snapshots", MarketSnapshotMessage, on_health=print)
    channel.subscribe(handle)          # returns once Redis confirmed the subscription
    channel.publish(message)           # -> number of receivers

The listener thread owns its pub/sub connection. When a read fails (Redis stopped, connection
reset) the health turns to `connected=False` with the reason, and the thread reconnects and
subscribes again by itself on a fresh connection every `reconnect_pause_s` until Redis answers;
then the health turns back to `connected=True`. It does not rely on redis-py's own re-subscription
(`PubSub.on_connect`), which only happens when the next read after a failure manages to reconnect
at once. Pub/sub keeps nothing: what is published while a subscriber is disconnected is lost to it.

A message that does not parse is logged, counted (`malformed_count`) and skipped; a subscriber that
raises is logged and does not stop delivery to the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

import redis
from pydantic import BaseModel, ValidationError

from contracts.urls import redact_url
from serving.errors import DirectiveBusError

logger = logging.getLogger(__name__)

M = TypeVar("M")

POLL_S = 0.2
SUBSCRIBE_CONFIRM_S = 5.0
RECONNECT_PAUSE_S = 0.5


@dataclass(frozen=True)
class ChannelHealth:
    """Whether the subscription is live; `reason` says why not (or what restored it), `since` when it changed."""

    connected: bool
    reason: str
    since: datetime


HealthCallback = Callable[[ChannelHealth], None]


def _preview(data: bytes | str) -> str:
    return data[:200] if isinstance(data, str) else data[:200].decode(errors="replace")


class RedisChannel(Generic[M]):
    """Publish and subscribe to one channel; `parse` turns a payload into a message (raising ValueError /
    ValidationError on a malformed one). Without `parse`, `model.model_validate_json` is used."""

    def __init__(
        self,
        url: str,
        channel: str,
        model: type[BaseModel] | None = None,
        *,
        parse: Callable[[bytes | str], M] | None = None,
        on_health: HealthCallback | None = None,
        connect_timeout_s: float = 2.0,
        reconnect_pause_s: float = RECONNECT_PAUSE_S,
        require_connection: bool = True,
    ) -> None:
        if parse is None:
            if model is None:
                raise DirectiveBusError(f"channel {channel!r}: give a message model or a parse function")
            parse = model.model_validate_json  # type: ignore[assignment]
        self.url = url
        self.shown_url = redact_url(url)  # for logs and exception texts: never the password
        self.channel = channel
        self._parse_payload: Callable[[bytes | str], M] = parse  # type: ignore[assignment]
        self._on_health = on_health
        self._reconnect_pause_s = reconnect_pause_s
        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout_s, socket_timeout=max(connect_timeout_s, 5.0)
        )
        self._health = ChannelHealth(False, "not subscribed yet", datetime.now(UTC))
        if require_connection:
            try:
                self._redis.ping()
            except redis.RedisError as exc:
                self._redis.close()
                raise DirectiveBusError(f"redis at {self.shown_url} unreachable: {exc}") from exc
        self._subscribers: list[Callable[[M], None]] = []
        self._lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        self._malformed = 0
        self._closed = False

    # ---- state ---------------------------------------------------------------------------------
    @property
    def health(self) -> ChannelHealth:
        return self._health

    @property
    def malformed_count(self) -> int:
        """Messages on the channel that did not parse (logged and skipped)."""
        return self._malformed

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- publish -------------------------------------------------------------------------------
    def publish_raw(self, payload: str, *, what: str = "message") -> int:
        """Publish one payload; returns how many subscribers Redis delivered it to."""
        if self._closed:
            raise DirectiveBusError(f"redis channel {self.channel!r} is closed")
        try:
            receivers = int(self._redis.publish(self.channel, payload))
        except redis.RedisError as exc:
            raise DirectiveBusError(
                f"publishing {what} to {self.shown_url} channel {self.channel!r} failed: {exc}"
            ) from exc
        logger.debug("published %s on %s to %d receiver(s)", what, self.channel, receivers)
        return receivers

    def publish(self, message: BaseModel, *, what: str = "message") -> int:
        return self.publish_raw(message.model_dump_json(), what=what)

    # ---- subscribe -----------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[M], None], *, wait_s: float | None = SUBSCRIBE_CONFIRM_S) -> None:
        """Register `callback`. The first call starts the listener and returns once Redis confirmed the
        subscription (so no later publish is missed); `wait_s=None` returns at once and keeps trying in
        the background when Redis is down (health says so). A confirmation that does not come within
        `wait_s` raises DirectiveBusError (the listener keeps trying until close())."""
        with self._lock:
            if self._closed:
                raise DirectiveBusError(f"redis channel {self.channel!r} is closed")
            self._subscribers.append(callback)
            first = self._listener is None
            if first:
                self._listener = threading.Thread(target=self._listen, name=f"redis-{self.channel}", daemon=True)
                self._listener.start()
        if first and wait_s is not None and not self.wait_connected(wait_s):
            raise DirectiveBusError(
                f"subscribing to {self.channel!r} at {self.shown_url} failed: {self._health.reason}"
            )

    def wait_connected(self, timeout_s: float) -> bool:
        """Poll until the subscription is confirmed (True) or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not self._health.connected:
            if time.monotonic() >= deadline or self._stopping.is_set():
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping.set()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.join(timeout=SUBSCRIBE_CONFIRM_S + 5 * POLL_S)
        self._redis.close()

    # ---- listener ------------------------------------------------------------------------------
    def _set_health(self, connected: bool, reason: str) -> None:
        with self._health_lock:
            changed = connected != self._health.connected or (not connected and reason != self._health.reason)
            if not changed:
                return
            self._health = ChannelHealth(connected, reason, datetime.now(UTC))
        if connected:
            logger.info("redis channel %s at %s: subscribed (%s)", self.channel, self.shown_url, reason)
        else:
            logger.error("redis channel %s at %s: connection lost (%s); reconnecting", self.channel, self.shown_url,
                         reason)
        if self._on_health is not None:
            try:
                self._on_health(self._health)
            except Exception:  # a broken health callback must not stop the listener
                logger.exception("health callback of channel %s failed", self.channel)

    def _connect(self) -> redis.client.PubSub | None:
        """A fresh pub/sub connection subscribed to the channel, or None (health says why)."""
        pubsub = self._redis.pubsub()
        try:
            pubsub.subscribe(self.channel)
            deadline = time.monotonic() + SUBSCRIBE_CONFIRM_S
            while time.monotonic() < deadline and not self._stopping.is_set():
                message = pubsub.get_message(timeout=POLL_S)
                if message is not None and message["type"] == "subscribe":
                    return pubsub
            reason = "redis did not confirm the subscription"
        except (redis.RedisError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        pubsub.close()
        if not self._stopping.is_set():
            self._set_health(False, reason)
        return None

    def _listen(self) -> None:
        pubsub: redis.client.PubSub | None = None
        reconnects = 0
        while not self._stopping.is_set():
            if pubsub is None:
                pubsub = self._connect()
                if pubsub is None:
                    self._stopping.wait(self._reconnect_pause_s)
                    continue
                self._set_health(True, "subscribed" if reconnects == 0 else f"resubscribed (reconnect {reconnects})")
                reconnects += 1
            try:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
            except (redis.RedisError, OSError) as exc:
                pubsub.close()
                pubsub = None
                self._set_health(False, f"{type(exc).__name__}: {exc}")
                self._stopping.wait(self._reconnect_pause_s)
                continue
            if message is None or message.get("type") != "message":
                continue
            parsed = self._parse(message["data"])
            if parsed is not None:
                with self._lock:
                    subscribers = list(self._subscribers)
                for callback in subscribers:
                    try:
                        callback(parsed)
                    except Exception:  # a broken subscriber must not starve the others; its traceback is logged
                        logger.exception("subscriber %r of channel %s failed", callback, self.channel)
        if pubsub is not None:
            pubsub.close()

    def _parse(self, data: bytes | str) -> M | None:
        try:
            return self._parse_payload(data)
        except ValidationError as exc:
            self._malformed += 1
            logger.warning(
                "redis channel: skipped malformed message on %s (%d error(s): %s): %r",
                self.channel, exc.error_count(), exc.errors()[0]["msg"], _preview(data),
            )
        except ValueError as exc:
            self._malformed += 1
            logger.warning("redis channel: skipped malformed message on %s (%s): %r", self.channel, exc,
                           _preview(data))
        return None
