"""The broker adapter on alpaca-py's real TradingClient (Alpaca paper/live, or the local paper exchange).

alpaca-py builds every URL as `url_override + "/" + "v2" + path`, so `base_url` is the server root
(`http://127.0.0.1:5100`, `https://paper-api.alpaca.markets`), never `.../v2`.

Every call goes through one RetryPolicy (gateway.brokers.retry); alpaca-py's own 429 retry (3 tries,
3 s apart, invisible to us) is switched off so that the policy is the only one.
"""

import json
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, cast

import requests
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as AlpacaSide
from alpaca.trading.enums import PositionSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Clock, Order, Position, TradeAccount
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest
from requests.adapters import HTTPAdapter

from contracts.orders import OrderIntent, OrderSide
from gateway.brokers.base import (
    AccountSnapshot,
    BrokerPosition,
    MarketClock,
    OrderResult,
)
from gateway.brokers.rate_limit import RateLimitGovernor
from gateway.brokers.retry import RetryPolicy
from gateway.errors import (
    BrokerConfigError,
    BrokerRejectedError,
    BrokerUnavailableError,
)
from gateway.settings import RetrySettings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# What Alpaca (and the paper exchange) answer, HTTP 422, to a second order with a known client_order_id.
DUPLICATE_CLIENT_ORDER_ID = "client_order_id must be unique"
MAX_ORDERS_PAGE = 500  # Alpaca's cap on GET /v2/orders?limit=
_ORDER_STATUS_QUERY = {"open": QueryOrderStatus.OPEN, "closed": QueryOrderStatus.CLOSED, "all": QueryOrderStatus.ALL}


def normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BrokerConfigError(f"broker base URL must start with http:// or https://, got {base_url!r}")
    if url.endswith("/v2"):
        raise BrokerConfigError(
            f"broker base URL must be the server root without '/v2' (alpaca-py appends it), got {base_url!r}"
        )
    return url


class _DefaultTimeoutAdapter(HTTPAdapter):
    """requests has no session-wide timeout and alpaca-py passes none: without this a hung broker hangs us."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, **kwargs)


def _api_error(exc: APIError) -> BrokerRejectedError:
    code: int | None = None
    message = str(exc)
    try:
        body = json.loads(str(exc))
        if isinstance(body, dict):
            message = str(body.get("message", message))
            code = int(body["code"]) if "code" in body else None
    except (ValueError, TypeError):
        pass  # not JSON (a proxy's HTML page...): keep the raw text as the message
    return BrokerRejectedError(exc.status_code, message, code)


def is_duplicate_client_order_id(exc: BrokerRejectedError) -> bool:
    return exc.status_code == 422 and DUPLICATE_CLIENT_ORDER_ID in exc.message


def order_result(order: Order) -> OrderResult:
    side = OrderSide(order.side.value if order.side is not None else "buy")
    return OrderResult(
        client_order_id=order.client_order_id,
        broker_order_id=str(order.id),
        symbol=order.symbol or "",
        side=side,
        qty=float(order.qty or 0.0),
        status=order.status.value,
        filled_qty=float(order.filled_qty or 0.0),
        filled_avg_price=float(order.filled_avg_price) if order.filled_avg_price not in (None, "") else None,
        submitted_at=order.submitted_at,
        filled_at=order.filled_at,
    )


class AlpacaBroker:
    def __init__(
        self,
        base_url: str,
        key_id: str,
        secret_key: str,
        *,
        timeout_s: float = 10.0,
        rate_limit_reserve: int = 1,
        max_throttle_wait_s: float = 60.0,
        governor: RateLimitGovernor | None = None,
        retry: RetrySettings | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """`retry` None = one attempt per call (no retry). `sleep` replaces time.sleep in the retry
        policy's waits (tests)."""
        self.base_url = normalize_base_url(base_url)
        self._client = TradingClient(api_key=key_id, secret_key=secret_key, paper=True, url_override=self.base_url)
        self.rate_limit = governor or RateLimitGovernor(reserve=rate_limit_reserve, max_wait_s=max_throttle_wait_s)
        settings = retry if retry is not None else RetrySettings(max_attempts=1)
        self.retry = RetryPolicy(settings, sleep) if sleep is not None else RetryPolicy(settings)
        # RESTClient._request loops `while retry >= 0` and raises RetryException only while retry > 0:
        # 0 attempts left and no codes = exactly one request, every error surfaces as APIError.
        for name, value in (("_retry", 0), ("_retry_wait", 0), ("_retry_codes", [])):
            if not hasattr(self._client, name):
                logger.warning("alpaca-py TradingClient has no %s: its own retries may stack on ours", name)
            setattr(self._client, name, value)
        # alpaca-py exposes neither timeouts nor response headers; both need its requests.Session.
        session = getattr(self._client, "_session", None)
        if isinstance(session, requests.Session):
            adapter = _DefaultTimeoutAdapter(timeout_s)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.hooks["response"].append(self._observe_response)
        else:
            logger.warning("alpaca-py TradingClient has no requests.Session at ._session: "
                           "no request timeout and no rate-limit pacing")

    def _observe_response(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        self.rate_limit.observe(response.headers)

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        return self.retry.call(what, lambda: self._once(what, fn))

    def _once(self, what: str, fn: Callable[[], _T]) -> _T:
        self.rate_limit.before_request()
        try:
            return fn()
        except APIError as exc:
            error = _api_error(exc)
            logger.warning("broker %s: %s", what, error)
            raise error from exc
        except requests.RequestException as exc:
            raise BrokerUnavailableError(f"broker {self.base_url} unreachable during {what}: {exc}") from exc

    def get_account(self) -> AccountSnapshot:
        account = cast(TradeAccount, self._call("get_account", self._client.get_account))
        return AccountSnapshot(cash=float(account.cash or 0.0), equity=float(account.equity or 0.0))

    def get_positions(self) -> list[BrokerPosition]:
        positions = cast(list[Position], self._call("get_positions", self._client.get_all_positions))
        out: list[BrokerPosition] = []
        for p in positions:
            qty = abs(float(p.qty))
            out.append(BrokerPosition(
                symbol=p.symbol,
                qty=-qty if p.side == PositionSide.SHORT else qty,
                avg_entry_price=float(p.avg_entry_price),
            ))
        return out

    def submit_market_order(self, intent: OrderIntent) -> OrderResult:
        request = MarketOrderRequest(
            symbol=intent.symbol,
            qty=intent.qty,
            side=AlpacaSide.BUY if intent.side == OrderSide.BUY else AlpacaSide.SELL,
            time_in_force=TimeInForce.DAY,
            client_order_id=intent.client_order_id,
        )
        what = f"submit {intent.client_order_id}"
        attempts = 0

        def attempt() -> Order:
            nonlocal attempts
            attempts += 1
            try:
                return cast(Order, self._once(what, lambda: self._client.submit_order(request)))
            except BrokerRejectedError as exc:
                if attempts == 1 or not is_duplicate_client_order_id(exc):
                    raise  # on the first attempt a duplicate is someone else's order: the caller decides
                # An earlier attempt of this very call reached the broker (its answer was lost): that is our order.
                try:
                    landed = cast(Order, self._once(
                        f"look up {intent.client_order_id}",
                        lambda: self._client.get_order_by_client_id(intent.client_order_id),
                    ))
                except BrokerRejectedError as lookup:
                    if lookup.status_code == 404:
                        raise exc from lookup  # the broker says duplicate yet knows no such order: its word
                    raise
                if (landed.symbol, landed.side, float(landed.qty or 0.0)) != (request.symbol, request.side,
                                                                              float(intent.qty)):
                    raise exc  # the id is taken by a different order: not an earlier attempt of ours
                logger.warning("broker %s: attempt %d found the order already placed by an earlier attempt "
                               "(broker id %s, status %s)", what, attempts, landed.id, landed.status.value)
                return landed

        return order_result(self.retry.call(what, attempt))

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None:
        try:
            order = self._call(
                f"get order {client_order_id}", lambda: self._client.get_order_by_client_id(client_order_id)
            )
        except BrokerRejectedError as exc:
            if exc.status_code == 404:
                return None
            raise
        return order_result(cast(Order, order))

    def list_orders(
        self, *, status: str = "all", after: datetime | None = None, limit: int = MAX_ORDERS_PAGE
    ) -> list[OrderResult]:
        """Every order submitted after `after` (all of them when None), oldest first. `limit` is the
        page size (1..500, Alpaca's cap); pages follow each other by submission time until one comes
        back short."""
        query = _ORDER_STATUS_QUERY.get(status)
        if query is None:
            raise ValueError(f"status must be one of {sorted(_ORDER_STATUS_QUERY)}, got {status!r}")
        if not 1 <= limit <= MAX_ORDERS_PAGE:
            raise ValueError(f"limit must be within 1..{MAX_ORDERS_PAGE}, got {limit}")
        seen: set[str] = set()
        out: list[OrderResult] = []
        cursor = after
        while True:
            request = GetOrdersRequest(status=query, limit=limit, after=cursor, direction=Sort.ASC)
            page = cast(list[Order], self._call("list orders", partial(self._client.get_orders, request)))
            fresh = [order_result(o) for o in page if str(o.id) not in seen]
            seen.update(r.broker_order_id for r in fresh)
            out.extend(fresh)
            if len(page) < limit:
                return out
            if not fresh:
                # A full page of orders we already have: more than `limit` share one submission time
                # and `after` (strictly later) cannot step past them.
                logger.warning("list orders: stopped paging at %s: over %d orders share that submission time",
                               cursor, limit)
                return out
            cursor = max(r.submitted_at for r in fresh)

    def get_clock(self) -> MarketClock:
        clock = cast(Clock, self._call("get_clock", self._client.get_clock))
        return MarketClock(is_open=clock.is_open, timestamp=clock.timestamp, next_open=clock.next_open,
                           next_close=clock.next_close)
