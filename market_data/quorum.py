"""`QuorumBarSource`: several redundant bar providers vote per symbol; one provider is validated only.

How it works
------------
- Alignment (`batches`): one thread per provider reads its `batches(after, stop)` into a bounded queue. The
  next bar T is the earliest timestamp any provider has delivered; it is emitted once every provider that has
  not ended has delivered T or something later. A provider whose stream already yielded a later timestamp
  skipped T and contributes nothing for T. A live provider (`live` attribute true, the default for sources
  that do not say) that has delivered nothing yet is waited for at most `grace_seconds` of wall time after T
  was first seen; replay providers (`live = False`) are always waited for, so a replay merge is deterministic.
  A batch arriving for a bar already emitted is dropped (late).
- Vote (`FeedArbiter.decide`): each provider's rows are validated per symbol (market_data.feed_checks). With
  two or more providers the valid fresh bars of the non-quarantined providers vote: the consensus is the
  median close (with an even count, the lower middle one: the consensus is always a provider's real bar);
  providers within `tolerance` (relative) of it agree; `quorum` agreeing providers (default: a majority of
  the configured providers) accept the symbol's bar, which is the median provider's row. Fewer: NO_QUORUM
  (or, when every voting-eligible provider failed the same check, that check's code).
- Quarantine: a provider whose valid fresh bar disagrees on a symbol where the others reach quorum is
  QUARANTINED (the whole provider; alert FEED_PROVIDER_QUARANTINED:<name> with the symbols and deviations).
  It keeps being compared with the quorum and is released (alert cleared) after `release_after_bars` bars in a
  row on which it was compared on at least one symbol and agreed on all; any other bar restarts the count.
- Staleness of a provider: no fresh bar (no row stamped T, or all beyond the live clock lag) for
  `stale_after_intervals` bars in a row -> STALE and alert FEED_PROVIDER_STALE:<name>, cleared by a fresh bar.
- Output: a `BarBatch` per T with `flags` (symbol -> reason code) and `feed` (FeedStatus). A flagged symbol
  holds a carried-forward bar (last accepted close, flat, volume 0, stamped T), or is absent if it never had
  an accepted bar. One provider: validation only (no vote, no quarantine), an unflagged bar is passed through.
- `history()`: from the first provider, in the order given, that answers with a non-empty frame (errors are
  logged and the next one is asked); its last valid closes seed the carry-forward. Not voted on.
- Stop: `stop` ends the merge within ~`poll_s`; the provider threads get their own stop event, set when the
  merged iterator ends, is closed or `stop` is set, and are joined.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from contracts.bars import BAR_COLUMNS
from contracts.config import FeedConfig
from market_data.bar_source import BarBatch, BarSource
from market_data.errors import MarketDataError
from market_data.feed_checks import (
    BAR_MISSING,
    FEED_STALE,
    NO_QUORUM,
    carried_forward,
    check_bars,
    inconsistent_mask,
    utc,
)
from market_data.feed_status import (
    ACTIVE,
    ALERT_PROVIDER_QUARANTINED,
    ALERT_PROVIDER_STALE,
    QUARANTINED,
    STALE,
    FeedStatus,
    provider_alert,
)

logger = logging.getLogger(__name__)

_NOT_FRESH = (BAR_MISSING, FEED_STALE)


class FeedArbiter:
    """The per-bar decision of the feed guard, without threads or clocks (see the module doc). Stateful:
    last accepted closes, provider staleness, quarantine."""

    def __init__(self, names: Sequence[str], *, config: FeedConfig | None = None, bar_seconds: float = 86400.0,
                 symbols: Iterable[str] = (), live: Mapping[str, bool] | None = None) -> None:
        config = config or FeedConfig()
        self.names: tuple[str, ...] = tuple(names)
        if not self.names:
            raise MarketDataError("a feed guard needs at least one provider")
        if len(set(self.names)) != len(self.names):
            raise MarketDataError(f"provider names must be unique (they name alerts), got {list(self.names)}")
        n = len(self.names)
        self.quorum: int | None = None if n == 1 else (config.quorum or n // 2 + 1)
        if self.quorum is not None and self.quorum > n:
            raise MarketDataError(f"feed quorum {self.quorum} exceeds the {n} configured providers {list(self.names)}")
        self.config = config
        self.max_clock_lag_s = config.max_clock_lag_seconds or config.stale_after_intervals * bar_seconds
        self._live = {p: bool((live or {}).get(p, False)) for p in self.names}
        self._universe: dict[str, None] = dict.fromkeys(str(s) for s in symbols)
        self._last_close: dict[str, tuple[pd.Timestamp, float]] = {}
        self._since_fresh = dict.fromkeys(self.names, 0)
        self._last_fresh: dict[str, pd.Timestamp | None] = dict.fromkeys(self.names)
        self._stale: set[str] = set()
        self._quarantined: set[str] = set()
        self._agree_streak = dict.fromkeys(self.names, 0)

    @property
    def universe(self) -> tuple[str, ...]:
        return tuple(sorted(self._universe))

    def states(self) -> dict[str, str]:
        return {p: QUARANTINED if p in self._quarantined else STALE if p in self._stale else ACTIVE
                for p in self.names}

    def remember(self, bars: pd.DataFrame) -> None:
        """Seed the universe and the carry-forward closes from bars known good enough (warm-up history)."""
        if bars.empty:
            return
        self._universe.update(dict.fromkeys(str(s) for s in bars["symbol"].unique()))
        good = bars.loc[~inconsistent_mask(bars)]
        for symbol, ts, close in zip(good["symbol"].tolist(), pd.to_datetime(good["timestamp"], utc=True).tolist(),
                                     good["close"].tolist()):
            known = self._last_close.get(str(symbol))
            if known is None or ts >= known[0]:
                self._last_close[str(symbol)] = (ts, float(close))

    # ------------------------------------------------------------------ one bar

    def decide(self, timestamp: pd.Timestamp, batches: Mapping[str, pd.DataFrame | None], *,
               now: pd.Timestamp | None = None) -> BarBatch:
        """The accepted bars of `timestamp` from the providers' rows (a provider absent or None: nothing at T)."""
        stamp = utc(timestamp)
        unknown = set(batches) - set(self.names)
        if unknown:
            raise MarketDataError(f"bars from unknown providers {sorted(unknown)}; configured {list(self.names)}")
        for rows in batches.values():
            if rows is not None and not rows.empty:
                self._universe.update(dict.fromkeys(str(s) for s in rows["symbol"].unique()))
        universe = self.universe
        codes = {p: check_bars(batches.get(p), stamp, universe, now=now if self._live[p] else None,
                               max_clock_lag_s=self.max_clock_lag_s) for p in self.names}
        alerts: list[tuple[str, str | None]] = []
        self._track_freshness(stamp, codes, universe, alerts)
        rows_at = {p: _row_positions(batches.get(p)) for p in self.names}
        closes = {p: _closes(batches.get(p)) for p in self.names}

        accepted: list[tuple[str, int]] = []  # (provider, row position) per accepted symbol
        flags: dict[str, str] = {}
        deviations: dict[str, list[str]] = {p: [] for p in self.names}  # disagreements where quorum held
        compared = dict.fromkeys(self.names, 0)
        eligible = [p for p in self.names if p not in self._quarantined]  # quarantined providers never vote
        for symbol in universe:
            if self.quorum is None:
                only = self.names[0]
                code = codes[only].get(symbol)
                if code is None:
                    accepted.append((only, rows_at[only][symbol]))
                else:
                    flags[symbol] = code
                continue
            winner, reason = self._vote(symbol, eligible, codes, closes, deviations, compared)
            if winner is not None:
                accepted.append((winner, rows_at[winner][symbol]))
            else:
                flags[symbol] = reason
        self._track_quarantine(deviations, compared, alerts)

        bars = self._assemble(stamp, batches, accepted, flags)
        for symbol, close in zip(bars["symbol"].tolist(), bars["close"].tolist()):
            if symbol not in flags:
                self._last_close[str(symbol)] = (stamp, float(close))
        missing_by_symbol = {s: sum(1 for p in self.names if codes[p].get(s) == BAR_MISSING) for s in universe}
        status = FeedStatus(
            providers=self.states(), alerts=tuple(alerts),
            missing={s: k for s, k in missing_by_symbol.items() if k},
            provider_missing={p: sum(1 for c in codes[p].values() if c == BAR_MISSING) for p in self.names},
            quorum=self.quorum)
        return BarBatch(timestamp=stamp, bars=bars, flags=flags, feed=status)

    def _vote(self, symbol: str, eligible: Sequence[str], codes: Mapping[str, Mapping[str, str]],
              closes: Mapping[str, Mapping[str, float]], deviations: dict[str, list[str]],
              compared: dict[str, int]) -> tuple[str | None, str]:
        """(the provider whose row is accepted for `symbol`, "") or (None, the symbol's reason code)."""
        assert self.quorum is not None
        voters = [p for p in eligible if symbol not in codes[p]]
        if len(voters) < self.quorum:
            reasons = {codes[p][symbol] for p in eligible if symbol in codes[p]}
            return None, reasons.pop() if not voters and len(reasons) == 1 else NO_QUORUM
        order = sorted(voters, key=lambda p: closes[p][symbol])  # stable: ties keep the configured order
        median_provider = order[(len(order) - 1) // 2]
        consensus = closes[median_provider][symbol]
        tolerance = self.config.tolerance * consensus

        def agrees(p: str) -> bool:
            return abs(closes[p][symbol] - consensus) <= tolerance

        if sum(1 for p in voters if agrees(p)) < self.quorum:
            return None, NO_QUORUM
        for p in self.names:
            if symbol in codes[p]:
                continue  # no valid fresh bar from p: nothing to compare
            compared[p] += 1
            if not agrees(p):
                deviations[p].append(f"{symbol} {closes[p][symbol]:.6g} vs {consensus:.6g} "
                                     f"({closes[p][symbol] / consensus - 1:+.2%})")
        return median_provider, ""

    def _track_freshness(self, stamp: pd.Timestamp, codes: Mapping[str, Mapping[str, str]], universe: Sequence[str],
                         alerts: list[tuple[str, str | None]]) -> None:
        for p in self.names:
            fresh = any(codes[p].get(s) not in _NOT_FRESH for s in universe)
            name = provider_alert(ALERT_PROVIDER_STALE, p)
            if fresh:
                self._since_fresh[p], self._last_fresh[p] = 0, stamp
                if p in self._stale:
                    self._stale.discard(p)
                    alerts.append((name, None))
                    logger.info("feed: provider %s delivers fresh bars again at %s", p, stamp)
                continue
            self._since_fresh[p] += 1
            if p not in self._stale and self._since_fresh[p] >= self.config.stale_after_intervals:
                self._stale.add(p)
                last = self._last_fresh[p]
                detail = (f"no fresh bar from {p} for {self._since_fresh[p]} bars (last fresh bar "
                          f"{'none this run' if last is None else last.isoformat()})")
                alerts.append((name, detail))
                logger.warning("feed: %s", detail)

    def _track_quarantine(self, deviations: Mapping[str, list[str]], compared: Mapping[str, int],
                          alerts: list[tuple[str, str | None]]) -> None:
        for p in self.names:
            name = provider_alert(ALERT_PROVIDER_QUARANTINED, p)
            if p not in self._quarantined:
                if deviations[p]:
                    self._quarantined.add(p)
                    self._agree_streak[p] = 0
                    shown = "; ".join(deviations[p][:5]) + (" ..." if len(deviations[p]) > 5 else "")
                    detail = (f"{p} disagrees with the quorum on {len(deviations[p])} symbols beyond "
                              f"{self.config.tolerance:.2%}: {shown}")
                    alerts.append((name, detail))
                    logger.warning("feed: provider quarantined: %s", detail)
                continue
            agreed = compared[p] > 0 and not deviations[p]
            self._agree_streak[p] = self._agree_streak[p] + 1 if agreed else 0
            if self._agree_streak[p] >= self.config.release_after_bars:
                self._quarantined.discard(p)
                self._agree_streak[p] = 0
                alerts.append((name, None))
                logger.info("feed: provider %s released from quarantine after %d agreeing bars", p,
                            self.config.release_after_bars)

    def _assemble(self, stamp: pd.Timestamp, batches: Mapping[str, pd.DataFrame | None],
                  accepted: Sequence[tuple[str, int]], flags: Mapping[str, str]) -> pd.DataFrame:
        if self.quorum is None and not flags:
            rows = batches.get(self.names[0])
            if rows is not None and len(rows) == len(accepted):
                return rows  # one clean provider: its batch as it came
        by_provider: dict[str, list[int]] = {}
        for p, i in accepted:
            by_provider.setdefault(p, []).append(i)
        parts = [batches[p].iloc[sorted(idx)] for p, idx in by_provider.items()]  # type: ignore[index]
        carried = [carried_forward(s, self._last_close[s][1], stamp) for s in flags if s in self._last_close]
        template = next((b for b in batches.values() if b is not None and not b.empty), None)
        if carried:
            parts.append(pd.DataFrame(carried, columns=list(BAR_COLUMNS)))
        if not parts:
            return pd.DataFrame(columns=list(BAR_COLUMNS)) if template is None else template.iloc[0:0].copy()
        out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        if template is not None and carried:
            # Carried rows must not change the dtypes of the feed's columns (the feature service reads them).
            for column in BAR_COLUMNS:
                if out[column].dtype != template[column].dtype:
                    out[column] = out[column].astype(template[column].dtype)
        return out.sort_values("symbol", kind="stable").reset_index(drop=True)


def _row_positions(bars: pd.DataFrame | None) -> dict[str, int]:
    if bars is None:
        return {}
    positions: dict[str, int] = {}
    for i, symbol in enumerate(bars["symbol"].tolist()):
        positions.setdefault(str(symbol), i)  # the first row of a symbol is the one validated
    return positions


def _closes(bars: pd.DataFrame | None) -> dict[str, float]:
    if bars is None:
        return {}
    closes: dict[str, float] = {}
    for symbol, close in zip(bars["symbol"].tolist(), bars["close"].tolist()):
        closes.setdefault(str(symbol), float(close))
    return closes


# ---------------------------------------------------------------------- alignment of the providers' streams

_END = object()


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _Feeder:
    """One provider's stream in its own thread, into a bounded queue (the provider blocks when the merge lags)."""

    def __init__(self, provider: BarSource, after: pd.Timestamp | None, stop: threading.Event,
                 wake: threading.Event, *, queue_size: int, poll_s: float) -> None:
        self.provider = provider
        self.name = provider.name
        self.live = bool(getattr(provider, "live", True))
        self.queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._after, self._stop, self._wake, self._poll_s = after, stop, wake, poll_s
        self.thread = threading.Thread(target=self._run, name=f"feed-{self.name}", daemon=True)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=self._poll_s)
            except queue.Full:
                continue
            self._wake.set()
            return True
        return False

    def _run(self) -> None:
        try:
            for batch in self.provider.batches(self._after, self._stop):
                if not self._put(batch):
                    return
            self._put(_END)
        except Exception as exc:  # noqa: BLE001 - handed to the merge, which decides whether it is fatal
            self._put(_Failed(exc))


class QuorumBarSource:
    """A `BarSource` over redundant providers (see the module doc); `QuorumBarSource([source])` is the
    single-provider guard (validation and carry-forward only).

    `symbols`: the universe expected at every bar (default: the union of the providers' `symbols` attributes,
    grown by every symbol seen in history or bars). `clock`: the wall clock for live providers' lag check.
    """

    def __init__(self, providers: Sequence[BarSource], *, config: FeedConfig | None = None,
                 bar_seconds: float = 86400.0, symbols: Iterable[str] | None = None, name: str | None = None,
                 clock: Callable[[], pd.Timestamp] | None = None, poll_s: float = 0.05,
                 queue_size: int = 16) -> None:
        self.providers: tuple[BarSource, ...] = tuple(providers)
        if not self.providers:
            raise MarketDataError("QuorumBarSource needs at least one provider")
        names = [p.name for p in self.providers]
        self.config = config or FeedConfig()
        if symbols is None:
            symbols = [s for p in self.providers for s in getattr(p, "symbols", ())]
        self.live = any(bool(getattr(p, "live", True)) for p in self.providers)
        self.arbiter = FeedArbiter(names, config=self.config, bar_seconds=bar_seconds, symbols=symbols,
                                   live={p.name: bool(getattr(p, "live", True)) for p in self.providers})
        self.name = name or (names[0] if len(names) == 1 else "+".join(names))
        self._clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
        self._poll_s = poll_s
        self._queue_size = queue_size
        self._runs: list[tuple[threading.Event, list[_Feeder]]] = []

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.arbiter.universe

    def history(self, before: pd.Timestamp | None, bars: int) -> pd.DataFrame:
        first_error: Exception | None = None
        empty: pd.DataFrame | None = None
        for provider in self.providers:
            try:
                frame = provider.history(before, bars)
            except Exception as exc:  # noqa: BLE001 - the next provider may answer; re-raised if none does
                logger.warning("feed: history from %s failed (%s); asking the next provider", provider.name, exc)
                first_error = first_error or exc
                continue
            if not frame.empty:
                self.arbiter.remember(frame)
                return frame
            empty = frame if empty is None else empty
        if empty is not None:
            return empty
        assert first_error is not None
        raise first_error

    def batches(self, after: pd.Timestamp | None, stop: threading.Event) -> Iterator[BarBatch]:
        inner, wake = threading.Event(), threading.Event()
        feeders = [_Feeder(p, after, inner, wake, queue_size=self._queue_size, poll_s=self._poll_s)
                   for p in self.providers]
        run = (inner, feeders)
        self._runs.append(run)
        for feeder in feeders:
            feeder.thread.start()
        try:
            yield from self._merge(feeders, None if after is None else utc(after), stop, wake)
        finally:
            self._end(run)

    def _merge(self, feeders: Sequence[_Feeder], after: pd.Timestamp | None, stop: threading.Event,
               wake: threading.Event) -> Iterator[BarBatch]:
        heads: dict[str, BarBatch | None] = {f.name: None for f in feeders}
        ended: dict[str, bool] = {f.name: False for f in feeders}
        failures: dict[str, BaseException] = {}
        first_seen: dict[pd.Timestamp, float] = {}
        last = after
        grace = self.config.grace_seconds
        while not stop.is_set():
            wake.clear()  # before reading the queues: a put after this wakes the wait below
            for f in feeders:
                self._pull(f, heads, ended, failures, last)
            if len(failures) == len(feeders) and not any(heads.values()):
                raise next(iter(failures.values()))  # every provider failed: nothing left to vote
            pending = [h.timestamp for h in heads.values() if h is not None]
            if not pending:
                if all(ended.values()):
                    return
                wake.wait(self._poll_s)
                continue
            ts = min(pending)
            seen = first_seen.setdefault(ts, time.monotonic())
            waiting = [f for f in feeders if heads[f.name] is None and not ended[f.name]]
            if waiting:
                left = grace - (time.monotonic() - seen)
                if any(not f.live for f in waiting) or left > 0:
                    wake.wait(self._poll_s if any(not f.live for f in waiting) else min(self._poll_s, left))
                    continue
                logger.warning("feed: bar %s emitted without %s (nothing after %.1fs grace)", ts.isoformat(),
                               [f.name for f in waiting], grace)
            rows: dict[str, pd.DataFrame | None] = {}
            for name, head in heads.items():
                if head is not None and head.timestamp == ts:
                    rows[name], heads[name] = head.bars, None
            for stamp in [s for s in first_seen if s <= ts]:
                first_seen.pop(stamp)
            last = ts
            yield self.arbiter.decide(ts, rows, now=self._clock() if self.live else None)

    def _pull(self, feeder: _Feeder, heads: dict[str, BarBatch | None], ended: dict[str, bool],
              failures: dict[str, BaseException], last: pd.Timestamp | None) -> None:
        while heads[feeder.name] is None and not ended[feeder.name]:
            try:
                item = feeder.queue.get_nowait()
            except queue.Empty:
                return
            if item is _END:
                ended[feeder.name] = True
            elif isinstance(item, _Failed):
                ended[feeder.name] = True
                failures[feeder.name] = item.error
                logger.error("feed: provider %s failed and is dropped: %s", feeder.name, item.error,
                             exc_info=item.error)
            else:
                assert isinstance(item, BarBatch)
                batch = BarBatch(timestamp=utc(item.timestamp), bars=item.bars)
                if last is not None and batch.timestamp <= last:
                    logger.info("feed: %s delivered bar %s after it was emitted; dropped", feeder.name,
                                batch.timestamp.isoformat())
                    continue
                heads[feeder.name] = batch

    def _end(self, run: tuple[threading.Event, list[_Feeder]], timeout_s: float = 5.0) -> None:
        inner, feeders = run
        inner.set()
        deadline = time.monotonic() + timeout_s
        for f in feeders:
            if f.thread.ident is not None:
                f.thread.join(max(0.0, deadline - time.monotonic()))
            if f.thread.is_alive():
                logger.warning("feed: provider thread %s still running after %.0fs", f.thread.name, timeout_s)
        with contextlib.suppress(ValueError):
            self._runs.remove(run)

    def threads(self) -> list[threading.Thread]:
        """The provider threads of merges in progress (tests, diagnostics)."""
        return [f.thread for _, feeders in self._runs for f in feeders]

    def close(self) -> None:
        for run in list(self._runs):
            self._end(run)
        for provider in self.providers:
            try:
                provider.close()
            except Exception as exc:  # noqa: BLE001 - close the others anyway
                logger.warning("feed: closing %s failed: %s", provider.name, exc)


def validated(source: BarSource, *, config: FeedConfig | None = None, bar_seconds: float = 86400.0) -> QuorumBarSource:
    """The single-provider guard: `source`'s bars validated per symbol, flagged symbols carried forward.
    Keeps the source's name (the trading cursor and logs name the source, not the guard)."""
    return QuorumBarSource([source], config=config, bar_seconds=bar_seconds)
