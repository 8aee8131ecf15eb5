"""A local Alpaca-compatible paper exchange: the subset of Alpaca's trading REST API that
alpaca-py's TradingClient needs to trade market orders, plus simulator controls under /_sim.

    python -m paper_exchange --host 127.0.0.1 --port 5100 --initial-cash 1000000 \
        [--faults plan.json]

Errors are Alpaca's shape, `{"code": <int>, "message": <str>}`, so alpaca-py's APIError parses them.
Every authenticated response carries X-RateLimit-Limit/Remaining/Reset; past the limit, 429.

Simulator controls (authenticated like the trading API, never subject to injected faults):
  POST /_sim/prices {"prices": {...}}     POST /_sim/config {"fill_ratio", "max_leverage", "market_open"}
  GET  /_sim/state                         GET  /_sim/orders (every order ever accepted, oldest first)
  POST /_sim/fill_open (fill the remainder of open orders at the current price)
  POST|GET|DELETE /_sim/faults (the fault plan: paper_exchange.faults)
"""

import argparse
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.errors import ConfigError
from contracts.logs import configure_logging
from contracts.paper_account import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET
from paper_exchange.book import (
    OPEN_STATUSES,
    PaperBook,
    PaperOrder,
    PaperRejection,
)
from paper_exchange.faults import (
    FILL_RATIO_STATE,
    FaultInjector,
    FaultPlan,
    apply_fault,
)
from paper_exchange.wire import (
    account_json,
    clock_json,
    order_json,
    position_json,
)
from gateway.brokers.rate_limit import FixedWindowRateLimit

logger = logging.getLogger(__name__)

DEFAULT_RATE_LIMIT_PER_MIN = 10_000  # generous: replays send many orders per minute


def _error(status_code: int, code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status_code, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class OrderBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    symbol: str = Field(min_length=1)
    qty: float | None = None
    notional: float | None = None
    side: Literal["buy", "sell"]
    type: str = "market"
    time_in_force: Literal["day", "gtc", "opg", "cls", "ioc", "fok"] = "day"
    client_order_id: str | None = Field(default=None, min_length=1, max_length=128)
    order_class: str | None = None
    extended_hours: bool | None = None


class PricesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prices: dict[str, float]

    @field_validator("prices")
    @classmethod
    def _valid_prices(cls, prices: dict[str, float]) -> dict[str, float]:
        bad = [f"{sym!r}: {px!r}" for sym, px in prices.items() if not sym or not (math.isfinite(px) and px > 0)]
        if bad:
            raise ValueError("prices must be finite and > 0 for a non-empty symbol; bad entries: " + ", ".join(bad))
        return prices


class SimConfigBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fill_ratio: float | None = Field(default=None, gt=0, le=1)
    max_leverage: float | None = Field(default=None, gt=0)
    # False: /v2/clock reports the market closed and orders are refused unless extended_hours.
    market_open: bool | None = None


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PaperRejection(422, 40010001, f"{name} must be an ISO-8601 timestamp, got {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _select_orders(
    orders: list[PaperOrder],
    *,
    status: str,
    limit: int,
    after: datetime | None,
    until: datetime | None,
    direction: str,
    symbols: str | None,
    side: str | None,
) -> list[PaperOrder]:
    wanted = {s.strip() for s in symbols.split(",") if s.strip()} if symbols else None
    selected = [
        o for o in orders
        if (status == "all" or (o.status in OPEN_STATUSES) == (status == "open"))
        and (after is None or o.created_at > after)
        and (until is None or o.created_at < until)
        and (wanted is None or o.symbol in wanted)
        and (side is None or o.side == side)
    ]
    if direction == "desc":
        selected.reverse()
    return selected[:limit]


def create_paper_exchange_app(
    *,
    initial_cash: float = 1_000_000.0,
    key_id: str = LOCAL_PAPER_KEY_ID,
    secret_key: str = LOCAL_PAPER_SECRET,
    seed: int = 0,
    rate_limit_per_min: int = DEFAULT_RATE_LIMIT_PER_MIN,
    faults: FaultPlan | None = None,
) -> FastAPI:
    book = PaperBook(initial_cash=initial_cash, seed=seed)
    limiter = FixedWindowRateLimit(rate_limit_per_min)
    injector = FaultInjector(faults)
    app = FastAPI(title="marlops paper exchange (Alpaca-compatible subset)")
    app.state.book = book
    app.state.faults = injector

    @app.middleware("http")
    async def _auth_and_rate_limit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        got_key = request.headers.get("APCA-API-KEY-ID")
        got_secret = request.headers.get("APCA-API-SECRET-KEY")
        if not got_key or not got_secret:
            return _error(401, 40110000, "request is not authorized: APCA-API-KEY-ID and APCA-API-SECRET-KEY required")
        if got_key != key_id or got_secret != secret_key:
            return _error(403, 40310000, "forbidden: unknown key id or wrong secret")
        window = limiter.hit(got_key)
        if not window.allowed:
            return _error(429, 42910000, "rate limit exceeded", headers=window.headers())
        rule = injector.choose(request.method, request.url.path)
        if rule is None:
            response = await call_next(request)
        else:
            logger.info("injecting %s into %s %s", rule.kind, request.method, request.url.path)
            with injector.serving():
                response = await apply_fault(rule, request, call_next, rate_limit=limiter.limit)
        for name, value in window.headers().items():
            response.headers.setdefault(name, value)  # an injected 429 keeps its own (spent) budget
        return response

    @app.exception_handler(PaperRejection)
    async def _rejection(_request: Request, exc: PaperRejection) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, 40010000, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.status_code * 100000, str(exc.detail))

    # ---- trading API (Alpaca v2 subset) ------------------------------------------------------
    @app.get("/v2/account")
    def get_account() -> dict[str, Any]:
        return account_json(book, key_id)

    @app.get("/v2/clock")
    def get_clock() -> dict[str, Any]:
        clock = clock_json(datetime.now(timezone.utc))
        clock["is_open"] = book.market_open
        return clock

    @app.post("/v2/orders")
    def post_order(body: OrderBody, request: Request) -> dict[str, Any]:
        if not book.market_open and not body.extended_hours:
            raise PaperRejection(403, 40310000, "market is closed")
        if body.type != "market":
            raise PaperRejection(422, 40010001, f"order type {body.type!r} not supported: the paper exchange "
                                                "fills market orders only")
        if body.order_class not in (None, "", "simple"):
            raise PaperRejection(422, 40010001, f"order_class {body.order_class!r} not supported (simple only)")
        if (body.qty is None) == (body.notional is None):
            raise PaperRejection(422, 40010001, "exactly one of qty or notional is required")
        order = book.submit_market(
            symbol=body.symbol, side=body.side, qty=body.qty, notional=body.notional,
            time_in_force=body.time_in_force, client_order_id=body.client_order_id,
            fill_ratio=getattr(request.state, FILL_RATIO_STATE, None),
        )
        logger.info("order %s %s %s %s filled %s @ %s", order.client_order_id, order.side, order.qty,
                    order.symbol, order.filled_qty, order.filled_avg_price)
        return order_json(order)

    @app.get("/v2/orders")
    def get_orders(
        status: Literal["open", "closed", "all"] = "open",
        limit: int = Query(default=50, ge=1, le=500),
        after: str | None = None,
        until: str | None = None,
        direction: Literal["asc", "desc"] = "desc",
        nested: bool | None = None,
        symbols: str | None = None,
        side: Literal["buy", "sell"] | None = None,
    ) -> list[dict[str, Any]]:
        selected = _select_orders(
            book.orders(), status=status, limit=limit, after=_parse_time(after, "after"),
            until=_parse_time(until, "until"), direction=direction, symbols=symbols, side=side,
        )
        return [order_json(o) for o in selected]

    @app.get("/v2/orders:by_client_order_id")
    def get_order_by_client_id(client_order_id: str) -> dict[str, Any]:
        order = book.order_by_client_id(client_order_id)
        if order is None:
            raise PaperRejection(404, 40410000, f"order not found for client_order_id {client_order_id!r}")
        return order_json(order)

    def _order_id(raw: str) -> uuid.UUID:
        try:
            return uuid.UUID(raw)
        except ValueError as exc:
            raise PaperRejection(404, 40410000, f"order not found: {raw!r} is not an order id") from exc

    @app.get("/v2/orders/{order_id}")
    def get_order(order_id: str) -> dict[str, Any]:
        order = book.order(_order_id(order_id))
        if order is None:
            raise PaperRejection(404, 40410000, "order not found")
        return order_json(order)

    @app.delete("/v2/orders/{order_id}", status_code=204)
    def cancel_order(order_id: str) -> Response:
        book.cancel(_order_id(order_id))
        return Response(status_code=204)

    @app.get("/v2/positions")
    def get_positions() -> list[dict[str, Any]]:
        return [position_json(p, price) for p, price in book.positions()]

    @app.get("/v2/positions/{symbol}")
    def get_position(symbol: str) -> dict[str, Any]:
        found = book.position(symbol)
        if found is None:
            raise PaperRejection(404, 40410000, "position does not exist")
        return position_json(*found)

    # ---- simulator control -------------------------------------------------------------------
    @app.post("/_sim/prices")
    def set_prices(body: PricesBody) -> dict[str, Any]:
        return {"prices": book.set_prices(body.prices)}

    @app.post("/_sim/config")
    def configure(body: SimConfigBody) -> dict[str, Any]:
        book.configure(fill_ratio=body.fill_ratio, max_leverage=body.max_leverage, market_open=body.market_open)
        return book.state()

    @app.get("/_sim/state")
    def sim_state() -> dict[str, Any]:
        return book.state()

    @app.get("/_sim/orders")
    def sim_orders() -> list[dict[str, Any]]:
        # No limit, unlike /v2/orders: audits compare every order the gateway ever sent with these.
        return [order_json(o) for o in book.orders()]

    @app.post("/_sim/fill_open")
    def sim_fill_open() -> dict[str, Any]:
        filled = book.fill_open()
        return {"filled": [order_json(o) for o in filled], "state": book.state()}

    @app.post("/_sim/faults")
    def set_faults(plan: FaultPlan) -> dict[str, Any]:
        injector.install(plan)
        logger.info("fault plan installed: seed %s, %d rule(s)", plan.seed, len(plan.rules))
        return injector.snapshot()

    @app.get("/_sim/faults")
    def get_faults() -> dict[str, Any]:
        return injector.snapshot()

    @app.delete("/_sim/faults")
    def clear_faults() -> dict[str, Any]:
        injector.clear()
        return injector.snapshot()

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paper_exchange",
                                     description="local Alpaca-compatible paper exchange")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5100)
    parser.add_argument("--initial-cash", type=float, default=1_000_000.0)
    parser.add_argument("--key-id", default=LOCAL_PAPER_KEY_ID)
    parser.add_argument("--secret-key", default=LOCAL_PAPER_SECRET)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate-limit-per-min", type=int, default=DEFAULT_RATE_LIMIT_PER_MIN)
    parser.add_argument("--faults", metavar="FILE", default=None,
                        help="JSON fault plan applied at start (see paper_exchange.faults)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    plan = None
    if args.faults is not None:
        try:
            with open(args.faults, encoding="utf-8") as handle:
                plan = FaultPlan.model_validate(json.load(handle))
        except (OSError, ValueError) as exc:  # unreadable, not JSON, or not a valid plan (ValidationError)
            parser.error(f"--faults {args.faults}: {exc}")
    try:  # JSON lines off a terminal (`make up`: a log file), text on one; MARLOPS_LOG_FORMAT overrides
        configure_logging(args.log_level, service="paper-exchange")
    except ConfigError as exc:
        parser.error(str(exc))
    app = create_paper_exchange_app(
        initial_cash=args.initial_cash, key_id=args.key_id, secret_key=args.secret_key, seed=args.seed,
        rate_limit_per_min=args.rate_limit_per_min, faults=plan,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, log_config=None)  # uvicorn's lines too


if __name__ == "__main__":
    main()
