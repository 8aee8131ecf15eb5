"""What the gateway needs from a broker, as plain values."""

from datetime import datetime
from typing import Protocol

from pydantic import Field

from contracts.base import Frozen
from contracts.orders import OrderIntent, OrderSide

# Order states after which nothing more will fill (Alpaca's names).
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"filled", "canceled", "expired", "rejected", "replaced", "done_for_day", "stopped", "suspended"}
)


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
    status: str  # Alpaca order status: new, accepted, partially_filled, filled, canceled, rejected...
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    submitted_at: datetime
    filled_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Broker(Protocol):
    def get_account(self) -> AccountSnapshot: ...

    def get_positions(self) -> list[BrokerPosition]: ...

    def submit_market_order(self, intent: OrderIntent) -> OrderResult: ...

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None: ...
