"""Bar sources for the trading service: the same loop trades a replay and a live feed.

A source answers two questions: which bars came before (warm-up history for the feature
service) and which bars come next (one `BarBatch` per timestamp, in order, paced by the source's
clock). `ReplayBarSource` serves a frame (synthetic market or files) on a `ReplayClock`;
`market_data.alpaca_source.AlpacaBarSource` backfills through alpaca-py's historical client and
takes live bars from its stream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pandas as pd

from contracts.bars import BAR_COLUMNS
from market_data.errors import MarketDataError
from market_data.feed_status import FeedStatus
from market_data.replay import ReplayClock


@dataclass(frozen=True)
class BarBatch:
    """The bars of one timestamp (one row per symbol, BAR_COLUMNS), market time UTC.

    Set by the feed guard (`market_data.quorum.QuorumBarSource`, also around a single source); a plain source
    leaves both at their defaults:
    `flags`: symbol -> reason code (`market_data.feed_checks`: BAR_MISSING, FEED_STALE, BAR_INCONSISTENT,
        NO_QUORUM) for every symbol whose bar was not accepted. Such a symbol's row in `bars` is a
        carried-forward bar (last accepted close as open=high=low=close, volume 0, stamped `timestamp`), or absent
        if it never had an accepted bar. The trading service takes no new risk on a flagged symbol this bar.
    `feed`: provider states, alert transitions and missing-bar counts of this bar (None: no feed guard).
    """

    timestamp: pd.Timestamp
    bars: pd.DataFrame
    flags: Mapping[str, str] = field(default_factory=dict)
    feed: FeedStatus | None = None


@runtime_checkable
class BarSource(Protocol):
    name: str

    def history(self, before: pd.Timestamp | None, bars: int) -> pd.DataFrame:
        """Up to `bars` timestamps of bars strictly before `before` (None: before the first bar `batches` yields)."""

    def batches(self, after: pd.Timestamp | None, stop: threading.Event) -> Iterator[BarBatch]:
        """Bars strictly after `after`, one batch per timestamp, in order; returns when the source ends or `stop` is set."""

    def close(self) -> None: ...


class ReplayBarSource:
    """A frame of bars replayed from `start` on: bars before `start` are history.

    `live = False`: its timestamps are market time, not the wall clock (a feed guard never applies a
    wall-clock lag check or a grace period to it).

    `bars_per_second` = pace (None: as fast as possible); `realtime=True` = one bar per `bar_seconds`
    of wall time, as live. A restart resumes with `after` = the last bar decided; pacing restarts there.
    """

    def __init__(self, bars: pd.DataFrame, *, start: pd.Timestamp, bars_per_second: float | None = None,
                 realtime: bool = False, bar_seconds: float = 86400.0, name: str = "replay") -> None:
        if bars_per_second is not None and bars_per_second <= 0:
            raise MarketDataError(f"{name}: bars_per_second must be > 0, got {bars_per_second}")
        missing = [c for c in BAR_COLUMNS if c not in bars.columns]
        if missing:
            raise MarketDataError(f"{name}: bars lack columns {missing}")
        self.name = name
        self._bars = bars.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)
        self._start = pd.Timestamp(start)
        # ReplayClock's speed is market seconds per wall second.
        self._speed = 1.0 if realtime else (None if bars_per_second is None else bars_per_second * bar_seconds)
        self._bar_seconds = bar_seconds
        self._stamps = pd.DatetimeIndex(sorted(self._bars["timestamp"].unique()))

    live = False

    @property
    def start(self) -> pd.Timestamp:
        return self._start

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every symbol of the frame, sorted (the universe a feed guard expects at each bar)."""
        return tuple(sorted(str(s) for s in self._bars["symbol"].unique()))

    @property
    def timestamps(self) -> pd.DatetimeIndex:
        """Every bar timestamp of the frame, history included, in order."""
        return self._stamps

    @property
    def frame(self) -> pd.DataFrame:
        """The whole frame (sorted by timestamp, symbol); callers must not modify it."""
        return self._bars

    def remaining(self, after: pd.Timestamp | None) -> int:
        return len(self._upcoming(after))

    def _upcoming(self, after: pd.Timestamp | None) -> pd.DatetimeIndex:
        stamps = self._stamps[self._stamps >= self._start]
        return stamps if after is None else stamps[stamps > pd.Timestamp(after)]

    def history(self, before: pd.Timestamp | None, bars: int) -> pd.DataFrame:
        cut = self._start if before is None else pd.Timestamp(before)
        stamps = self._stamps[self._stamps < cut][-bars:] if bars > 0 else self._stamps[:0]
        return self._bars[self._bars["timestamp"].isin(stamps)].reset_index(drop=True)

    def batches(self, after: pd.Timestamp | None, stop: threading.Event) -> Iterator[BarBatch]:
        upcoming = self._upcoming(after)
        if len(upcoming) == 0:
            return
        # Paced with stop-aware waits, so SIGTERM never waits out a slow replay interval.
        clock = ReplayClock(list(upcoming), speed=self._speed, bar_seconds=self._bar_seconds,
                            sleep=lambda s: stop.wait(s))
        column = self._bars["timestamp"]
        for ts in clock:
            if stop.is_set():
                return
            # The frame is sorted by timestamp: a timestamp's rows are one slice (what bars_at selects, without
            # comparing every row of the frame at every bar).
            lo, hi = column.searchsorted(ts, side="left"), column.searchsorted(ts, side="right")
            yield BarBatch(timestamp=ts, bars=self._bars.iloc[lo:hi].reset_index(drop=True))

    def close(self) -> None:
        return None
