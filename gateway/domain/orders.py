"""From a target weight to a whole-share order, and the order's deterministic client id.

The client order id is a hash of what the order is for (policy version, symbol, bar, intent), so a
retried or replayed request produces the same id and the broker refuses the duplicate instead of
trading twice.
"""

import hashlib
import math

from contracts.orders import OrderSide

CLIENT_ORDER_ID_PREFIX = "mo-"


def format_qty(qty: float) -> str:
    """Canonical text of a quantity (no float noise, no trailing zeros): 10 -> '10', 0.5 -> '0.5'."""
    text = f"{abs(qty):.9f}".rstrip("0").rstrip(".")
    return text or "0"


def intent_text(side: OrderSide, qty: float) -> str:
    return f"{side.value}:{format_qty(qty)}"


def client_order_id(policy_version: str, symbol: str, bar_index: int, intent: str) -> str:
    """`"mo-" + sha256("{policy_version}|{symbol}|{bar_index}|{intent}")[:32]` (35 chars, < Alpaca's 128)."""
    digest = hashlib.sha256(f"{policy_version}|{symbol}|{bar_index}|{intent}".encode()).hexdigest()
    return CLIENT_ORDER_ID_PREFIX + digest[:32]


def target_qty(target_weight: float, equity: float, price: float) -> float:
    """Raw (fractional) shares that hold `target_weight` of `equity` at `price`."""
    if equity <= 0 or not (math.isfinite(price) and price > 0):
        return 0.0
    return target_weight * equity / price


def whole_target_qty(target_weight: float, equity: float, price: float) -> float:
    """Target in whole shares, truncated toward zero so rounding never pushes a position past its cap."""
    raw = target_qty(target_weight, equity, price)
    if raw == 0.0 or not math.isfinite(raw):
        # A denormal price makes the share count overflow: no order is the only sane size.
        return 0.0
    # The epsilon keeps 9.999999999 (float noise for 10) from truncating to 9.
    return float(math.trunc(raw + math.copysign(1e-9, raw)))


def order_delta(target_weight: float, equity: float, price: float, current_qty: float) -> float:
    """Signed quantity that takes `current_qty` to the whole-share target.

    The position after the order is always whole shares; the order itself is whole whenever the
    current position is (a fractional position taken over from the broker is squared off once).
    """
    delta = whole_target_qty(target_weight, equity, price) - current_qty
    return 0.0 if abs(delta) < 1e-9 else delta


def side_of(delta: float) -> OrderSide:
    return OrderSide.BUY if delta > 0 else OrderSide.SELL
