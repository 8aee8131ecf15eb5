"""The gateway's own subscription to the master directive channel on Redis.

Each message is a `MasterDirectivePublished` envelope (directive + wall-clock publish time); a bare
`MasterDirective` is accepted too (publish time unknown). A listener thread delivers them to
`on_directive(directive, published_at)`.

Connection health: while Redis cannot be reached (at start or later), `on_down(reason)` is called
on every failed attempt and the thread tries again every `reconnect_pause_s` on a fresh connection,
subscribing again itself; once the subscription is confirmed, `on_up()` is called. Pub/sub keeps
nothing, so directives published during an outage are lost: the gateway's directive TTL (market
time) then makes the defensive fallback apply until the master publishes again.

(The gateway imports only `contracts` from the project, so this does not reuse serving's bus.)
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

import redis
from pydantic import ValidationError

from contracts.decisions import MasterDirective, MasterDirectivePublished
from contracts.urls import redact_url

logger = logging.getLogger(__name__)

_POLL_S = 0.2
_CONFIRM_S = 5.0


def parse_directive_message(data: bytes | str) -> tuple[MasterDirective, datetime | None]:
    """Envelope -> (directive, published_at); bare directive -> (directive, None); ValueError otherwise."""
    body = json.loads(data)
    if isinstance(body, dict) and "directive" in body:
        envelope = MasterDirectivePublished.model_validate(body)
        return envelope.directive, envelope.published_at
    return MasterDirective.model_validate(body), None


class RedisDirectiveSubscriber:
    def __init__(
        self,
        url: str,
        channel: str,
        on_directive: Callable[[MasterDirective, datetime | None], None],
        *,
        on_up: Callable[[], None] = lambda: None,
        on_down: Callable[[str], None] = lambda reason: None,
        connect_timeout_s: float = 2.0,
        reconnect_pause_s: float = 0.5,
    ) -> None:
        self.url = url
        self.shown_url = redact_url(url)  # for logs: never the password
        self.channel = channel
        self._on_directive = on_directive
        self._on_up = on_up
        self._on_down = on_down
        self._reconnect_pause_s = reconnect_pause_s
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout_s,
                                           socket_timeout=max(5.0, connect_timeout_s))
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self.malformed = 0
        self.received = 0
        self.reconnects = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, wait_s: float = 2.0) -> bool:
        """Start listening; wait up to `wait_s` for the first confirmed subscription. Returns whether it is
        live; when not, the listener keeps trying (and `on_down` has said why)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"gateway-directives-{self.channel}",
                                            daemon=True)
            self._thread.start()
        return self._connected.wait(wait_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._redis.close()

    # ---- listener ------------------------------------------------------------------------------
    def _down(self, reason: str) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        if was_up or reason != self.last_error:
            logger.error("directive bus %s channel %s unreachable: %s; retrying every %.1fs", self.shown_url,
                         self.channel, reason, self._reconnect_pause_s)
        self.last_error = reason
        try:
            self._on_down(reason)
        except Exception:  # the health hook must not kill the listener
            logger.exception("directive bus: on_down hook failed")

    def _subscribe(self) -> "redis.client.PubSub | None":
        pubsub = self._redis.pubsub()
        try:
            pubsub.subscribe(self.channel)
            deadline = time.monotonic() + _CONFIRM_S
            while time.monotonic() < deadline and not self._stop.is_set():
                message = pubsub.get_message(timeout=_POLL_S)
                if message is not None and message["type"] == "subscribe":
                    return pubsub
            reason = "redis did not confirm the subscription"
        except (redis.RedisError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        pubsub.close()
        if not self._stop.is_set():
            self._down(reason)
        return None

    def _run(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            if pubsub is None:
                pubsub = self._subscribe()
                if pubsub is None:
                    self._stop.wait(self._reconnect_pause_s)
                    continue
                if self.last_error is not None:
                    self.reconnects += 1
                logger.info("directive bus: subscribed to %s at %s", self.channel, self.shown_url)
                self._connected.set()
                try:
                    self._on_up()
                except Exception:
                    logger.exception("directive bus: on_up hook failed")
            try:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL_S)
            except (redis.RedisError, OSError) as exc:
                pubsub.close()
                pubsub = None
                self._down(f"{type(exc).__name__}: {exc}")
                self._stop.wait(self._reconnect_pause_s)
                continue
            if message is not None and message.get("type") == "message":
                self._handle(message["data"])
        if pubsub is not None:
            pubsub.close()

    def _handle(self, data: bytes | str) -> None:
        try:
            directive, published_at = parse_directive_message(data)
        except (ValueError, ValidationError) as exc:
            self.malformed += 1
            preview = data[:200] if isinstance(data, str) else data[:200].decode(errors="replace")
            logger.warning("directive bus: skipped malformed message on %s (%s): %r", self.channel,
                           str(exc).splitlines()[0], preview)
            return
        self.received += 1
        try:
            self._on_directive(directive, published_at)
        except Exception:  # one bad directive must not stop the subscription
            logger.exception("directive bus: applying directive %s failed", directive.directive_id)
