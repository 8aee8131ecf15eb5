"""The paper exchange in the gateway's own process: the gateway's Broker protocol over a PaperBook, no HTTP.

`InProcessBroker` answers what `gateway.brokers.alpaca_broker.AlpacaBroker` answers when it talks to the
HTTP paper exchange (`paper_exchange.app`) over the same book:

- the same checks in the same order (market closed -> 403; the book's own: duplicate client_order_id
  -> 422 "client_order_id must be unique", no price -> 422, insufficient buying power -> 403), raised
  as `gateway.errors.BrokerRejectedError(status_code, message, code)` with the exchange's status,
  Alpaca error code and message;
- the same numbers: the HTTP exchange sends decimals as text rounded to 9 places
  (`paper_exchange.wire.num`) and alpaca-py parses them back, so every qty, price, cash and equity
  here goes through the same rounding;
- the same statuses and times (submitted_at = the book's created_at, filled_at None until filled).

What it has not: faults, rate limits and retries (there is no network to fail). `list_orders` returns
every matching order in one go (the HTTP path pages by submission time).

Thread-safe: the gateway routes from several threads at once; every call holds one lock, so the
market-open check and the submission it guards are one step.
"""

import math
import threading
from datetime import datetime, timezone

from contracts.orders import OrderIntent, OrderSide
from gateway.brokers.base import AccountSnapshot, BrokerPosition, MarketClock, OrderResult
from gateway.errors import BrokerRejectedError
from paper_exchange.book import OPEN_STATUSES, PaperBook, PaperOrder, PaperRejection
from paper_exchange.wire import clock_json, num

MAX_ORDERS_PAGE = 500  # AlpacaBroker's (and Alpaca's) page cap: the same `limit` range is accepted here
_ORDER_STATUSES = ("open", "closed", "all")


def _wire(value: float) -> float:
    """`value` as it reaches a client of the HTTP exchange: 9-decimal text parsed back to a float."""
    return float(num(value))


def order_result(order: PaperOrder) -> OrderResult:
    """The OrderResult AlpacaBroker builds from the exchange's JSON for this order."""
    return OrderResult(
        client_order_id=order.client_order_id,
        broker_order_id=str(order.id),
        symbol=order.symbol,
        side=OrderSide(order.side),
        qty=_wire(order.qty),
        status=order.status,
        filled_qty=_wire(order.filled_qty),
        filled_avg_price=_wire(order.filled_avg_price) if order.filled_avg_price is not None else None,
        submitted_at=order.created_at,
        filled_at=order.filled_at,
    )


def _rejected(exc: PaperRejection) -> BrokerRejectedError:
    return BrokerRejectedError(exc.status_code, exc.message, exc.code)


class InProcessBroker:
    """A Broker (gateway.brokers.base) over `book`, or over a fresh PaperBook(initial_cash, seed) like the
    one `create_paper_exchange_app(initial_cash=..., seed=...)` builds. The book stamps orders with the
    wall clock (it takes no clock), and so does `get_clock`, as the HTTP exchange does."""

    def __init__(self, book: PaperBook | None = None, *, initial_cash: float = 1_000_000.0, seed: int = 0) -> None:
        self.book = book if book is not None else PaperBook(initial_cash=initial_cash, seed=seed)
        self._lock = threading.RLock()

    # ---- simulator control (what POST /_sim/prices does) --------------------------------------
    def set_prices(self, prices: dict[str, float]) -> dict[str, float]:
        """Set last prices (the market); returns every price now known. Refuses what the HTTP exchange
        refuses: an empty symbol or a price that is not finite and > 0 (ValueError; nothing is set)."""
        bad = [f"{sym!r}: {px!r}" for sym, px in prices.items()
               if not sym or not (isinstance(px, int | float) and math.isfinite(px) and px > 0)]
        if bad:
            raise ValueError("prices must be finite and > 0 for a non-empty symbol; bad entries: " + ", ".join(bad))
        with self._lock:
            return self.book.set_prices({sym: float(px) for sym, px in prices.items()})

    # ---- Broker protocol ---------------------------------------------------------------------
    def get_account(self) -> AccountSnapshot:
        with self._lock:
            return AccountSnapshot(cash=_wire(self.book.cash), equity=_wire(self.book.equity()))

    def get_positions(self) -> list[BrokerPosition]:
        with self._lock:
            held = self.book.positions()
        out: list[BrokerPosition] = []
        for position, _price in held:
            qty = abs(_wire(position.qty))
            out.append(BrokerPosition(
                symbol=position.symbol,
                qty=qty if position.qty > 0 else -qty,
                avg_entry_price=_wire(position.avg_entry_price),
            ))
        return out

    def submit_market_order(self, intent: OrderIntent) -> OrderResult:
        with self._lock:
            if not self.book.market_open:
                raise BrokerRejectedError(403, "market is closed", 40310000)
            try:
                order = self.book.submit_market(
                    symbol=intent.symbol,
                    side=intent.side.value,
                    qty=intent.qty,
                    notional=None,
                    time_in_force="day",
                    client_order_id=intent.client_order_id,
                )
            except PaperRejection as exc:
                raise _rejected(exc) from exc
            return order_result(order)

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None:
        with self._lock:
            order = self.book.order_by_client_id(client_order_id)
        return order_result(order) if order is not None else None

    def list_orders(
        self, *, status: str = "all", after: datetime | None = None, limit: int = MAX_ORDERS_PAGE
    ) -> list[OrderResult]:
        """Every order (status "open", "closed" or "all") submitted strictly after `after` (a naive time
        is UTC, as the exchange reads it), oldest first. `limit` is checked like AlpacaBroker's page
        size (1..500); there are no pages here, so every match comes back."""
        if status not in _ORDER_STATUSES:
            raise ValueError(f"status must be one of {sorted(_ORDER_STATUSES)}, got {status!r}")
        if not 1 <= limit <= MAX_ORDERS_PAGE:
            raise ValueError(f"limit must be within 1..{MAX_ORDERS_PAGE}, got {limit}")
        if after is not None and after.tzinfo is None:
            after = after.replace(tzinfo=timezone.utc)
        with self._lock:
            orders = self.book.orders()
        return [
            order_result(o) for o in orders
            if (status == "all" or (o.status in OPEN_STATUSES) == (status == "open"))
            and (after is None or o.created_at > after)
        ]

    def get_clock(self) -> MarketClock:
        with self._lock:
            clock = clock_json(datetime.now(timezone.utc))
            is_open = self.book.market_open
        return MarketClock(
            is_open=is_open,
            timestamp=datetime.fromisoformat(clock["timestamp"]),
            next_open=datetime.fromisoformat(clock["next_open"]),
            next_close=datetime.fromisoformat(clock["next_close"]),
        )
