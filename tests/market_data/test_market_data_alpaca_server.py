"""The local Alpaca-compatible server, exercised with the unmodified alpaca-py clients."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import msgpack
import pandas as pd
import pytest
import websockets
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.requests import StockBarsRequest, StockLatestBarRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from polling import wait_for

from gateway.serve import ServerHandle
from market_data.alpaca_bars import alpaca_start_to_close
from market_data.alpaca_server import LOCAL_KEY_ID, LOCAL_SECRET_KEY

N_DAYS = 20
WARMUP = 10
MAX_PAGE_SIZE = 7
WAIT_S = 5.0
SIM_HEADERS = {"APCA-API-KEY-ID": LOCAL_KEY_ID, "APCA-API-SECRET-KEY": LOCAL_SECRET_KEY}  # the /_sim hooks
SYMBOLS = ["SPY", "SYM00", "SYM01", "SYM02", "VIX"]
EARLY = pd.Timestamp("2022-01-01", tz="UTC")


def client(server: ServerHandle, key: str = LOCAL_KEY_ID, secret: str = LOCAL_SECRET_KEY) -> StockHistoricalDataClient:
    # retry_attempts=0 would be ignored (falsy); 429/504 are never answered here anyway.
    return StockHistoricalDataClient(key, secret, url_override=server.url)


def history_frame(barset: Any) -> pd.DataFrame:
    rows = [{"symbol": b.symbol, "timestamp": alpaca_start_to_close(b.timestamp, "1Day"), "open": b.open,
             "high": b.high, "low": b.low, "close": b.close, "volume": b.volume}
            for series in barset.data.values() for b in series]
    return pd.DataFrame(rows).sort_values(["timestamp", "symbol"]).reset_index(drop=True)


def expected_frame(bars: pd.DataFrame, upto: int) -> pd.DataFrame:
    stamps = sorted(bars["timestamp"].unique())[:upto]
    frame = bars[bars["timestamp"].isin(stamps)].sort_values(["timestamp", "symbol"]).reset_index(drop=True)
    frame = frame.astype({"volume": "float64"})
    frame["timestamp"] = frame["timestamp"].dt.as_unit("ns")
    frame["symbol"] = frame["symbol"].astype(object)
    return frame


def test_get_bars_when_page_size_is_small_then_alpaca_py_follows_every_page_and_gets_all_released_bars(
        server: ServerHandle, bars: pd.DataFrame) -> None:
    market = server._server.config.app.state.market  # type: ignore[attr-defined]
    barset = client(server).get_stock_bars(StockBarsRequest(
        symbol_or_symbols=SYMBOLS, timeframe=TimeFrame.Day, start=EARLY.to_pydatetime()))
    got = history_frame(barset)
    got["symbol"] = got["symbol"].astype(object)
    pd.testing.assert_frame_equal(got, expected_frame(bars, WARMUP), check_dtype=False)
    assert len(market.requests) == -(-len(got) // 7) > 1  # ceil(n / page) pages, one request each


def test_get_bars_when_adjustment_and_feed_are_set_then_they_reach_the_server(server: ServerHandle) -> None:
    market = server._server.config.app.state.market  # type: ignore[attr-defined]
    client(server).get_stock_bars(StockBarsRequest(
        symbol_or_symbols=["SPY"], timeframe=TimeFrame.Day, start=EARLY.to_pydatetime(),
        adjustment=Adjustment.SPLIT, feed=DataFeed.SIP))
    assert market.requests[0]["adjustment"] == "split"
    assert market.requests[0]["feed"] == "sip"
    assert market.requests[0]["symbols"] == "SPY"


def test_get_bars_when_limit_counts_across_symbols_then_pages_end_at_the_limit(server: ServerHandle) -> None:
    headers = {"APCA-API-KEY-ID": LOCAL_KEY_ID, "APCA-API-SECRET-KEY": LOCAL_SECRET_KEY}
    params = {"symbols": "SPY,SYM00", "timeframe": "1Day", "limit": "4"}
    seen: list[tuple[str, str]] = []
    token = None
    for _ in range(20):
        body = httpx.get(server.url + "/v2/stocks/bars", params={**params, **({"page_token": token} if token else {})},
                         headers=headers).json()
        page = [(s, b["t"]) for s, rows in body["bars"].items() for b in rows]
        assert len(page) <= 4
        seen += page
        token = body["next_page_token"]
        if token is None:
            break
    assert len(seen) == len(set(seen)) == 2 * WARMUP
    assert [s for s, _ in seen] == ["SPY"] * WARMUP + ["SYM00"] * WARMUP  # symbol-major, as Alpaca


def test_get_bars_when_key_is_wrong_then_alpaca_py_raises_forbidden(server: ServerHandle) -> None:
    with pytest.raises(APIError) as info:
        client(server, secret="wrong").get_stock_bars(StockBarsRequest(symbol_or_symbols="SPY", timeframe=TimeFrame.Day))
    assert info.value.status_code == 403
    assert info.value.message == "forbidden"


def test_get_bars_when_keys_are_missing_then_401_json_message(server: ServerHandle) -> None:
    response = httpx.get(server.url + "/v2/stocks/bars", params={"symbols": "SPY", "timeframe": "1Day"})
    assert response.status_code == 401
    assert "message" in response.json()


@pytest.mark.parametrize(("timeframe", "reason"), [
    (TimeFrame(1, TimeFrameUnit.Hour), "unsupported timeframe"),
    (TimeFrame(1, TimeFrameUnit.Minute), "not available"),
])
def test_get_bars_when_timeframe_is_not_served_then_400_with_reason(server: ServerHandle, timeframe: TimeFrame,
                                                                   reason: str) -> None:
    with pytest.raises(APIError) as info:
        client(server).get_stock_bars(StockBarsRequest(symbol_or_symbols="SPY", timeframe=timeframe))
    assert info.value.status_code == 400
    assert reason in info.value.message


@pytest.mark.parametrize(("params", "reason"), [
    ({"timeframe": "7Fortnight"}, "invalid timeframe"),
    ({"limit": "0"}, "invalid limit"),
    ({"adjustment": "sideways"}, "invalid adjustment"),
    ({"start": "yesterday-ish"}, "invalid start"),
    ({"page_token": "%%%"}, "invalid page_token"),
])
def test_get_bars_when_a_param_is_bad_then_400_names_it(server: ServerHandle, params: dict[str, str],
                                                        reason: str) -> None:
    headers = {"APCA-API-KEY-ID": LOCAL_KEY_ID, "APCA-API-SECRET-KEY": LOCAL_SECRET_KEY}
    response = httpx.get(server.url + "/v2/stocks/bars", headers=headers,
                         params={"symbols": "SPY", "timeframe": "1Day", **params})
    assert response.status_code == 400
    assert reason in response.json()["message"]


def test_advance_when_clock_moves_then_rest_serves_the_new_bar_and_latest_follows(server: ServerHandle,
                                                                                  bars: pd.DataFrame) -> None:
    request = StockBarsRequest(symbol_or_symbols="SPY", timeframe=TimeFrame.Day, start=EARLY.to_pydatetime())
    assert len(client(server).get_stock_bars(request).data["SPY"]) == WARMUP
    httpx.post(server.url + "/_sim/advance", headers=SIM_HEADERS, params={"steps": 2}).raise_for_status()
    assert len(client(server).get_stock_bars(request).data["SPY"]) == WARMUP + 2
    latest = client(server).get_stock_latest_bar(StockLatestBarRequest(symbol_or_symbols=["SPY"]))
    close = alpaca_start_to_close(latest["SPY"].timestamp, "1Day")
    assert close == sorted(bars["timestamp"].unique())[WARMUP + 1]


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"APCA-API-KEY-ID": LOCAL_KEY_ID}, 401),
    ({"APCA-API-KEY-ID": LOCAL_KEY_ID, "APCA-API-SECRET-KEY": "wrong"}, 403),
])
def test_sim_hooks_when_keys_missing_or_wrong_then_refused_and_the_present_does_not_move(
        server: ServerHandle, sim_headers: dict[str, str], headers: dict[str, str], status: int) -> None:
    before = httpx.get(server.url + "/_sim/state", headers=sim_headers).json()
    advanced = httpx.post(server.url + "/_sim/advance", headers=headers, params={"steps": 3})
    assert advanced.status_code == status and "code" in advanced.json() and "present" not in advanced.json()
    assert httpx.post(server.url + "/_sim/withhold", headers=headers, json={"symbols": ["SPY"]}).status_code == status
    assert httpx.get(server.url + "/_sim/state", headers=headers).status_code == status
    after = httpx.get(server.url + "/_sim/state", headers=sim_headers).json()
    assert after["present"] == before["present"] and after["remaining"] == before["remaining"]
    market = server._server.config.app.state.market  # type: ignore[attr-defined]
    assert market.withheld == set()
    assert httpx.get(server.url + "/healthz").json() == {"ok": True}  # still public


def test_stream_when_clock_advances_then_alpaca_py_receives_each_bar_in_order(server: ServerHandle,
                                                                              bars: pd.DataFrame) -> None:
    received: list[Any] = []

    async def on_bar(bar: Any) -> None:
        received.append(bar)

    stream = StockDataStream(LOCAL_KEY_ID, LOCAL_SECRET_KEY, url_override=server.url.replace("http", "ws") + "/v2/iex")
    stream.subscribe_bars(on_bar, "*")
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: httpx.get(server.url + "/_sim/state", headers=SIM_HEADERS).json()["subscribers"] == 1, what="subscription",
                 timeout_s=WAIT_S)
        httpx.post(server.url + "/_sim/advance", headers=SIM_HEADERS, params={"steps": 3}).raise_for_status()
        wait_for(lambda: len(received) == 3 * len(SYMBOLS), what="3 timestamps of bars", timeout_s=WAIT_S)
    finally:
        stream.stop()
        asyncio.run_coroutine_threadsafe(stream.close(), stream._loop).result(5)
        thread.join(5)
    got = [(b.symbol, alpaca_start_to_close(b.timestamp, "1Day"), b.close) for b in received]
    stamps = sorted(bars["timestamp"].unique())[WARMUP:WARMUP + 3]
    want = [(r.symbol, r.timestamp, r.close) for r in
            bars[bars["timestamp"].isin(stamps)].sort_values(["timestamp", "symbol"]).itertuples()]
    assert got == want
    assert not thread.is_alive()


def test_stream_when_client_speaks_json_or_bad_auth_then_protocol_answers_in_kind(server: ServerHandle) -> None:
    async def talk() -> list[Any]:
        url = server.url.replace("http", "ws") + "/v2/iex"
        async with websockets.connect(url) as ws:  # no msgpack content-type: JSON
            replies = [json.loads(await ws.recv())]
            await ws.send(json.dumps({"action": "subscribe", "bars": ["SPY"]}))
            replies.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"action": "auth", "key": LOCAL_KEY_ID, "secret": "nope"}))
            replies.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"action": "auth", "key": LOCAL_KEY_ID, "secret": LOCAL_SECRET_KEY}))
            replies.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"action": "subscribe", "bars": ["SPY"]}))
            replies.append(json.loads(await ws.recv()))
            httpx.post(server.url + "/_sim/advance", headers=SIM_HEADERS)  # sync call inside the loop: fine, server is another thread
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        async with websockets.connect(url, additional_headers={"Content-Type": "application/msgpack"}) as ws:
            replies.append(msgpack.unpackb(await ws.recv()))
        return replies

    connected, early, denied, ok, subscribed, bar, packed = asyncio.run(talk())
    assert connected == [{"T": "success", "msg": "connected"}]
    assert early[0]["code"] == 401
    assert denied == [{"T": "error", "code": 402, "msg": "auth failed"}]
    assert ok == [{"T": "success", "msg": "authenticated"}]
    assert subscribed[0]["T"] == "subscription" and subscribed[0]["bars"] == ["SPY"] and subscribed[0]["trades"] == []
    assert bar[0]["T"] == "b" and bar[0]["S"] == "SPY" and bar[0]["t"].endswith("Z")
    assert packed == [{"T": "success", "msg": "connected"}]


def test_cli_when_flags_are_given_then_parsed_and_bad_spec_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from marlops.market_data_cli import add_market_data_parser

    parser = argparse.ArgumentParser()
    add_market_data_parser(parser.add_subparsers())
    args = parser.parse_args(["market-data", "--source", "synthetic:nope", "--port", "5201", "--bars-per-second", "2",
                              "--warmup-bars", "8", "--symbols", "3", "--days", "30"])
    assert (args.port, args.bars_per_second, args.warmup_bars, args.symbols, args.days) == (5201, 2.0, 8, 3, 30)
    assert args.func(args) == 2
    assert "unknown synthetic preset" in capsys.readouterr().out
