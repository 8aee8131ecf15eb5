"""Master directives reaching the gateway, and the book that says which one is live."""

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from contracts.decisions import MasterDirective
from gateway.domain.market_time import as_utc
from gateway.domain.overlay import directive_is_live

logger = logging.getLogger(__name__)


class DirectiveSource(Protocol):
    """Anything that calls back with each directive published (in-process bus, Redis channel...)."""

    def subscribe(self, callback: Callable[[MasterDirective], None]) -> None: ...


class InProcessDirectiveSource:
    """The embedded directive bus: `publish` calls every subscriber synchronously."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[MasterDirective], None]] = []

    def subscribe(self, callback: Callable[[MasterDirective], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def publish(self, directive: MasterDirective) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(directive)


class DirectiveBook:
    """Thread-safe record of recent directives; `current(at)` picks the one in force at `at`.

    A few recent directives are kept, not just the latest, so that a replayed decision at bar t
    gets the directive issued at or before t even when a later one has already arrived.
    """

    def __init__(self, max_ttl_seconds: float, *, history: int = 64) -> None:
        self._max_ttl = max_ttl_seconds
        self._lock = threading.Lock()
        self._recent: deque[MasterDirective] = deque(maxlen=history)

    def holds(self, directive: MasterDirective) -> bool:
        """The very same directive is already recorded (a publisher re-sending after a restart, or a bus
        delivering twice): it must not be applied, nor audited, twice."""
        with self._lock:
            return directive in self._recent

    def add(self, directive: MasterDirective) -> None:
        with self._lock:
            if directive not in self._recent:
                self._recent.append(directive)

    def latest(self) -> MasterDirective | None:
        with self._lock:
            return max(self._recent, key=lambda d: as_utc(d.issued_at)) if self._recent else None

    def current(self, at: datetime) -> MasterDirective | None:
        """Newest directive issued at or before `at` and within its TTL (market time), else None."""
        with self._lock:
            candidates = [d for d in self._recent if as_utc(d.issued_at) <= as_utc(at)]
        if not candidates:
            return None
        newest = max(candidates, key=lambda d: as_utc(d.issued_at))
        return newest if directive_is_live(newest, at, self._max_ttl) else None
