"""Hard guardrails. Each returns data (an adjusted target and a reason code), never raises.

Reason codes (upper case, stable: dashboards and alerts key on them):
  TRADING_HALTED       kill switch on: nothing is traded, not even reductions
  TRADING_REDUCING     reduce-only state: increases are cut back to the current position
  DEFENSIVE_MODE       defensive directive: same as reduce-only, from the master agent
  NO_PRICE             the decision's price is unusable (not finite or not > 0)
  ORDER_PENDING        an earlier order for the symbol is still open at the broker: no new order
                       until it completes, so an unfilled remainder is never ordered twice
  NON_POSITIVE_EQUITY  equity <= 0: weights are meaningless, nothing is traded
  PER_SYMBOL_CAP       |target weight| above the per-symbol cap: clipped to the cap
  MAX_GROSS_LEVERAGE   the timestep would take gross exposure above the limit: every exposure
                       increase is scaled down by one common factor (reductions are never scaled);
                       with no headroom left the increases are denied
  BELOW_MIN_NOTIONAL   the order's notional is below the minimum: approved, but no order is sent

A guardrail that cuts a change back only partly leaves the decision approved with the reason code
(a clip); one that leaves nothing of the requested change denies it.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contracts.orders import TradingState
from gateway.domain.overlay import DEFENSIVE_MODE, reduce_only

TRADING_HALTED = "TRADING_HALTED"
TRADING_REDUCING = "TRADING_REDUCING"
NO_PRICE = "NO_PRICE"
ORDER_PENDING = "ORDER_PENDING"
NON_POSITIVE_EQUITY = "NON_POSITIVE_EQUITY"
PER_SYMBOL_CAP = "PER_SYMBOL_CAP"
MAX_GROSS_LEVERAGE = "MAX_GROSS_LEVERAGE"
BELOW_MIN_NOTIONAL = "BELOW_MIN_NOTIONAL"

REASON_CODES: tuple[str, ...] = (
    TRADING_HALTED,
    TRADING_REDUCING,
    DEFENSIVE_MODE,
    NO_PRICE,
    ORDER_PENDING,
    NON_POSITIVE_EQUITY,
    PER_SYMBOL_CAP,
    MAX_GROSS_LEVERAGE,
    BELOW_MIN_NOTIONAL,
)

_EPS = 1e-12


def price_is_usable(price: float | None) -> bool:
    return price is not None and math.isfinite(price) and price > 0


def apply_trading_state(state: TradingState, current_weight: float, target_weight: float) -> tuple[float, str | None]:
    """Target allowed by the trading state, and the reason code when it changed the target."""
    if state == TradingState.HALTED:
        return current_weight, TRADING_HALTED
    if state == TradingState.REDUCING:
        allowed, clipped = reduce_only(current_weight, target_weight)
        return allowed, TRADING_REDUCING if clipped else None
    return target_weight, None


def clip_to_cap(target_weight: float, per_symbol_cap: float) -> tuple[float, str | None]:
    if abs(target_weight) <= per_symbol_cap + _EPS:
        return target_weight, None
    return math.copysign(per_symbol_cap, target_weight), PER_SYMBOL_CAP


def is_below_min_notional(qty: float, price: float, min_order_notional: float) -> bool:
    return qty != 0.0 and abs(qty) * price < min_order_notional


@dataclass(frozen=True)
class ExposureLeg:
    """One symbol's position value now and after its planned order (signed notionals)."""

    symbol: str
    current: float
    planned: float

    @property
    def kept(self) -> float:
        """|exposure| that survives the reducing part of the move (0 after a flip)."""
        if self.current == 0.0 or self.planned == 0.0 or (self.current > 0) != (self.planned > 0):
            return 0.0
        return min(abs(self.current), abs(self.planned))

    @property
    def increase(self) -> float:
        """|exposure| the move adds beyond what is kept."""
        return max(0.0, abs(self.planned) - self.kept)


def leverage_scale(
    legs: Sequence[ExposureLeg], untouched_gross: float, equity: float, max_gross_leverage: float
) -> float:
    """Common factor in [0, 1] for every exposure increase so gross exposure stays within the limit.

    `untouched_gross` is the gross value of positions with no decision this timestep.
    """
    increases = sum(leg.increase for leg in legs)
    if increases <= 0.0:
        return 1.0
    limit = max_gross_leverage * equity
    kept = untouched_gross + sum(leg.kept for leg in legs)
    if kept + increases <= limit * (1 + 1e-12):
        return 1.0
    return min(1.0, max(0.0, (limit - kept) / increases))


def scaled_planned(leg: ExposureLeg, factor: float) -> float:
    """Signed planned notional after scaling its increase by `factor`."""
    if leg.increase <= 0.0 or factor >= 1.0:
        return leg.planned
    return math.copysign(leg.kept + factor * leg.increase, leg.planned)


def gross_after(planned: Mapping[str, float], untouched_gross: float) -> float:
    return untouched_gross + sum(abs(v) for v in planned.values())
