"""AlpacaBarSource restart catch-up: bars released while nobody listened come from REST, then the stream.

Against the local Alpaca-compatible server (real uvicorn, unmodified alpaca-py); fixtures in conftest.py."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from polling import wait_for

from gateway.serve import ServerHandle
from market_data.alpaca_server import LOCAL_KEY_ID, LOCAL_SECRET_KEY
from market_data.alpaca_source import AlpacaBarSource, AlpacaDataSettings
from market_data.bar_source import BarBatch

N_DAYS = 24
WARMUP = 12
MAX_PAGE_SIZE = 4  # 3 timestamps x 5 symbols over 4-bar pages: the catch-up must follow pagination
WAIT_S = 5.0
AUTH = {"APCA-API-KEY-ID": LOCAL_KEY_ID, "APCA-API-SECRET-KEY": LOCAL_SECRET_KEY}


@pytest.fixture()
def source(server: ServerHandle, bars: pd.DataFrame) -> Iterator[AlpacaBarSource]:
    settings = AlpacaDataSettings.from_env({
        "APCA_API_KEY_ID": LOCAL_KEY_ID, "APCA_API_SECRET_KEY": LOCAL_SECRET_KEY, "APCA_DATA_URL": server.url,
        "APCA_DATA_STREAM_URL": server.url.replace("http", "ws") + "/v2/iex"})
    src = AlpacaBarSource(settings, sorted(bars["symbol"].unique()), grace_s=0.5)
    yield src
    src.close()


class Consumer:
    """Runs `batches()` in a thread so the test can drive the server's clock meanwhile."""

    def __init__(self, source: AlpacaBarSource, after: pd.Timestamp | None) -> None:
        self.stop = threading.Event()
        self.got: list[BarBatch] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(source, after), daemon=True)
        self.thread.start()

    def _run(self, source: AlpacaBarSource, after: pd.Timestamp | None) -> None:
        try:
            for batch in source.batches(after, self.stop):
                self.got.append(batch)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(5)


def sim(server: ServerHandle, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    response = httpx.request(method, server.url + path, headers=AUTH, **kwargs)
    response.raise_for_status()
    return response.json()


def advance(server: ServerHandle, steps: int) -> None:
    assert sim(server, "POST", "/_sim/advance", params={"steps": steps})["advanced"] == steps


def subscribers(server: ServerHandle) -> int:
    return int(sim(server, "GET", "/_sim/state")["subscribers"])


def bar_requests(server: ServerHandle) -> list[dict[str, str]]:
    return server._server.config.app.state.market.requests  # type: ignore[attr-defined,no-any-return]


def normalized(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.sort_values(["timestamp", "symbol"]).reset_index(drop=True).astype({"volume": "float64"})
    out["symbol"] = out["symbol"].astype(object)
    out["timestamp"] = out["timestamp"].dt.as_unit("ns")
    return out


def assert_batches_equal_the_frame(got: list[BarBatch], bars: pd.DataFrame, stamps: list[pd.Timestamp]) -> None:
    assert [b.timestamp for b in got] == stamps
    for batch, stamp in zip(got, stamps):
        assert set(batch.bars["timestamp"]) == {stamp}
        want = bars[bars["timestamp"] == stamp]
        pd.testing.assert_frame_equal(normalized(batch.bars), normalized(want), check_dtype=False)


def test_batches_when_restarted_after_missed_bars_then_rest_catches_up_then_stream_continues_without_gap(
        server: ServerHandle, source: AlpacaBarSource, bars: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    stamps = list(pd.DatetimeIndex(sorted(bars["timestamp"].unique())))
    advance(server, 5)  # bars 1..5 released while nobody listens
    assert subscribers(server) == 0
    caplog.set_level(logging.INFO, logger="market_data.alpaca_source")
    with Consumer(source, after=stamps[WARMUP + 1]) as consumer:  # the 2nd of those was the last decided
        wait_for(lambda: len(consumer.got) == 3 or consumer.error, what="3 caught-up batches", timeout_s=WAIT_S)
        assert consumer.error is None
        assert subscribers(server) >= 1  # the stream was live before the catch-up
        assert len(bar_requests(server)) > 1  # the REST answer came over several pages
        advance(server, 2)  # bars 6 and 7 only reach the stream
        wait_for(lambda: len(consumer.got) >= 5, what="2 streamed batches", timeout_s=WAIT_S)
    assert consumer.error is None
    assert_batches_equal_the_frame(consumer.got, bars, stamps[WARMUP + 2:WARMUP + 7])
    assert any("caught up 15 bars (3 timestamps)" in r.getMessage() for r in caplog.records)


def test_batches_when_restarted_with_nothing_missed_then_only_stream_bars_follow(
        server: ServerHandle, source: AlpacaBarSource, bars: pd.DataFrame) -> None:
    stamps = list(pd.DatetimeIndex(sorted(bars["timestamp"].unique())))
    advance(server, 2)
    with Consumer(source, after=stamps[WARMUP + 1]) as consumer:  # the present: nothing to catch up
        wait_for(lambda: bar_requests(server), what="the catch-up request", timeout_s=WAIT_S)
        wait_for(lambda: subscribers(server) >= 1, what="subscription", timeout_s=WAIT_S)
        advance(server, 2)
        wait_for(lambda: len(consumer.got) >= 2, what="2 streamed batches", timeout_s=WAIT_S)
    assert consumer.error is None
    assert_batches_equal_the_frame(consumer.got, bars, stamps[WARMUP + 2:WARMUP + 4])


def test_batches_when_after_is_none_then_missed_bars_are_not_fetched_and_only_stream_bars_are_yielded(
        server: ServerHandle, source: AlpacaBarSource, bars: pd.DataFrame) -> None:
    stamps = list(pd.DatetimeIndex(sorted(bars["timestamp"].unique())))
    advance(server, 5)
    with Consumer(source, after=None) as consumer:
        wait_for(lambda: subscribers(server) >= 1, what="subscription", timeout_s=WAIT_S)
        advance(server, 2)
        wait_for(lambda: len(consumer.got) >= 2, what="2 streamed batches", timeout_s=WAIT_S)
    assert consumer.error is None
    assert_batches_equal_the_frame(consumer.got, bars, stamps[WARMUP + 5:WARMUP + 7])
    assert bar_requests(server) == []  # a fresh start reads no REST bars


def test_batches_when_stop_is_set_while_catch_up_awaits_the_subscription_then_generator_ends_promptly(
        server: ServerHandle, bars: pd.DataFrame) -> None:
    stamps = list(pd.DatetimeIndex(sorted(bars["timestamp"].unique())))
    advance(server, 5)
    # An unknown feed path: the server refuses the stream, alpaca-py keeps retrying, no subscription comes.
    settings = AlpacaDataSettings.from_env({
        "APCA_API_KEY_ID": LOCAL_KEY_ID, "APCA_API_SECRET_KEY": LOCAL_SECRET_KEY, "APCA_DATA_URL": server.url,
        "APCA_DATA_STREAM_URL": server.url.replace("http", "ws") + "/v2/nofeed"})
    src = AlpacaBarSource(settings, sorted(bars["symbol"].unique()), subscribe_timeout_s=60.0)
    try:
        consumer = Consumer(src, after=stamps[WARMUP])
        wait_for(lambda: src._streams, what="the stream thread", timeout_s=WAIT_S)
        began = time.monotonic()
        consumer.stop.set()
        consumer.thread.join(5)
        assert not consumer.thread.is_alive() and time.monotonic() - began < 2.0
        assert consumer.error is None and consumer.got == []
        assert bar_requests(server) == []  # stopped before the REST catch-up
    finally:
        src.close()
