"""Replay market time: iterate bar timestamps as fast as possible, in real time, or N times faster."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

import pandas as pd

from market_data.errors import MarketDataError

logger = logging.getLogger(__name__)


def _utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(ts)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


class ReplayClock:
    """Yields each distinct timestamp once, in increasing order.

    Pacing: `speed=None` never sleeps; otherwise consecutive bars are `bar_seconds / speed` wall seconds
    apart (a daily bar is one bar of market time whatever the weekend gap). Deadlines are fixed from the
    start, so time the consumer spends between bars is absorbed instead of accumulating as drift.
    """

    def __init__(
        self,
        timestamps: Sequence[pd.Timestamp],
        *,
        speed: float | None = None,
        bar_seconds: float = 86400,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed is not None and speed <= 0:
            raise MarketDataError(f"replay speed must be > 0 (or None for as fast as possible), got {speed}")
        if bar_seconds <= 0:
            raise MarketDataError(f"bar_seconds must be > 0, got {bar_seconds}")
        stamps = sorted({_utc(t) for t in timestamps})
        if not stamps:
            raise MarketDataError("replay clock needs at least one timestamp")
        self._timestamps: tuple[pd.Timestamp, ...] = tuple(stamps)
        self.speed = speed
        self.bar_seconds = float(bar_seconds)
        self._sleep = sleep
        self._monotonic = monotonic
        self._now: pd.Timestamp | None = None
        self._position = -1

    @property
    def interval_seconds(self) -> float:
        """Wall seconds between two bars; 0 when replaying as fast as possible."""
        return 0.0 if self.speed is None else self.bar_seconds / self.speed

    @property
    def now(self) -> pd.Timestamp | None:
        """Market time of the bar last yielded; None before the first."""
        return self._now

    @property
    def position(self) -> int:
        """Index of the bar last yielded (-1 before the first)."""
        return self._position

    @property
    def timestamps(self) -> tuple[pd.Timestamp, ...]:
        return self._timestamps

    def __len__(self) -> int:
        return len(self._timestamps)

    def __iter__(self) -> Iterator[pd.Timestamp]:
        started = self._monotonic()
        interval = self.interval_seconds
        for i, stamp in enumerate(self._timestamps):
            if interval > 0 and i > 0:
                wait = started + i * interval - self._monotonic()
                if wait > 0:
                    self._sleep(wait)
            self._position = i
            self._now = stamp
            yield stamp


def bars_at(bars: pd.DataFrame, ts: pd.Timestamp | str) -> pd.DataFrame:
    """Rows of `bars` stamped exactly `ts` (naive means UTC), with a fresh RangeIndex."""
    mask = (bars["timestamp"] == _utc(ts)).to_numpy()
    return bars.loc[mask].reset_index(drop=True)
