"""The gateway's clock, injected everywhere time is read: wall time for audit rows and market hours,
monotonic time for throttles, waits and latencies, and sleep for polling."""

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (throttles, timeouts, latencies)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class ManualClock:
    """A clock that moves only when told to (tests, deterministic replays); sleeping advances it."""

    current: datetime = field(default_factory=lambda: datetime(2024, 1, 2, 15, 0, tzinfo=timezone.utc))
    ticks: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def now(self) -> datetime:
        with self._lock:
            return self.current

    def monotonic(self) -> float:
        with self._lock:
            return self.ticks

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.current += timedelta(seconds=seconds)
            self.ticks += seconds
