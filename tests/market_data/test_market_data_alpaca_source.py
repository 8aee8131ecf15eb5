"""AlpacaBarSource against the local Alpaca-compatible server (real uvicorn, unmodified alpaca-py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from polling import wait_for

from gateway.serve import ServerHandle, free_port, serve_app_in_thread
from market_data.alpaca_server import LOCAL_KEY_ID, LOCAL_SECRET_KEY, MarketDataServerProcess, create_app
from market_data.alpaca_source import AlpacaBarSource, AlpacaCredentialsError, AlpacaDataError, AlpacaDataSettings
from market_data.bar_source import BarBatch, ReplayBarSource
from market_data.source import load_market

N_DAYS = 24
WARMUP = 12
MAX_PAGE_SIZE = 9
WAIT_S = 5.0
SIM_HEADERS = {"APCA-API-KEY-ID": LOCAL_KEY_ID, "APCA-API-SECRET-KEY": LOCAL_SECRET_KEY}  # the /_sim hooks


def settings_for(url: str, **overrides: Any) -> AlpacaDataSettings:
    return AlpacaDataSettings.from_env({"APCA_API_KEY_ID": LOCAL_KEY_ID, "APCA_API_SECRET_KEY": LOCAL_SECRET_KEY,
                                        "APCA_DATA_URL": url,
                                        "APCA_DATA_STREAM_URL": url.replace("http", "ws") + "/v2/iex"}, **overrides)


@pytest.fixture()
def source(server: ServerHandle, bars: pd.DataFrame) -> Iterator[AlpacaBarSource]:
    src = AlpacaBarSource(settings_for(server.url), sorted(bars["symbol"].unique()), grace_s=0.5)
    yield src
    src.close()


def replay(bars: pd.DataFrame, start: pd.Timestamp) -> ReplayBarSource:
    return ReplayBarSource(bars, start=start)


def normalized(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.sort_values(["timestamp", "symbol"]).reset_index(drop=True).astype({"volume": "float64"})
    out["symbol"] = out["symbol"].astype(object)
    out["timestamp"] = out["timestamp"].dt.as_unit("ns")
    return out


class Consumer:
    """Runs `batches()` in a thread so the test can drive the server's clock meanwhile."""

    def __init__(self, source: AlpacaBarSource, after: pd.Timestamp | None) -> None:
        self.stop = threading.Event()
        self.got: list[BarBatch] = []
        self.thread = threading.Thread(target=self._run, args=(source, after), daemon=True)
        self.thread.start()

    def _run(self, source: AlpacaBarSource, after: pd.Timestamp | None) -> None:
        for batch in source.batches(after, self.stop):
            self.got.append(batch)

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(5)


def subscribed(server: ServerHandle) -> bool:
    return httpx.get(server.url + "/_sim/state", headers=SIM_HEADERS).json()["subscribers"] >= 1


def test_history_when_before_is_none_then_equals_the_replay_warmup_across_pages(
        server: ServerHandle, source: AlpacaBarSource, bars: pd.DataFrame, start: pd.Timestamp) -> None:
    got = source.history(None, 8)
    want = replay(bars, start).history(None, 8)
    pd.testing.assert_frame_equal(normalized(got), normalized(want), check_dtype=False)
    market = server._server.config.app.state.market  # type: ignore[attr-defined]
    bar_requests = market.requests
    assert len(bar_requests) > 1  # 8 x 5 bars over 9-bar pages
    assert {r["adjustment"] for r in bar_requests} == {"all"} and {r["feed"] for r in bar_requests} == {"iex"}


def test_history_when_before_is_given_then_timestamps_are_identical_and_strictly_before(
        source: AlpacaBarSource, bars: pd.DataFrame, start: pd.Timestamp) -> None:
    before = pd.Timestamp(sorted(bars["timestamp"].unique())[7])
    got = source.history(before, 5)
    assert list(got["timestamp"].unique()) == list(sorted(bars["timestamp"].unique())[2:7])
    pd.testing.assert_frame_equal(normalized(got), normalized(replay(bars, start).history(before, 5)),
                                  check_dtype=False)


def test_history_when_key_is_wrong_then_market_data_error_without_the_secret(server: ServerHandle,
                                                                             bars: pd.DataFrame) -> None:
    settings = settings_for(server.url, secret_key="s3cret-wrong")
    with pytest.raises(AlpacaDataError, match="403") as info:
        AlpacaBarSource(settings, ["SPY"]).history(None, 3)
    assert "s3cret-wrong" not in str(info.value) and "s3cret-wrong" not in repr(settings)


def test_settings_when_keys_are_absent_then_error_names_the_variables() -> None:
    with pytest.raises(AlpacaCredentialsError, match="APCA_API_KEY_ID and APCA_API_SECRET_KEY"):
        AlpacaDataSettings.from_env({})


def test_batches_when_clock_advances_then_batches_equal_the_frame_in_order(
        server: ServerHandle, source: AlpacaBarSource, bars: pd.DataFrame, start: pd.Timestamp) -> None:
    with Consumer(source, after=None) as consumer:
        wait_for(lambda: subscribed(server), what="subscription", timeout_s=WAIT_S)
        httpx.post(server.url + "/_sim/advance", headers=SIM_HEADERS, params={"steps": 3}).raise_for_status()
        wait_for(lambda: len(consumer.got) == 3, what="3 batches", timeout_s=WAIT_S)
    want = list(replay(bars, start).batches(None, threading.Event()))[:3]
    assert [b.timestamp for b in consumer.got] == [w.timestamp for w in want]
    for got, expected in zip(consumer.got, want):
        pd.testing.assert_frame_equal(normalized(got.bars), normalized(expected.bars), check_dtype=False)


def test_batches_when_one_symbol_is_withheld_then_grace_period_yields_a_partial_batch(
        server: ServerHandle, source: AlpacaBarSource, start: pd.Timestamp) -> None:
    httpx.post(server.url + "/_sim/withhold", headers=SIM_HEADERS, json={"symbols": ["SYM01"]}).raise_for_status()
    with Consumer(source, after=None) as consumer:
        wait_for(lambda: subscribed(server), what="subscription", timeout_s=WAIT_S)
        httpx.post(server.url + "/_sim/advance", headers=SIM_HEADERS).raise_for_status()
        first_bar_at = time.monotonic()
        wait_for(lambda: consumer.got, what="the partial batch", timeout_s=WAIT_S)
        waited = time.monotonic() - first_bar_at
    assert consumer.got[0].timestamp == start
    assert "SYM01" not in set(consumer.got[0].bars["symbol"]) and len(consumer.got[0].bars) == 4
    assert waited >= 0.4  # held for the grace period, not yielded at once


def test_batches_when_after_is_set_then_earlier_bars_are_skipped(
        server: ServerHandle, source: AlpacaBarSource, bars: pd.DataFrame, start: pd.Timestamp) -> None:
    stamps = sorted(bars["timestamp"].unique())
    with Consumer(source, after=pd.Timestamp(stamps[WARMUP + 1])) as consumer:
        wait_for(lambda: subscribed(server), what="subscription", timeout_s=WAIT_S)
        httpx.post(server.url + "/_sim/advance", headers=SIM_HEADERS, params={"steps": 3}).raise_for_status()
        wait_for(lambda: consumer.got, what="a batch", timeout_s=WAIT_S)
    assert [b.timestamp for b in consumer.got] == [stamps[WARMUP + 2]]


def test_batches_when_stop_is_set_then_generator_ends_promptly(server: ServerHandle, source: AlpacaBarSource) -> None:
    consumer = Consumer(source, after=None)
    wait_for(lambda: subscribed(server), what="subscription", timeout_s=WAIT_S)
    began = time.monotonic()
    consumer.stop.set()
    consumer.thread.join(3)
    assert not consumer.thread.is_alive()
    assert time.monotonic() - began < 2.0
    wait_for(lambda: not subscribed(server), what="the stream to disconnect", timeout_s=WAIT_S)


def test_process_when_started_from_a_spec_then_source_reads_history_through_it() -> None:
    port = free_port()
    with MarketDataServerProcess(port, "synthetic:planted-alpha", warmup_bars=6, n_symbols=2, n_days=10) as proc:
        src = AlpacaBarSource(settings_for(proc.url), ["SPY", "SYM00", "SYM01", "VIX"])
        got = src.history(None, 6)
    want = load_market("synthetic:planted-alpha", n_symbols=2, n_days=10)
    want = want[want["timestamp"].isin(sorted(want["timestamp"].unique())[:6])]
    pd.testing.assert_frame_equal(normalized(got), normalized(want), check_dtype=False)


def test_history_when_bars_are_minutes_then_round_trip_keeps_timestamps_identical(bars: pd.DataFrame) -> None:
    minutes = bars.copy()
    stamps = sorted(minutes["timestamp"].unique())
    remap = {s: pd.Timestamp("2024-03-08T14:31:00Z") + pd.Timedelta(minutes=i) for i, s in enumerate(stamps)}
    minutes["timestamp"] = minutes["timestamp"].map(remap)
    start = remap[stamps[WARMUP]]
    with serve_app_in_thread(create_app(minutes, start=start)) as server:
        src = AlpacaBarSource(settings_for(server.url, timeframe="1Min"), sorted(minutes["symbol"].unique()))
        got = src.history(None, 5)
    want = ReplayBarSource(minutes, start=start, bar_seconds=60).history(None, 5)
    pd.testing.assert_frame_equal(normalized(got), normalized(want), check_dtype=False)
