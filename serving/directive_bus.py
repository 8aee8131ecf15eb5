"""Carries MasterDirectives from the master agent service to the gateway(s).

In-process by default (one process runs both); Redis pub/sub when they are separate services.
A subscriber that raises is logged and does not stop delivery to the others, on both buses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import redis
from pydantic import ValidationError

from contracts.config import DirectiveBusConfig
from contracts.decisions import MasterDirective
from serving.errors import DirectiveBusError

logger = logging.getLogger(__name__)

DirectiveCallback = Callable[[MasterDirective], None]

_POLL_S = 0.2
_SUBSCRIBE_CONFIRM_S = 5.0
_RECONNECT_PAUSE_S = 1.0


@runtime_checkable
class DirectiveBus(Protocol):
    def publish(self, directive: MasterDirective) -> None: ...

    def subscribe(self, callback: DirectiveCallback) -> None: ...

    def close(self) -> None: ...


def _deliver(subscribers: list[DirectiveCallback], directive: MasterDirective) -> None:
    for callback in subscribers:
        try:
            callback(directive)
        except Exception:  # a broken subscriber must not starve the others; its traceback is logged
            logger.exception("directive subscriber %r failed on directive %s", callback, directive.directive_id)


class InProcessDirectiveBus:
    """Synchronous: publish() returns after every subscriber has been called."""

    def __init__(self) -> None:
        self._subscribers: list[DirectiveCallback] = []
        self._lock = threading.Lock()
        self._closed = False

    def publish(self, directive: MasterDirective) -> None:
        with self._lock:
            self._ensure_open()
            subscribers = list(self._subscribers)
        logger.debug("delivering directive %s to %d subscriber(s)", directive.directive_id, len(subscribers))
        _deliver(subscribers, directive)

    def subscribe(self, callback: DirectiveCallback) -> None:
        with self._lock:
            self._ensure_open()
            self._subscribers.append(callback)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._subscribers.clear()

    def _ensure_open(self) -> None:
        if self._closed:
            raise DirectiveBusError("in-process directive bus is closed")


class RedisDirectiveBus:
    """Redis pub/sub on one channel; payload = MasterDirective JSON. A listener thread calls subscribers."""

    def __init__(self, url: str, channel: str = "master-directives", *, connect_timeout_s: float = 2.0) -> None:
        self.url = url
        self.channel = channel
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout_s)
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            self._redis.close()
            raise DirectiveBusError(f"directive bus: redis at {url} unreachable: {exc}") from exc
        self._subscribers: list[DirectiveCallback] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._pubsub: redis.client.PubSub | None = None
        self._listener: threading.Thread | None = None
        self._malformed = 0
        self._closed = False

    @property
    def malformed_count(self) -> int:
        """Messages on the channel that were not a valid MasterDirective (logged and skipped)."""
        return self._malformed

    def publish(self, directive: MasterDirective) -> None:
        if self._closed:
            raise DirectiveBusError(f"directive bus on channel {self.channel!r} is closed")
        try:
            receivers = self._redis.publish(self.channel, directive.model_dump_json())
        except redis.RedisError as exc:
            raise DirectiveBusError(
                f"directive bus: publishing {directive.directive_id} to {self.url} "
                f"channel {self.channel!r} failed: {exc}"
            ) from exc
        logger.debug("published directive %s on %s to %s receiver(s)", directive.directive_id, self.channel, receivers)

    def subscribe(self, callback: DirectiveCallback) -> None:
        """Register `callback`; returns once Redis confirms the subscription, so no later publish is missed."""
        with self._lock:
            if self._closed:
                raise DirectiveBusError(f"directive bus on channel {self.channel!r} is closed")
            self._subscribers.append(callback)
            if self._listener is None:
                self._pubsub = self._subscribe_confirmed()
                self._listener = threading.Thread(
                    target=self._listen, args=(self._pubsub,), name=f"directive-bus-{self.channel}", daemon=True
                )
                self._listener.start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping.set()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.join(timeout=5 * _POLL_S + _RECONNECT_PAUSE_S)
        if self._pubsub is not None:
            self._pubsub.close()
        self._redis.close()

    def _subscribe_confirmed(self) -> redis.client.PubSub:
        pubsub = self._redis.pubsub()
        try:
            pubsub.subscribe(self.channel)
            deadline = time.monotonic() + _SUBSCRIBE_CONFIRM_S
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=_POLL_S)
                if message is not None and message["type"] == "subscribe":
                    return pubsub
        except redis.RedisError as exc:
            pubsub.close()
            raise DirectiveBusError(
                f"directive bus: subscribing to {self.channel!r} at {self.url} failed: {exc}"
            ) from exc
        pubsub.close()
        raise DirectiveBusError(f"directive bus: redis did not confirm the subscription to {self.channel!r}")

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        while not self._stopping.is_set():
            try:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL_S)
            except redis.RedisError as exc:
                # redis-py reconnects and resubscribes on the next read.
                logger.error("directive bus: reading %s failed (%s); retrying", self.channel, exc)
                self._stopping.wait(_RECONNECT_PAUSE_S)
                continue
            if message is None or message.get("type") != "message":
                continue
            directive = self._parse(message["data"])
            if directive is not None:
                with self._lock:
                    subscribers = list(self._subscribers)
                _deliver(subscribers, directive)

    def _parse(self, data: bytes | str) -> MasterDirective | None:
        try:
            return MasterDirective.model_validate_json(data)
        except ValidationError as exc:
            self._malformed += 1
            preview = data[:200] if isinstance(data, str) else data[:200].decode(errors="replace")
            logger.warning(
                "directive bus: skipped malformed message on %s (%d error(s): %s): %r",
                self.channel,
                exc.error_count(),
                exc.errors()[0]["msg"],
                preview,
            )
            return None


def make_bus(cfg: DirectiveBusConfig) -> DirectiveBus:
    """The bus named by config: `inprocess` or `redis` (url and channel from the config)."""
    if cfg.kind == "redis":
        return RedisDirectiveBus(cfg.redis_url, cfg.channel)
    return InProcessDirectiveBus()
