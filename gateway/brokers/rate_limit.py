"""Client side of Alpaca's rate limit: read X-RateLimit-* headers, wait before the broker says 429.

Alpaca allows about 200 requests/min per account and reports the budget on every response
(`X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` in unix seconds). alpaca-py
itself only reacts after a 429 (three retries, 3 s apart), which stalls a whole timestep.
"""

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimitSnapshot:
    limit: int | None
    remaining: int | None
    reset_at: float | None  # unix seconds


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        logger.warning("ignoring malformed %s header %r", name, value)
        return None


class RateLimitGovernor:
    """Keeps `reserve` requests of each window in hand; when the budget is down to it, waits for the reset."""

    def __init__(
        self,
        *,
        reserve: int = 1,
        max_wait_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._reserve = reserve
        self._max_wait = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._snapshot = RateLimitSnapshot(None, None, None)

    def observe(self, headers: Mapping[str, str]) -> None:
        limit = _int_header(headers, "X-RateLimit-Limit")
        remaining = _int_header(headers, "X-RateLimit-Remaining")
        reset = _int_header(headers, "X-RateLimit-Reset")
        if limit is None and remaining is None and reset is None:
            return
        with self._lock:
            self._snapshot = RateLimitSnapshot(limit, remaining, float(reset) if reset is not None else None)

    def snapshot(self) -> RateLimitSnapshot:
        with self._lock:
            return self._snapshot

    def wait_needed(self) -> float:
        """Seconds to wait before the next request (0 when there is budget or no information)."""
        snap = self.snapshot()
        if snap.remaining is None or snap.reset_at is None or snap.remaining > self._reserve:
            return 0.0
        return min(self._max_wait, max(0.0, snap.reset_at - self._clock()))

    def before_request(self) -> None:
        wait = self.wait_needed()
        if wait > 0:
            logger.warning("broker rate limit nearly spent (%s); waiting %.1fs for the window to reset",
                           self.snapshot(), wait)
            self._sleep(wait)
            with self._lock:
                # The window has reset; the next response will tell the real numbers.
                self._snapshot = RateLimitSnapshot(self._snapshot.limit, None, None)


@dataclass(frozen=True)
class WindowDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # unix seconds when the window resets

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


class FixedWindowRateLimit:
    """Server side (the paper exchange): `limit` requests per key per window, like Alpaca's per-minute budget."""

    def __init__(self, limit: int, *, window_s: int = 60, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._window = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (window start, requests)

    def hit(self, key: str) -> WindowDecision:
        now = self._clock()
        start = int(now // self._window) * self._window
        with self._lock:
            window, used = self._counts.get(key, (start, 0))
            if window != start:
                window, used = start, 0
            allowed = used < self.limit
            if allowed:
                used += 1
            self._counts[key] = (window, used)
        return WindowDecision(allowed, self.limit, max(0, self.limit - used), start + self._window)
