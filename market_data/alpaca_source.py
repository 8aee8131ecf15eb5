"""`AlpacaBarSource`: warm-up history and live bars through the unmodified alpaca-py clients.

How it works
------------
- `history(before, n)`: `StockHistoricalDataClient(url_override=APCA_DATA_URL)` +
  `StockBarsRequest(symbols, timeframe, start, end, adjustment, feed)`; alpaca-py follows
  `next_page_token` itself. The window is widened until it holds `n` timestamps (or gives up after
  a few tries: a young market simply has less history). With `before=None` the anchor is the
  latest bar (`/v2/stocks/bars/latest`), i.e. the feed's present.
- `batches(after, stop)`: a `StockDataStream(url_override=APCA_DATA_STREAM_URL)` runs in its own
  thread and hands bars over a queue. Bars are grouped by timestamp; a timestamp is yielded when
  every expected symbol has a bar, when a later timestamp is already complete, or when `grace_s`
  (wall time) has passed since its first bar (then with what arrived; the caller handles missing
  symbols). Yields are strictly increasing; bars at or before `after` (or already yielded) are
  dropped. Setting `stop` ends the generator within ~`poll_s` and stops the stream.
- Restart (`after` given, the last bar the trading service decided before it stopped): the stream
  is started first and its bars queue up; once the server acknowledges the subscription (or after
  `subscribe_timeout_s`, with a warning), every bar stamped after `after` up to now is fetched
  through the same REST path as `history()` (paginated by alpaca-py; bars whose close time is still
  in the future are forming and left to the stream). Those are yielded one `BarBatch` per
  timestamp in time order, a timestamp missing symbols included, and then the stream takes over,
  dropping everything at or before the last caught-up timestamp. The subscription is live before
  the REST request, so every bar lands in the REST answer, the stream, or both (deduplicated): no
  gap. With `after=None` (fresh start) there is no catch-up: live bars only. `stop` is honoured
  while waiting for the subscription and for REST (the request is left to finish in a daemon
  thread). The count of caught-up bars is logged.
- Timestamps: Alpaca's bar start -> our close time by `market_data.alpaca_bars` (1Min: +1 minute;
  1Day: the New York date at 21:00 UTC).
- Not done: bars published while the stream reconnects after a dropped connection are not
  backfilled (only a restart catches up); a stream auth failure is only logged by alpaca-py (it
  keeps retrying).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.requests import StockBarsRequest, StockLatestBarRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from contracts.bars import BAR_COLUMNS
from market_data.alpaca_bars import DAY, MINUTE, alpaca_start_to_close, close_to_alpaca_start, parse_timeframe
from market_data.bar_source import BarBatch
from market_data.errors import MarketDataError

logger = logging.getLogger(__name__)

DEFAULT_DATA_URL = "https://data.alpaca.markets"
DEFAULT_STREAM_URL = "wss://stream.data.alpaca.markets/v2/iex"
_TIMEFRAMES = {MINUTE: TimeFrame(1, TimeFrameUnit.Minute), DAY: TimeFrame(1, TimeFrameUnit.Day)}


class AlpacaCredentialsError(MarketDataError):
    """No Alpaca keys configured."""


class AlpacaDataError(MarketDataError):
    """Alpaca's market-data API refused or failed a request."""


@dataclass(frozen=True)
class AlpacaDataSettings:
    """Where and how to read Alpaca market data. The secret never appears in repr()."""

    key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    data_url: str = DEFAULT_DATA_URL
    stream_url: str = DEFAULT_STREAM_URL
    feed: str = "iex"
    timeframe: str = DAY
    adjustment: str = "all"

    def __post_init__(self) -> None:
        if not self.key_id or not self.secret_key:
            raise AlpacaCredentialsError(
                "Alpaca market data needs keys: set APCA_API_KEY_ID and APCA_API_SECRET_KEY")
        object.__setattr__(self, "timeframe", parse_timeframe(self.timeframe))
        try:
            DataFeed(self.feed), Adjustment(self.adjustment)
        except ValueError as exc:
            raise MarketDataError(f"Alpaca data settings: {exc}") from exc

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> AlpacaDataSettings:
        """APCA_API_KEY_ID, APCA_API_SECRET_KEY, APCA_DATA_URL, APCA_DATA_STREAM_URL, APCA_DATA_FEED,
        APCA_DATA_TIMEFRAME; keyword overrides win."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {
            "key_id": env.get("APCA_API_KEY_ID", ""), "secret_key": env.get("APCA_API_SECRET_KEY", ""),
            "data_url": env.get("APCA_DATA_URL", DEFAULT_DATA_URL),
            "stream_url": env.get("APCA_DATA_STREAM_URL", DEFAULT_STREAM_URL),
            "feed": env.get("APCA_DATA_FEED", "iex"), "timeframe": env.get("APCA_DATA_TIMEFRAME", DAY),
        }
        values.update(overrides)
        return cls(**values)

    def __repr__(self) -> str:
        return (f"AlpacaDataSettings(key_id=***, data_url={self.data_url!r}, stream_url={self.stream_url!r}, "
                f"feed={self.feed!r}, timeframe={self.timeframe!r}, adjustment={self.adjustment!r})")


def _bars_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(BAR_COLUMNS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("ns")
    return frame.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)


class AlpacaBarSource:
    """A `BarSource` over Alpaca (or the local server in `market_data.alpaca_server`).

    `symbols`: the whole universe to subscribe, trading symbols plus SPY and the volatility proxy.
    `grace_s`: wall seconds after a timestamp's first bar before it is yielded incomplete.
    `subscribe_timeout_s`: on a restart, how long to wait for the stream's subscription before catching up anyway.
    """

    def __init__(self, settings: AlpacaDataSettings, symbols: Sequence[str], *, grace_s: float = 3.0,
                 poll_s: float = 0.05, subscribe_timeout_s: float = 10.0, name: str = "alpaca") -> None:
        if not symbols:
            raise MarketDataError(f"{name}: no symbols to read")
        if grace_s < 0:
            raise MarketDataError(f"{name}: grace_s must be >= 0, got {grace_s}")
        self.name = name
        self.settings = settings
        self.symbols: tuple[str, ...] = tuple(dict.fromkeys(symbols))
        self.grace_s = grace_s
        self._poll_s = poll_s
        self._subscribe_timeout_s = subscribe_timeout_s
        self._timeframe = settings.timeframe
        self._client = StockHistoricalDataClient(settings.key_id, settings.secret_key, url_override=settings.data_url)
        self._streams: list[tuple[StockDataStream, threading.Thread]] = []

    # ------------------------------------------------------------ history

    def history(self, before: pd.Timestamp | None, bars: int) -> pd.DataFrame:
        if bars <= 0:
            return _bars_frame([])
        anchor = pd.Timestamp(before) if before is not None else self._present()
        if anchor is None:
            return _bars_frame([])
        step = pd.Timedelta(days=1) if self._timeframe == DAY else pd.Timedelta(minutes=1)
        # Weekends/holidays (daily) and nights (minutes) eat calendar time: widen until enough.
        lookback = step * (bars * 2 + 10)
        for _ in range(6):
            frame = self._fetch(anchor - lookback, before)
            stamps = frame["timestamp"].unique()
            if len(stamps) >= bars:
                break
            lookback *= 4
        keep = sorted(stamps)[-bars:]
        return frame[frame["timestamp"].isin(keep)].reset_index(drop=True)

    def _present(self) -> pd.Timestamp | None:
        request = StockLatestBarRequest(symbol_or_symbols=list(self.symbols), feed=DataFeed(self.settings.feed))
        latest = self._call(self._client.get_stock_latest_bar, request)
        if not latest:
            return None
        return max(alpaca_start_to_close(bar.timestamp, self._timeframe) for bar in latest.values())

    def _fetch(self, since: pd.Timestamp, before: pd.Timestamp | None) -> pd.DataFrame:
        # Alpaca filters on the bar start; convert our close-time bounds, then cut exactly on close.
        start = close_to_alpaca_start(since.tz_convert("UTC") if since.tzinfo else since.tz_localize("UTC"),
                                      self._timeframe)
        request = StockBarsRequest(
            symbol_or_symbols=list(self.symbols), timeframe=_TIMEFRAMES[self._timeframe],
            start=start.to_pydatetime(), end=None if before is None else pd.Timestamp(before).to_pydatetime(),
            adjustment=Adjustment(self.settings.adjustment), feed=DataFeed(self.settings.feed))
        barset = self._call(self._client.get_stock_bars, request)
        rows = [self._row(bar) for series in barset.data.values() for bar in series]
        frame = _bars_frame(rows)
        if before is not None:
            frame = frame[frame["timestamp"] < pd.Timestamp(before)].reset_index(drop=True)
        return frame

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request)
        except APIError as exc:
            status = getattr(exc, "status_code", None)
            raise AlpacaDataError(f"{self.name}: {self.settings.data_url} answered {status}: {_message(exc)}") from exc

    def _row(self, bar: Any) -> dict[str, Any]:
        return {"symbol": bar.symbol, "timestamp": alpaca_start_to_close(bar.timestamp, self._timeframe),
                "open": float(bar.open), "high": float(bar.high), "low": float(bar.low),
                "close": float(bar.close), "volume": float(bar.volume)}

    # ------------------------------------------------------------ live

    def batches(self, after: pd.Timestamp | None, stop: threading.Event) -> Iterator[BarBatch]:
        inbox: queue.Queue[dict[str, Any]] = queue.Queue()

        async def on_bar(bar: Any) -> None:
            inbox.put(self._row(bar))

        stream = _AckedStream(self.settings.key_id, self.settings.secret_key, feed=DataFeed(self.settings.feed),
                              url_override=self.settings.stream_url)
        stream.subscribe_bars(on_bar, *self.symbols)
        thread = threading.Thread(target=stream.run, name=f"{self.name}-stream", daemon=True)
        thread.start()
        self._streams.append((stream, thread))
        try:
            last = None if after is None else _utc(after)
            if last is not None:
                for batch in self._catch_up(last, stream, thread, stop):
                    last = batch.timestamp
                    yield batch
            yield from self._group(inbox, last, stop)
        finally:
            self._stop_stream(stream, thread)

    def _catch_up(self, after: pd.Timestamp, stream: _AckedStream, thread: threading.Thread,
                  stop: threading.Event) -> Iterator[BarBatch]:
        """Bars after `after` up to now from REST, one batch per timestamp, once the stream is subscribed."""
        deadline = time.monotonic() + self._subscribe_timeout_s
        while not stream.subscribed.is_set():
            if stop.is_set():
                return
            if not thread.is_alive() or time.monotonic() >= deadline:
                logger.warning("%s: stream not subscribed (gave up after %.1fs or its thread ended); catching up "
                               "from REST anyway: bars published before it is live may be missed", self.name,
                               self._subscribe_timeout_s)
                break
            stream.subscribed.wait(self._poll_s)
        frame = self._interruptible(lambda: self._fetch(after, None), stop)
        if frame is None:
            return
        now = pd.Timestamp.now(tz="UTC")
        frame = frame[(frame["timestamp"] > after) & (frame["timestamp"] <= now)]
        stamps = sorted(frame["timestamp"].unique())
        logger.info("%s: caught up %d bars (%d timestamps) after %s from REST", self.name, len(frame),
                    len(stamps), after.isoformat())
        for ts, rows in frame.groupby("timestamp", sort=True):
            if stop.is_set():
                return
            yield BarBatch(timestamp=pd.Timestamp(ts), bars=rows.reset_index(drop=True))

    def _interruptible(self, call: Any, stop: threading.Event) -> Any:
        """`call()` in a daemon thread; its result, or None as soon as `stop` is set (the call is abandoned)."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = call()
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread below
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"{self.name}-catch-up", daemon=True)
        worker.start()
        while worker.is_alive():
            if stop.is_set():
                return None
            worker.join(self._poll_s)
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _group(self, inbox: queue.Queue[dict[str, Any]], after: pd.Timestamp | None,
               stop: threading.Event) -> Iterator[BarBatch]:
        expected = set(self.symbols)
        last = None if after is None else pd.Timestamp(after)
        pending: dict[pd.Timestamp, dict[str, dict[str, Any]]] = {}
        first_seen: dict[pd.Timestamp, float] = {}
        while not stop.is_set():
            try:
                row = inbox.get(timeout=self._poll_s)
                ts = row["timestamp"]
                if last is None or ts > last:
                    pending.setdefault(ts, {})[row["symbol"]] = row
                    first_seen.setdefault(ts, time.monotonic())
            except queue.Empty:
                pass
            while pending:
                ts = min(pending)
                complete = lambda t: expected <= set(pending[t])  # noqa: E731
                ready = (complete(ts) or time.monotonic() - first_seen[ts] >= self.grace_s
                         or any(complete(t) for t in pending if t > ts))
                if not ready or stop.is_set():
                    break
                rows = pending.pop(ts)
                first_seen.pop(ts)
                last = ts
                yield BarBatch(timestamp=ts, bars=_bars_frame(list(rows.values())))

    def _stop_stream(self, stream: StockDataStream, thread: threading.Thread, timeout_s: float = 5.0) -> None:
        # alpaca-py's stop() only flags its consumer, which notices after a recv timeout of up to 5 s;
        # closing the socket on the stream's own loop wakes it at once, and the flag keeps it from
        # reconnecting. The loop appears only once run() started, so wait briefly for it.
        deadline = time.monotonic() + timeout_s
        while getattr(stream, "_loop", None) is None and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        loop = getattr(stream, "_loop", None)
        if loop is not None and loop.is_running():
            with contextlib.suppress(Exception):
                stream.stop()
            # The loop may end right after stop() (e.g. a stream waiting to reconnect): then the close
            # coroutine never runs and is closed here, not left to warn "never awaited".
            closing = stream.close()
            try:
                asyncio.run_coroutine_threadsafe(closing, loop).result(timeout_s)
            except Exception:  # noqa: BLE001 - best effort; the thread join below reports a stuck stream
                with contextlib.suppress(Exception):
                    closing.close()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning("%s: stream thread still running after %.0fs", self.name, timeout_s)
        with contextlib.suppress(ValueError):
            self._streams.remove((stream, thread))

    def close(self) -> None:
        for stream, thread in list(self._streams):
            self._stop_stream(stream, thread)


class _AckedStream(StockDataStream):
    """alpaca-py's stream, plus `subscribed`: set once the server acknowledges a subscription."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscribed = threading.Event()

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("T") == "subscription" and msg.get("bars"):
            self.subscribed.set()
        await super()._dispatch(msg)


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _message(exc: APIError) -> str:
    with contextlib.suppress(Exception):
        return str(exc.message)
    return str(exc)
