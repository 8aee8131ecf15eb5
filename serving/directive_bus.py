"""Carries MasterDirectives from the master agent service to the gateway(s).

In-process by default (one process runs both); Redis pub/sub when they are separate services: on the
channel (`master-directives`) each message is a `MasterDirectivePublished` envelope (the directive plus
its wall-clock publish time, for propagation latency); a bare `MasterDirective` is still accepted.
A subscriber that raises is logged and does not stop delivery to the others, on both buses.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from contracts.config import DirectiveBusConfig
from contracts.decisions import MasterDirective, MasterDirectivePublished
from contracts.urls import redact_url
from serving.errors import DirectiveBusError
from serving.redis_channel import RECONNECT_PAUSE_S, ChannelHealth, HealthCallback, RedisChannel

logger = logging.getLogger(__name__)

DirectiveCallback = Callable[[MasterDirective], None]
PublishedCallback = Callable[[MasterDirective, "datetime | None"], None]


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


def parse_directive_payload(data: bytes | str) -> tuple[MasterDirective, datetime | None]:
    """A `MasterDirectivePublished` envelope -> (directive, published_at); a bare `MasterDirective`
    (what publishers sent before the envelope) -> (directive, None). Raises ValueError when it is neither."""
    body = json.loads(data)
    if isinstance(body, dict) and "directive" in body:
        envelope = MasterDirectivePublished.model_validate(body)
        return envelope.directive, envelope.published_at
    return MasterDirective.model_validate(body), None


class RedisDirectiveBus:
    """Redis pub/sub on one channel; payload = `MasterDirectivePublished` JSON (a bare `MasterDirective`
    is accepted too). A listener thread calls subscribers; it reconnects and resubscribes by itself
    when Redis comes back, and reports the connection health (`health`, `on_health`)."""

    def __init__(
        self,
        url: str,
        channel: str = "master-directives",
        *,
        connect_timeout_s: float = 2.0,
        on_health: HealthCallback | None = None,
        reconnect_pause_s: float = RECONNECT_PAUSE_S,
    ) -> None:
        self.url = url
        self.shown_url = redact_url(url)  # for logs and exception texts: never the password
        self.channel = channel
        try:
            self._channel: RedisChannel[tuple[MasterDirective, datetime | None]] = RedisChannel(
                url, channel, parse=parse_directive_payload, on_health=on_health,
                connect_timeout_s=connect_timeout_s, reconnect_pause_s=reconnect_pause_s,
            )
        except DirectiveBusError as exc:
            raise DirectiveBusError(f"directive bus: {exc}") from exc
        self._subscribers: list[PublishedCallback] = []
        self._lock = threading.Lock()
        self._listening = False

    @property
    def malformed_count(self) -> int:
        """Messages on the channel that were not a valid directive (logged and skipped)."""
        return self._channel.malformed_count

    @property
    def health(self) -> ChannelHealth:
        """connected / lost (with the reason) of the subscription; `connected=False` before subscribe()."""
        return self._channel.health

    def publish(self, directive: MasterDirective) -> None:
        """Publish `directive` in a `MasterDirectivePublished` envelope stamped with the wall-clock time."""
        envelope = MasterDirectivePublished(directive=directive, published_at=datetime.now(UTC))
        try:
            receivers = self._channel.publish(envelope, what=f"directive {directive.directive_id}")
        except DirectiveBusError as exc:
            raise DirectiveBusError(f"directive bus: {exc}") from exc
        logger.debug("published directive %s on %s to %s receiver(s)", directive.directive_id, self.channel, receivers)

    def subscribe(self, callback: DirectiveCallback) -> None:
        """Register `callback`; returns once Redis confirms the subscription, so no later publish is missed."""
        self.subscribe_published(lambda directive, _published_at: callback(directive))

    def subscribe_published(self, callback: PublishedCallback) -> None:
        """Like subscribe(), with the publish time (None for a bare directive) as second argument."""
        with self._lock:
            if self._channel.closed:
                raise DirectiveBusError(f"directive bus on channel {self.channel!r} is closed")
            self._subscribers.append(callback)
            start = not self._listening
            self._listening = True
        if start:
            try:
                self._channel.subscribe(self._deliver_published)
            except DirectiveBusError as exc:
                raise DirectiveBusError(f"directive bus: {exc}") from exc

    def wait_connected(self, timeout_s: float) -> bool:
        return self._channel.wait_connected(timeout_s)

    def close(self) -> None:
        self._channel.close()

    def _deliver_published(self, item: tuple[MasterDirective, datetime | None]) -> None:
        directive, published_at = item
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(directive, published_at)
            except Exception:  # a broken subscriber must not starve the others; its traceback is logged
                logger.exception("directive subscriber %r failed on directive %s", callback, directive.directive_id)


def make_bus(cfg: DirectiveBusConfig) -> DirectiveBus:
    """The bus named by config: `inprocess` or `redis` (url and channel from the config)."""
    if cfg.kind == "redis":
        return RedisDirectiveBus(cfg.redis_url, cfg.channel)
    return InProcessDirectiveBus()
