from datetime import datetime
from enum import StrEnum

from pydantic import Field

from contracts.base import Frozen


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderStatus(StrEnum):
    """Where an order stands, as the audit trail and the gateway's answers say it.

    The gateway's own statuses come first; the rest are Alpaca's order statuses (the broker's word)."""

    INTENT = "intent"  # committed with its timestep's decisions, not yet sent
    NOT_SENT = "not_sent"  # never reached the broker (kill switch while routing, restart before the send)
    NOT_RECEIVED = "not_received"  # a submit failed and the broker has no order with this client_order_id
    UNKNOWN = "unknown"  # in doubt (timeout, 5xx): looked up by client_order_id later
    DUPLICATE = "duplicate"  # already at the broker (sent by an earlier run): not sent again
    RECOVERED = "recovered"  # found at the broker after a restart
    NEW = "new"
    ACCEPTED = "accepted"
    PENDING_NEW = "pending_new"
    ACCEPTED_FOR_BIDDING = "accepted_for_bidding"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    DONE_FOR_DAY = "done_for_day"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REPLACED = "replaced"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    STOPPED = "stopped"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    CALCULATED = "calculated"
    HELD = "held"


# Broker statuses after which nothing more will fill.
TERMINAL_ORDER_STATUSES: frozenset[OrderStatus] = frozenset({
    OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED, OrderStatus.REPLACED,
    OrderStatus.DONE_FOR_DAY, OrderStatus.STOPPED, OrderStatus.SUSPENDED,
})
# Final answers meaning the order never traded at the broker.
NOT_AT_BROKER_STATUSES: frozenset[OrderStatus] = frozenset(
    {OrderStatus.NOT_SENT, OrderStatus.REJECTED, OrderStatus.NOT_RECEIVED})


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class OrderIntent(Frozen):
    """An order the gateway intends to send. `client_order_id` is deterministic."""

    client_order_id: str = Field(min_length=1, max_length=128)
    symbol: str
    side: OrderSide
    qty: float = Field(gt=0)
    reference_price: float = Field(gt=0)
    policy_version: str
    bar_index: int
    timestep: datetime
    estimated_cost: float = 0.0


class RiskDecision(Frozen):
    """Outcome of the risk checks for one symbol. A denial is data, with an upper-case reason code."""

    symbol: str
    approved: bool
    reason_code: str | None = None
    detail: str = ""
    target_weight: float = 0.0


class Fill(Frozen):
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: OrderSide
    qty: float = Field(gt=0)
    price: float = Field(gt=0)
    filled_at: datetime
