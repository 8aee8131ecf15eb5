"""Hard guardrails. Each returns data (an adjusted target and a reason code), never raises.

Reason codes (upper case, stable: dashboards and alerts key on them):
  TRADING_HALTED         kill switch on: nothing is traded, not even reductions (in safe mode the
                         gateway's own gradual close is the only order, see planner.plan_flatten)
  RESTRICTED_SYMBOL      the symbol is on the compliance restricted list: no order of any kind,
                         not even a reduction
  MARKET_CLOSED          the market is closed (broker clock or configured session): nothing is sent
  TRADING_REDUCING       reduce-only state: increases are cut back to the current position
  DATA_UNRELIABLE        the trading service flagged this bar's data for the symbol (stale or
                         inconsistent bar, missing bar, no provider quorum: the flag is in the
                         detail): reduce only, the symbol takes no new risk this bar
  DEFENSIVE_MODE         defensive directive: same as reduce-only, from the master agent
  NO_PRICE               the decision's price is unusable (not finite or not > 0)
  ORDER_PENDING          an earlier order for the symbol is still open at the broker: no new order
                         until it completes, so an unfilled remainder is never ordered twice
  NON_POSITIVE_EQUITY    equity <= 0: weights are meaningless, nothing is traded
  SHORT_SALE_RESTRICTED  long-only account, or a symbol with no borrow: no new or larger short;
                         an existing short may shrink (target clipped to max(target, min(current, 0)))
  PER_SYMBOL_CAP         |target weight| above the per-symbol cap: clipped to the cap
  MAX_GROSS_LEVERAGE     the timestep would take gross exposure above the limit: every exposure
                         increase is scaled down by one common factor (reductions are never scaled);
                         with no headroom left the increases are denied
  MAX_ORDER_NOTIONAL     |qty| * price above the largest allowed order: cut to
                         floor(max_order_notional / price) whole shares toward the target
  BELOW_MIN_NOTIONAL     the order's notional is below the minimum: approved, but no order is sent
  ORDER_RATE_LIMIT       the rolling-window order throttle has no budget left for this order this
                         interval (risk-reducing orders are served first)

A guardrail that cuts a change back only partly leaves the decision approved with the reason code
(a clip); one that leaves nothing of the requested change denies it.
"""

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from contracts.config import ShortSaleRule
from contracts.orders import TradingState
from gateway.domain.overlay import DEFENSIVE_MODE, reduce_only

TRADING_HALTED = "TRADING_HALTED"
RESTRICTED_SYMBOL = "RESTRICTED_SYMBOL"
MARKET_CLOSED = "MARKET_CLOSED"
TRADING_REDUCING = "TRADING_REDUCING"
DATA_UNRELIABLE = "DATA_UNRELIABLE"
NO_PRICE = "NO_PRICE"
ORDER_PENDING = "ORDER_PENDING"
NON_POSITIVE_EQUITY = "NON_POSITIVE_EQUITY"
SHORT_SALE_RESTRICTED = "SHORT_SALE_RESTRICTED"
PER_SYMBOL_CAP = "PER_SYMBOL_CAP"
MAX_GROSS_LEVERAGE = "MAX_GROSS_LEVERAGE"
MAX_ORDER_NOTIONAL = "MAX_ORDER_NOTIONAL"
BELOW_MIN_NOTIONAL = "BELOW_MIN_NOTIONAL"
ORDER_RATE_LIMIT = "ORDER_RATE_LIMIT"

REASON_CODES: tuple[str, ...] = (
    TRADING_HALTED,
    RESTRICTED_SYMBOL,
    MARKET_CLOSED,
    TRADING_REDUCING,
    DATA_UNRELIABLE,
    DEFENSIVE_MODE,
    NO_PRICE,
    ORDER_PENDING,
    NON_POSITIVE_EQUITY,
    SHORT_SALE_RESTRICTED,
    PER_SYMBOL_CAP,
    MAX_GROSS_LEVERAGE,
    MAX_ORDER_NOTIONAL,
    BELOW_MIN_NOTIONAL,
    ORDER_RATE_LIMIT,
)

_EPS = 1e-12
# Share counts within this of a whole number are that number (float noise of a division).
_SHARE_EPS = 1e-9


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


def is_restricted(symbol: str, restricted_symbols: Collection[str]) -> bool:
    """Tickers are compared upper case, so a list written as `aapl` still blocks `AAPL`."""
    wanted = symbol.upper()
    return any(wanted == listed.upper() for listed in restricted_symbols)


def may_short(symbol: str, rule: ShortSaleRule) -> bool:
    return rule.allowed and not is_restricted(symbol, rule.not_shortable)


def apply_short_sale(
    symbol: str, current_weight: float, target_weight: float, rule: ShortSaleRule
) -> tuple[float, str | None]:
    """Target allowed by the short-sale rule: where shorting is not allowed the target may not go below
    min(current, 0), so a long may go flat, an existing short may shrink, and no short is opened or enlarged."""
    if may_short(symbol, rule):
        return target_weight, None
    floor = min(current_weight, 0.0)
    if target_weight >= floor - _EPS:
        return target_weight, None
    return floor, SHORT_SALE_RESTRICTED


def clip_to_cap(target_weight: float, per_symbol_cap: float) -> tuple[float, str | None]:
    if abs(target_weight) <= per_symbol_cap + _EPS:
        return target_weight, None
    return math.copysign(per_symbol_cap, target_weight), PER_SYMBOL_CAP


def cut_to_max_order_notional(delta: float, price: float, max_order_notional: float) -> tuple[float, str | None]:
    """Order cut to floor(max_order_notional / price) whole shares (same side) when its notional is above
    the limit; 0 when one share already costs more than the limit."""
    if abs(delta) * price <= max_order_notional * (1 + _EPS):
        return delta, None
    shares = float(math.floor(max_order_notional / price + _SHARE_EPS))
    return (math.copysign(shares, delta) if shares > 0 else 0.0), MAX_ORDER_NOTIONAL


def flatten_close_qty(position_qty: float, max_close: float) -> float:
    """Shares (>= 0) that safe mode closes of `position_qty` this interval: at most |position|, so it never
    flips; `max_close` is rounded up to whole shares so a schedule of fraction f of the starting size
    reaches flat within ceil(1/f) intervals and whole positions stay whole. An infinite `max_close`
    closes everything; a non-positive or NaN one closes nothing."""
    size = abs(position_qty)
    if math.isnan(max_close) or max_close <= 0 or size == 0:
        return 0.0
    if math.isinf(max_close):
        return size
    whole = float(math.ceil(max_close - _SHARE_EPS))
    return size if whole >= size - _SHARE_EPS else whole


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
