"""Faulty copies of a replay feed: providers for quorum tests and the `synthetic:feed-fault` replay preset.

A `FaultyProvider` replays a bars frame under its own name with faults scheduled by bar index after the
start (0 = the first bar `batches` yields from `start`; a resumed replay keeps the same indices):
- `Stale(from_bar, to_bar)`: at each of those bars the provider repeats its last good bar (the bar before
  `from_bar`) with that bar's OLD timestamp: it lags. `Stale(from_bar, to_bar, symbols=(...))`: only those
  symbols' rows lag (a stuck symbol in an otherwise live feed).
- `BadPrices(from_bar, to_bar, factor)`: open/high/low/close scaled by `factor` (OHLC order kept, so the rows
  pass validation: only the vote can catch them).
- `Drop(symbols, from_bar, to_bar)`: those symbols' rows are missing.
`to_bar` is inclusive; None = until the end. History (bars before the start) is served clean.
Faults are deterministic: no randomness.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from market_data.bar_source import BarBatch, BarSource, ReplayBarSource
from market_data.errors import MarketDataError

FEED_FAULT_PRESET = "synthetic:feed-fault"  # `marlops trade --source synthetic:feed-fault`
FEED_FAULT_BASE = "synthetic:planted-alpha"  # the market the three providers copy
FEED_FAULT_PROVIDERS: tuple[str, ...] = ("sip", "iex", "mirror")
# Defaults of feed_fault_providers: "iex" lags on bars 5..9 after the start, then prints prices 6% high
# from bar 12 on (never recovers: it stays quarantined; pass an end to watch a release).
DEFAULT_STALE: tuple[int, int] = (5, 9)
DEFAULT_BAD: tuple[int, int | None] = (12, None)
DEFAULT_BAD_FACTOR = 1.06


class _Window:
    """Bars `from_bar`..`to_bar` after the start (inclusive; to_bar None = until the end)."""

    from_bar: int
    to_bar: int | None

    def __post_init__(self) -> None:
        if self.from_bar < 0 or (self.to_bar is not None and self.to_bar < self.from_bar):
            raise MarketDataError(f"{type(self).__name__}: bars {self.from_bar}..{self.to_bar} is not a window "
                                  f"(from_bar >= 0, to_bar >= from_bar or None)")

    def covers(self, index: int) -> bool:
        return index >= self.from_bar and (self.to_bar is None or index <= self.to_bar)


@dataclass(frozen=True)
class Stale(_Window):
    from_bar: int
    to_bar: int | None
    symbols: tuple[str, ...] = ()  # only these symbols' rows lag (empty: the whole provider)

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", tuple(self.symbols))
        super().__post_init__()


@dataclass(frozen=True)
class BadPrices(_Window):
    from_bar: int
    to_bar: int | None
    factor: float = DEFAULT_BAD_FACTOR

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.factor > 0 and np.isfinite(self.factor)):
            raise MarketDataError(f"BadPrices: factor must be a finite number > 0, got {self.factor}")


@dataclass(frozen=True)
class Drop(_Window):
    symbols: tuple[str, ...]
    from_bar: int
    to_bar: int | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", tuple(self.symbols))
        super().__post_init__()


Fault = Stale | BadPrices | Drop


class FaultyProvider:
    """A `ReplayBarSource` under another name, with `faults` applied to the bars it yields."""

    live = False

    def __init__(self, base: ReplayBarSource, *, name: str, faults: Sequence[Fault] = ()) -> None:
        self.name = name
        self.base = base
        self.faults: tuple[Fault, ...] = tuple(faults)
        upcoming = base.timestamps[base.timestamps >= base.start]
        self._index = {ts: i for i, ts in enumerate(upcoming)}
        self._stamps = base.timestamps

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.base.symbols

    def history(self, before: pd.Timestamp | None, bars: int) -> pd.DataFrame:
        return self.base.history(before, bars)

    def batches(self, after: pd.Timestamp | None, stop: threading.Event) -> Iterator[BarBatch]:
        for batch in self.base.batches(after, stop):
            index = self._index[batch.timestamp]
            yield BarBatch(timestamp=batch.timestamp, bars=self._apply(index, batch))

    def _apply(self, index: int, batch: BarBatch) -> pd.DataFrame:
        bars = batch.bars
        for fault in self.faults:
            if not fault.covers(index):
                continue
            if isinstance(fault, Stale) and fault.symbols:
                old = self._last_good(fault.from_bar)
                old = old[old["symbol"].isin(fault.symbols)]
                bars = pd.concat([bars[~bars["symbol"].isin(fault.symbols)], old], ignore_index=True)
            elif isinstance(fault, Stale):
                bars = self._last_good(fault.from_bar)
            elif isinstance(fault, BadPrices):
                bars = bars.copy()
                for column in ("open", "high", "low", "close"):
                    bars[column] = bars[column] * fault.factor
            else:
                bars = bars[~bars["symbol"].isin(fault.symbols)].reset_index(drop=True)
        return bars

    def _last_good(self, from_bar: int) -> pd.DataFrame:
        """The bar before the stale window, rows and timestamp unchanged (what a stuck feed keeps sending)."""
        position = int(self._stamps.searchsorted(self.base.start)) + from_bar - 1
        if position < 0:
            return self.base.frame.iloc[0:0].reset_index(drop=True)
        frame, ts = self.base.frame, self._stamps[position]
        lo, hi = frame["timestamp"].searchsorted(ts, "left"), frame["timestamp"].searchsorted(ts, "right")
        return frame.iloc[lo:hi].reset_index(drop=True)

    def close(self) -> None:
        self.base.close()


def feed_fault_providers(bars: pd.DataFrame, *, start: pd.Timestamp,
                         stale: tuple[int, int | None] | None = DEFAULT_STALE,
                         bad: tuple[int, int | None] | None = DEFAULT_BAD, factor: float = DEFAULT_BAD_FACTOR,
                         bars_per_second: float | None = None, realtime: bool = False,
                         bar_seconds: float = 86400.0) -> list[BarSource]:
    """Three copies of `bars`: "sip" and "mirror" clean, "iex" stale on bars `stale` (default 5..9 after the
    start), then prices x`factor` on bars `bad` (default 12 on). None: no such fault."""
    faults: list[Fault] = []
    if stale is not None:
        faults.append(Stale(*stale))
    if bad is not None:
        faults.append(BadPrices(bad[0], bad[1], factor))

    def replay(name: str) -> ReplayBarSource:
        return ReplayBarSource(bars, start=start, bars_per_second=bars_per_second, realtime=realtime,
                               bar_seconds=bar_seconds, name=name)

    sip, iex, mirror = FEED_FAULT_PROVIDERS
    return [FaultyProvider(replay(sip), name=sip), FaultyProvider(replay(iex), name=iex, faults=faults),
            FaultyProvider(replay(mirror), name=mirror)]
