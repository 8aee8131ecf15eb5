"""A local Alpaca-compatible market-data server: replays a bars frame on its own clock.

How it works
------------
`create_app(bars, start=..., bars_per_second=..., key_id=..., secret_key=...)` holds the frame and a
replay position, the "present": bars stamped before `start` are history; each step releases the
next timestamp. With `bars_per_second` a background task steps at that pace; with None the clock
only moves on `POST /_sim/advance` (a test hook). Released bars are what REST serves and what the
stream pushes, so the unmodified alpaca-py clients see a market that unfolds like the live one.

Protocol subset (alpaca-py 0.44 as the reference client)
--------------------------------------------------------
- Auth: headers `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY`; missing -> 401, wrong -> 403, body
  `{"code": ..., "message": ...}` (alpaca-py's `APIError` reads both).
- `GET /v2/stocks/bars`: `symbols` (comma list), `timeframe` (the frame's own, `1Day` or `1Min`;
  other valid timeframes 400 with the reason, since this server does not aggregate), `start`,
  `end` (RFC 3339 or a date; naive = UTC; default: everything up to the present), `limit`
  (1..10000, default 1000, counted across symbols like Alpaca), `adjustment`, `feed`, `sort`
  (asc|desc per symbol), `page_token`. Bars are ordered symbol-major as Alpaca does; a page holds
  at most min(limit, max_page_size) bars; `next_page_token` is opaque (it names the next bar, so
  pages stay consistent while the present moves). Only bars at or before the present are served.
- `GET /v2/stocks/bars/latest`: the last released bar per symbol, `{"bars": {SYM: {...}}}`.
- Websocket `/v2/{iex|sip|delayed_sip|test}`: MessagePack when the client says
  `Content-Type: application/msgpack` (alpaca-py does), JSON otherwise. `[{"T":"success",
  "msg":"connected"}]`; `{"action":"auth",...}` -> `authenticated` or error 402; `subscribe` /
  `unsubscribe` with `bars` (`"*"` = all) -> a `subscription` message listing every channel; each
  released timestamp -> one array of `{"T":"b","S","o","h","l","c","v","t","n","vw"}` (`t` a
  msgpack Timestamp, alpaca-py calls `.to_datetime()` on it; RFC 3339 text in JSON).
- Timestamps: see `market_data.alpaca_bars` (close -> Alpaca start; 1Day = New York midnight).
- Test hooks (`sim_hooks=True`): `POST /_sim/advance?steps=N`, `POST /_sim/withhold` with
  `{"symbols": [...]}` (those symbols' bars are not pushed on the stream; REST still has them),
  `GET /_sim/state` (present, remaining, subscriber count); they need the same two key headers as REST
  (401 / 403 likewise). `GET /healthz` needs no auth.

Run it: `python -m market_data.alpaca_server --source synthetic:planted-alpha --port 5200`, or
`MarketDataServerProcess` (a subprocess, for tests and the local stack). Keys come from
APCA_API_KEY_ID / APCA_API_SECRET_KEY, defaulting to LOCAL_KEY_ID / LOCAL_SECRET_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hmac
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pandas as pd
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

from contracts.bars import BAR_COLUMNS
from market_data.alpaca_bars import TimeframeError, close_to_alpaca_start, infer_timeframe, parse_timeframe
from market_data.errors import MarketDataError

logger = logging.getLogger(__name__)

LOCAL_KEY_ID = "local-key"
LOCAL_SECRET_KEY = "local-secret"  # only ever guards a replay of synthetic/file bars on localhost
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
FEEDS = {"iex", "sip", "delayed_sip", "otc", "boats", "overnight"}
STREAM_FEEDS = {"iex", "sip", "delayed_sip", "test"}
ADJUSTMENTS = {"raw", "split", "dividend", "all"}
STREAM_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds",
                   "corrections", "cancelErrors")


class MarketDataServerError(MarketDataError):
    """The local market-data server cannot be built or started."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)  # identity-hashed: clients live in a set
class _StreamClient:
    msgpack: bool
    queue: asyncio.Queue[list[dict[str, Any]]] = field(default_factory=asyncio.Queue)
    authenticated: bool = False
    bars: set[str] = field(default_factory=set)

    def wants(self, symbol: str) -> bool:
        return "*" in self.bars or symbol in self.bars


class ReplayMarket:
    """The frame, its replay position and the stream subscribers; lives on the server's event loop."""

    def __init__(self, bars: pd.DataFrame, start: pd.Timestamp, timeframe: str | None) -> None:
        missing = [c for c in BAR_COLUMNS if c not in bars.columns]
        if missing:
            raise MarketDataServerError(f"bars lack columns {missing}")
        frame = bars[list(BAR_COLUMNS)].copy()
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        self.timeframe = parse_timeframe(timeframe) if timeframe else infer_timeframe(frame["timestamp"])
        frame["t"] = close_to_alpaca_start(frame["timestamp"], self.timeframe)
        self.frame = frame.sort_values(["symbol", "t"], kind="stable").reset_index(drop=True)
        self.stamps = list(pd.DatetimeIndex(sorted(frame["timestamp"].unique())))
        start = pd.Timestamp(start)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        self.position = sum(1 for s in self.stamps if s < start)  # stamps[:position] are released
        self.clients: set[_StreamClient] = set()
        self.withheld: set[str] = set()
        self.requests: list[dict[str, str]] = []  # query params of each bars request, for tests

    @property
    def present(self) -> pd.Timestamp | None:
        return self.stamps[self.position - 1] if self.position else None

    @property
    def remaining(self) -> int:
        return len(self.stamps) - self.position

    def released(self) -> pd.DataFrame:
        present = self.present
        return self.frame.iloc[:0] if present is None else self.frame[self.frame["timestamp"] <= present]

    def advance(self, steps: int = 1) -> int:
        """Release up to `steps` timestamps, pushing each one's bars to subscribers; returns how many."""
        done = 0
        while done < steps and self.position < len(self.stamps):
            stamp = self.stamps[self.position]
            self.position += 1
            done += 1
            rows = self.frame[self.frame["timestamp"] == stamp].sort_values("symbol")
            messages = [bar_message(row, stream=True) for row in rows.itertuples(index=False)
                        if row.symbol not in self.withheld]
            for client in list(self.clients):
                if client.authenticated:
                    mine = [m for m in messages if client.wants(m["S"])]
                    if mine:
                        client.queue.put_nowait(mine)
        return done


def bar_message(row: Any, *, stream: bool) -> dict[str, Any]:
    """One bar in Alpaca's wire shape. `n`/`vw` are required by alpaca-py's Bar model; the frame has
    neither, so n = 0 and vw = the typical price (h + l + c) / 3."""
    t: pd.Timestamp = row.t
    body: dict[str, Any] = {
        "t": msgpack.Timestamp.from_unix_nano(t.as_unit("ns").value) if stream else _rfc3339(t),
        "o": float(row.open), "h": float(row.high), "l": float(row.low), "c": float(row.close),
        "v": float(row.volume), "n": 0, "vw": (float(row.high) + float(row.low) + float(row.close)) / 3,
    }
    if stream:
        return {"T": "b", "S": row.symbol, **body}
    return body


def _rfc3339(t: pd.Timestamp) -> str:
    return t.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(name: str, text: str | None) -> pd.Timestamp | None:
    if text is None or text == "":
        return None
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise _BadRequest(400, f"invalid {name}: {text!r} is not RFC 3339 or YYYY-MM-DD") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _encode_token(symbol: str, t: pd.Timestamp) -> str:
    return base64.urlsafe_b64encode(json.dumps([symbol, int(t.value)]).encode()).decode()


def _decode_token(token: str) -> tuple[str, int]:
    try:
        symbol, t_ns = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(symbol), int(t_ns)
    except (ValueError, TypeError) as exc:
        raise _BadRequest(400, "invalid page_token") from exc


def _one_of(name: str, value: str | None, allowed: set[str]) -> None:
    if value is not None and value not in allowed:
        raise _BadRequest(400, f"invalid {name} {value!r}: expected one of {sorted(allowed)}")


def _bars_page(market: ReplayMarket, params: dict[str, str], max_page_size: int) -> dict[str, Any]:
    symbols = [s.strip() for s in params.get("symbols", "").split(",") if s.strip()]
    if not symbols:
        raise _BadRequest(400, "missing symbols: give a comma-separated list")
    if "timeframe" not in params:
        raise _BadRequest(400, "missing timeframe")
    try:
        timeframe = parse_timeframe(params["timeframe"])
    except TimeframeError as exc:
        raise _BadRequest(400, str(exc)) from exc
    if timeframe != market.timeframe:
        raise _BadRequest(400, f"timeframe {params['timeframe']!r} not available: this server replays "
                               f"{market.timeframe} bars and does not aggregate")
    _one_of("adjustment", params.get("adjustment"), ADJUSTMENTS)
    _one_of("feed", params.get("feed"), FEEDS)
    sort = params.get("sort", "asc")
    _one_of("sort", sort, {"asc", "desc"})
    try:
        limit = int(params.get("limit") or DEFAULT_LIMIT)
    except ValueError as exc:
        raise _BadRequest(400, f"invalid limit {params.get('limit')!r}: not an integer") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise _BadRequest(400, f"invalid limit {limit}: must be between 1 and {MAX_LIMIT}")
    start, end = _parse_time("start", params.get("start")), _parse_time("end", params.get("end"))
    if start is not None and end is not None and end < start:
        raise _BadRequest(422, "end should not be before start")

    rows = market.released()
    rows = rows[rows["symbol"].isin(symbols)]
    if start is not None:
        rows = rows[rows["t"] >= start]
    if end is not None:
        rows = rows[rows["t"] <= end]
    rows = rows.sort_values(["symbol", "t"], ascending=[True, sort == "asc"], kind="stable")
    if params.get("page_token"):
        symbol, t_ns = _decode_token(params["page_token"])
        t_values = rows["t"].map(lambda t: t.value)
        later = t_values >= t_ns if sort == "asc" else t_values <= t_ns
        rows = rows[(rows["symbol"] > symbol) | ((rows["symbol"] == symbol) & later)]
    size = min(limit, max_page_size)
    page, rest = rows.iloc[:size], rows.iloc[size:]
    out: dict[str, list[dict[str, Any]]] = {}
    for row in page.itertuples(index=False):
        out.setdefault(row.symbol, []).append(bar_message(row, stream=False))
    token = None if rest.empty else _encode_token(rest.iloc[0]["symbol"], rest.iloc[0]["t"])
    return {"bars": out, "next_page_token": token}


def _auth_error(request: Request, key_id: str, secret_key: str) -> JSONResponse | None:
    key, secret = request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY")
    if not key or not secret:
        return JSONResponse({"code": 40110000, "message": "request is not authorized"}, status_code=401)
    # Constant-time compares: cheap, and the habit matters more than this local server.
    if not (hmac.compare_digest(key, key_id) and hmac.compare_digest(secret, secret_key)):
        return JSONResponse({"code": 40310000, "message": "forbidden"}, status_code=403)
    return None


def create_app(bars: pd.DataFrame, *, start: pd.Timestamp, bars_per_second: float | None = None,
               key_id: str = LOCAL_KEY_ID, secret_key: str = LOCAL_SECRET_KEY, timeframe: str | None = None,
               max_page_size: int = MAX_LIMIT, sim_hooks: bool = True, wait_for_subscriber: bool = False) -> FastAPI:
    """The server app; `app.state.market` is the `ReplayMarket` (tests may read it). With
    `wait_for_subscriber`, the paced clock starts only once a stream client has subscribed to bars, so a
    trading service that starts after the server sees the whole replay (as a demo should)."""
    if bars_per_second is not None and bars_per_second <= 0:
        raise MarketDataServerError(f"bars_per_second must be > 0 or None, got {bars_per_second}")
    if not 1 <= max_page_size <= MAX_LIMIT:
        raise MarketDataServerError(f"max_page_size must be in 1..{MAX_LIMIT}, got {max_page_size}")
    market = ReplayMarket(bars, start, timeframe)

    async def pace() -> None:
        assert bars_per_second is not None
        while wait_for_subscriber and not any(c.authenticated and c.bars for c in market.clients):
            await asyncio.sleep(0.05)
        while market.remaining:
            await asyncio.sleep(1.0 / bars_per_second)
            market.advance(1)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(pace()) if bars_per_second else None
        yield
        if task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="marlops local Alpaca market data", lifespan=lifespan)
    app.state.market = market

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/v2/stocks/bars")
    async def stock_bars(request: Request) -> JSONResponse:
        denied = _auth_error(request, key_id, secret_key)
        if denied:
            return denied
        params = dict(request.query_params)
        market.requests.append(params)
        try:
            return JSONResponse(_bars_page(market, params, max_page_size))
        except _BadRequest as exc:
            return JSONResponse({"code": exc.status * 100000, "message": exc.message}, status_code=exc.status)

    @app.get("/v2/stocks/bars/latest")
    async def latest_bars(request: Request) -> JSONResponse:
        denied = _auth_error(request, key_id, secret_key)
        if denied:
            return denied
        symbols = [s.strip() for s in request.query_params.get("symbols", "").split(",") if s.strip()]
        if not symbols:
            return JSONResponse({"code": 40000000, "message": "missing symbols"}, status_code=400)
        rows = market.released()
        rows = rows[rows["symbol"].isin(symbols)].groupby("symbol").tail(1)
        return JSONResponse({"bars": {r.symbol: bar_message(r, stream=False) for r in rows.itertuples(index=False)}})

    if sim_hooks:
        # The hooks move the market every client sees: the same keys as REST (401 missing, 403 wrong).
        @app.post("/_sim/advance", response_model=None)
        async def sim_advance(request: Request, steps: int = 1) -> dict[str, Any] | JSONResponse:
            denied = _auth_error(request, key_id, secret_key)
            if denied:
                return denied
            return {"advanced": market.advance(steps), **_state(market)}

        @app.post("/_sim/withhold", response_model=None)
        async def sim_withhold(request: Request) -> dict[str, Any] | JSONResponse:
            denied = _auth_error(request, key_id, secret_key)
            if denied:
                return denied
            body = await request.json()
            market.withheld = set(body.get("symbols", []))
            return {"withheld": sorted(market.withheld)}

        @app.get("/_sim/state", response_model=None)
        async def sim_state(request: Request) -> dict[str, Any] | JSONResponse:
            denied = _auth_error(request, key_id, secret_key)
            if denied:
                return denied
            return _state(market)

    @app.websocket("/v2/{feed}")
    async def stream(websocket: WebSocket, feed: str) -> None:
        await _serve_stream(websocket, feed, market, key_id, secret_key)

    return app


def _state(market: ReplayMarket) -> dict[str, Any]:
    present = market.present
    return {"present": None if present is None else present.isoformat(), "remaining": market.remaining,
            "timeframe": market.timeframe,
            "subscribers": sum(1 for c in market.clients if c.authenticated and c.bars)}


async def _serve_stream(ws: WebSocket, feed: str, market: ReplayMarket, key_id: str, secret_key: str) -> None:
    await ws.accept()
    client = _StreamClient(msgpack="msgpack" in ws.headers.get("content-type", ""))

    async def send(messages: list[dict[str, Any]]) -> None:
        if client.msgpack:
            await ws.send_bytes(msgpack.packb(messages, datetime=False))
        else:
            await ws.send_text(json.dumps([_jsonable(m) for m in messages]))

    if feed not in STREAM_FEEDS:
        await send([{"T": "error", "code": 404, "msg": f"unknown feed {feed!r}"}])
        await ws.close()
        return
    await send([{"T": "success", "msg": "connected"}])
    # One sender per connection, so pushes from the replay clock never interleave with acks.
    sender = asyncio.create_task(_drain(client, send))
    try:
        market.clients.add(client)
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            try:
                raw = frame.get("bytes")
                request = msgpack.unpackb(raw) if raw is not None else json.loads(frame.get("text") or "")
                action = request.get("action")
            except (ValueError, AttributeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
                client.queue.put_nowait([{"T": "error", "code": 400, "msg": "invalid syntax"}])
                continue
            client.queue.put_nowait(_handle(client, request, action, key_id, secret_key))
    finally:
        market.clients.discard(client)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


def _handle(client: _StreamClient, request: dict[str, Any], action: Any, key_id: str,
            secret_key: str) -> list[dict[str, Any]]:
    if action == "auth":
        ok = (hmac.compare_digest(str(request.get("key", "")), key_id)
              and hmac.compare_digest(str(request.get("secret", "")), secret_key))
        client.authenticated = ok
        return [{"T": "success", "msg": "authenticated"}] if ok else [{"T": "error", "code": 402, "msg": "auth failed"}]
    if action in ("subscribe", "unsubscribe"):
        if not client.authenticated:
            return [{"T": "error", "code": 401, "msg": "not authenticated"}]
        symbols = set(request.get("bars") or [])
        client.bars = client.bars | symbols if action == "subscribe" else client.bars - symbols
        # Only bars are served; the other channels are acknowledged empty, as Alpaca lists them all.
        return [{"T": "subscription", **{c: (sorted(client.bars) if c == "bars" else []) for c in STREAM_CHANNELS}}]
    return [{"T": "error", "code": 400, "msg": "invalid syntax"}]


async def _drain(client: _StreamClient, send: Any) -> None:
    while True:
        await send(await client.queue.get())


def _jsonable(message: dict[str, Any]) -> dict[str, Any]:
    t = message.get("t")
    if isinstance(t, msgpack.Timestamp):
        return {**message, "t": _rfc3339(pd.Timestamp(t.to_unix_nano(), tz="UTC"))}
    return message


# ---------------------------------------------------------------- running it


def keys_from_env() -> tuple[str, str]:
    """APCA_API_KEY_ID / APCA_API_SECRET_KEY, defaulting to the documented local pair."""
    return os.environ.get("APCA_API_KEY_ID", LOCAL_KEY_ID), os.environ.get("APCA_API_SECRET_KEY", LOCAL_SECRET_KEY)


def build_app_from_spec(source: str, *, warmup_bars: int = 64, bars_per_second: float | None = None,
                        n_symbols: int | None = None, n_days: int | None = None, max_page_size: int = MAX_LIMIT,
                        key_id: str | None = None, secret_key: str | None = None,
                        wait_for_subscriber: bool = False) -> FastAPI:
    """Load `source` (synthetic:<preset> or a path) and start the replay after `warmup_bars` timestamps."""
    from market_data.source import load_market

    bars = load_market(source, n_symbols=n_symbols, n_days=n_days)
    stamps = sorted(pd.to_datetime(bars["timestamp"], utc=True).unique())
    if warmup_bars < 0 or warmup_bars >= len(stamps):
        raise MarketDataServerError(f"warmup_bars must be in 0..{len(stamps) - 1} for {source!r}, got {warmup_bars}")
    env_key, env_secret = keys_from_env()
    return create_app(bars, start=pd.Timestamp(stamps[warmup_bars]), bars_per_second=bars_per_second,
                      key_id=key_id or env_key, secret_key=secret_key or env_secret, max_page_size=max_page_size,
                      wait_for_subscriber=wait_for_subscriber)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default="synthetic:planted-alpha", help="synthetic:<preset> or a bars file/dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5200)
    parser.add_argument("--bars-per-second", type=float, default=None,
                        help="replay pace; omit to step only on POST /_sim/advance")
    parser.add_argument("--warmup-bars", type=int, default=64, help="timestamps released as history at start")
    parser.add_argument("--symbols", type=int, default=None, help="trading symbols (synthetic size / file subset)")
    parser.add_argument("--days", type=int, default=None, help="timestamps (synthetic size / most recent of files)")
    parser.add_argument("--max-page-size", type=int, default=MAX_LIMIT, help="bars per REST page at most")
    parser.add_argument("--wait-for-subscriber", action="store_true",
                        help="start the paced clock only when a stream client subscribes to bars")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    app = build_app_from_spec(args.source, warmup_bars=args.warmup_bars, bars_per_second=args.bars_per_second,
                              n_symbols=args.symbols, n_days=args.days, max_page_size=args.max_page_size,
                              wait_for_subscriber=args.wait_for_subscriber)
    market: ReplayMarket = app.state.market
    # Never the keys: only where to point the clients.
    logger.info("market data on http://%s:%d (stream ws://%s:%d/v2/iex), %s bars, present %s, %d to replay",
                args.host, args.port, args.host, args.port, market.timeframe, market.present, market.remaining)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m market_data.alpaca_server", description=__doc__.split("\n")[0])
    add_server_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(parser.parse_args(argv))


class MarketDataServerProcess:
    """The server in a subprocess (tests, `make up`): `with MarketDataServerProcess(port) as srv: srv.url`.

    Keys travel in the child's environment (APCA_API_KEY_ID / APCA_API_SECRET_KEY), never argv."""

    def __init__(self, port: int, source: str = "synthetic:planted-alpha", *, host: str = "127.0.0.1",
                 warmup_bars: int = 64, bars_per_second: float | None = None, n_symbols: int | None = None,
                 n_days: int | None = None, key_id: str = LOCAL_KEY_ID, secret_key: str = LOCAL_SECRET_KEY,
                 startup_timeout_s: float = 60.0) -> None:
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"
        self.stream_url = f"ws://{host}:{port}/v2/iex"
        self._argv = [sys.executable, "-m", "market_data.alpaca_server", "--source", source, "--host", host,
                      "--port", str(port), "--warmup-bars", str(warmup_bars)]
        for flag, value in (("--bars-per-second", bars_per_second), ("--symbols", n_symbols), ("--days", n_days)):
            if value is not None:
                self._argv += [flag, str(value)]
        self._env = {**os.environ, "APCA_API_KEY_ID": key_id, "APCA_API_SECRET_KEY": secret_key}
        self._timeout = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MarketDataServerProcess:
        import httpx

        self._proc = subprocess.Popen(self._argv, env=self._env)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise MarketDataServerError(f"market-data server exited with {self._proc.returncode} before ready")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise MarketDataServerError(f"market-data server on {self.url} not ready after {self._timeout:.0f}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout_s)

    def __enter__(self) -> MarketDataServerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


if __name__ == "__main__":
    raise SystemExit(main())
