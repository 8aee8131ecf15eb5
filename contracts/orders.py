from datetime import datetime
from enum import StrEnum

from pydantic import Field

from contracts.base import Frozen


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


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
