"""What the gateway needs from a broker, as plain values."""

from datetime import datetime
from typing import Protocol

from pydantic import Field

from contracts.base import Frozen
from contracts.orders import TERMINAL_ORDER_STATUSES, OrderIntent, OrderSide, OrderStatus


class AccountSnapshot(Frozen):
    cash: float
    equity: float


class BrokerPosition(Frozen):
    symbol: str
    qty: float  # < 0 is short
    avg_entry_price: float = Field(gt=0)


class OrderResult(Frozen):
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: OrderSide
    qty: float
    status: OrderStatus  # Alpaca's order status: new, accepted, partially_filled, filled, canceled, rejected...
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    submitted_at: datetime
    filled_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_ORDER_STATUSES

    @property
    def remaining_qty(self) -> float:
        """What is still to fill: > 0 for an open partial fill (status partially_filled, not terminal)."""
        return max(0.0, self.qty - self.filled_qty)


class MarketClock(Frozen):
    """The broker's market clock: is the market open now, and when it next opens and closes."""

    is_open: bool
    timestamp: datetime
    next_open: datetime
    next_close: datetime


class Broker(Protocol):
    def get_account(self) -> AccountSnapshot: ...

    def get_positions(self) -> list[BrokerPosition]: ...

    def submit_market_order(self, intent: OrderIntent) -> OrderResult: ...

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None: ...

    def list_orders(
        self, *, status: str = "all", after: datetime | None = None, limit: int = 500
    ) -> list[OrderResult]:
        """Every order (status "open", "closed" or "all") submitted after `after`, oldest first;
        `limit` is the page size, all pages are fetched."""
        ...

    def get_clock(self) -> MarketClock: ...
