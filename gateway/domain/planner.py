"""One decision interval, planned: decisions + directive + portfolio + state + config -> risk decisions + intents.

Pure: reads the portfolio, never changes it. The order of the rules, per symbol (the first that denies wins):
  trading state HALTED -> restricted symbol -> market closed -> price check -> open order check
  -> equity check -> master overlay (defensive clamp) -> REDUCING clamp -> short-sale rule
  -> per-symbol cap -> whole shares
then across the timestep: gross leverage (scale increases) -> max order notional (cut each order)
-> minimum notional (drop tiny orders) -> order budget (the rolling-window throttle; risk-reducing
orders are served first, then input order).

Safe mode (HALTED with a `flatten` schedule): every decision is still denied TRADING_HALTED, and
`plan_flatten` adds the gateway's own closing orders, which come first in the intents.
Intents come out risk-reducing first, so a throttled broker connection spends its budget on them.
"""

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.config import RiskOverlaysConfig
from contracts.decisions import MasterDirective, SymbolDecision, TimestepDecisions
from contracts.orders import OrderIntent, RiskDecision, TradingState
from gateway.domain import risk as rules
from gateway.domain.costs import estimate_cost
from gateway.domain.orders import (
    client_order_id,
    format_qty,
    intent_text,
    order_delta,
    side_of,
    whole_target_qty,
)
from gateway.domain.overlay import (
    DEFENSIVE_MODE,
    DefensiveOverride,
    EffectiveOverlay,
    apply_overlay,
    reduce_only,
    resolve_overlay,
    tighten,
)
from gateway.domain.portfolio import Portfolio

logger = logging.getLogger(__name__)

# Suffix of the policy version in safe-mode closing orders' client ids: a close and a policy order for
# the same symbol and bar can never share an id.
FLATTEN_TAG = "flatten"


@dataclass(frozen=True)
class FlattenPlan:
    """Safe mode's closing orders for one interval and, per held symbol, what it did and why."""

    intents: tuple[OrderIntent, ...]
    detail: Mapping[str, str]


@dataclass(frozen=True)
class TimestepPlan:
    risk: tuple[RiskDecision, ...]
    intents: tuple[OrderIntent, ...]
    overlay: EffectiveOverlay
    equity: float
    # Safe-mode closing orders (also the first entries of `intents`); sent although trading is HALTED.
    flatten: tuple[OrderIntent, ...] = ()
    flatten_detail: Mapping[str, str] = field(default_factory=dict)

    @property
    def directive_fallback(self) -> bool:
        return self.overlay.fallback


@dataclass
class _Symbol:
    decision: SymbolDecision
    current_qty: float
    price: float
    current_weight: float = 0.0
    requested_delta: float = 0.0
    delta: float = 0.0
    denied: bool = False
    codes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def flag(self, code: str, note: str) -> None:
        if code not in self.codes:
            self.codes.append(code)
        self.notes.append(f"{code}: {note}")

    def deny(self, code: str, note: str) -> None:
        self.denied = True
        self.delta = 0.0
        self._lead_with(code)
        self.notes.append(f"{code}: {note}")

    def emptied_by(self, code: str) -> None:
        """`code` took the last of the order away: it, not an earlier clip, is the reason for the denial."""
        self._lead_with(code)

    def _lead_with(self, code: str) -> None:
        if code in self.codes:
            self.codes.remove(code)
        self.codes.insert(0, code)


def _valuation(batch: TimestepDecisions, portfolio: Portfolio) -> tuple[dict[str, float], float]:
    """Marks (portfolio marks, overridden by this timestep's usable prices) and the equity at them."""
    marks = {sym: portfolio.mark_of(sym) for sym in portfolio.positions()}
    for d in batch.decisions:
        if rules.price_is_usable(d.price):
            marks[d.symbol] = d.price
    equity = portfolio.cash + sum(p.qty * marks[s] for s, p in portfolio.positions().items())
    return marks, equity


def _plan_symbol(
    item: _Symbol,
    *,
    equity: float,
    overlay: EffectiveOverlay,
    state: TradingState,
    risk: RiskOverlaysConfig,
    pending: frozenset[str],
    market_open: bool,
) -> None:
    d = item.decision
    if state == TradingState.HALTED:
        item.deny(rules.TRADING_HALTED, "trading is HALTED (kill switch); no order of any kind is sent")
        return
    if rules.is_restricted(d.symbol, risk.restricted_symbols):
        item.deny(rules.RESTRICTED_SYMBOL, "symbol is on the compliance restricted list; no order of any kind")
        return
    if not market_open:
        item.deny(rules.MARKET_CLOSED, "the market is closed; no order is sent")
        return
    if not rules.price_is_usable(item.price):
        item.deny(rules.NO_PRICE, f"price {item.price!r} is not a finite positive number")
        return
    if d.symbol in pending:
        item.deny(rules.ORDER_PENDING, "an earlier order for this symbol is still open at the broker")
        return
    if equity <= 0:
        item.deny(rules.NON_POSITIVE_EQUITY, f"equity is {equity:.2f}; weights cannot be sized")
        return
    item.current_weight = item.current_qty * item.price / equity
    outcome = apply_overlay(d.target_level, item.current_weight, overlay, risk)
    item.notes.append(
        f"overlay {overlay.note}: level {d.target_level:+.3f} x size {overlay.size(risk.per_symbol_cap):.4f} "
        f"= weight {outcome.raw_weight:+.4f}"
    )
    item.requested_delta = order_delta(outcome.raw_weight, equity, item.price, item.current_qty)
    target = outcome.target_weight
    if outcome.defensive_clipped:
        item.flag(DEFENSIVE_MODE, f"defensive overlay: reduce only, target {outcome.raw_weight:+.4f} -> {target:+.4f}")
    state_target, code = rules.apply_trading_state(state, item.current_weight, target)
    if code is not None:
        item.flag(code, f"trading state {state.value}: reduce only, target {target:+.4f} -> {state_target:+.4f}")
    target = state_target
    if d.no_new_risk is not None:
        allowed, clipped = reduce_only(item.current_weight, target)
        if clipped:
            item.flag(rules.DATA_UNRELIABLE, f"{d.no_new_risk}: this bar's data for the symbol is not trusted; "
                                             f"reduce only, target {target:+.4f} -> {allowed:+.4f}")
        target = allowed
    short_target, code = rules.apply_short_sale(d.symbol, item.current_weight, target, risk.short_sale)
    if code is not None:
        why = "the account is long only" if not risk.short_sale.allowed else "the symbol is not shortable"
        item.flag(code, f"{why}: no new or larger short, target {target:+.4f} -> {short_target:+.4f}")
    target = short_target
    capped, code = rules.clip_to_cap(target, risk.per_symbol_cap)
    if code is not None:
        item.flag(code, f"target {target:+.4f} clipped to the per-symbol cap {risk.per_symbol_cap:.4f}")
    item.delta = order_delta(capped, equity, item.price, item.current_qty)


def _apply_gross_leverage(
    items: list[_Symbol], portfolio: Portfolio, marks: dict[str, float], equity: float, risk: RiskOverlaysConfig
) -> None:
    decided = {i.decision.symbol for i in items if not i.denied}
    untouched = sum(
        abs(p.qty * marks[s]) for s, p in portfolio.positions().items() if s not in decided
    )
    live = [i for i in items if not i.denied]
    legs = {
        i.decision.symbol: rules.ExposureLeg(
            i.decision.symbol, i.current_qty * i.price, (i.current_qty + i.delta) * i.price
        )
        for i in live
    }
    factor = rules.leverage_scale(list(legs.values()), untouched, equity, risk.max_gross_leverage)
    if factor >= 1.0:
        return
    for item in live:
        leg = legs[item.decision.symbol]
        if leg.increase <= 0.0:
            continue
        planned = rules.scaled_planned(leg, factor)
        new_delta = whole_target_qty(planned / equity, equity, item.price) - item.current_qty
        new_delta = 0.0 if abs(new_delta) < 1e-9 else new_delta
        item.flag(
            rules.MAX_GROSS_LEVERAGE,
            f"gross exposure would exceed {risk.max_gross_leverage:.2f}x equity; exposure increases scaled by "
            f"{factor:.4f}, order {item.delta:+g} -> {new_delta:+g} shares",
        )
        if item.delta != 0.0 and new_delta == 0.0:
            item.emptied_by(rules.MAX_GROSS_LEVERAGE)
        item.delta = new_delta


def _apply_max_order_notional(item: _Symbol, risk: RiskOverlaysConfig) -> None:
    if item.denied or item.delta == 0.0:
        return
    cut, code = rules.cut_to_max_order_notional(item.delta, item.price, risk.max_order_notional)
    if code is None:
        return
    item.flag(
        code,
        f"order notional {abs(item.delta) * item.price:.2f} above the maximum {risk.max_order_notional:.2f}; "
        f"order {item.delta:+g} -> {cut:+g} shares",
    )
    if cut == 0.0:
        item.emptied_by(code)
    item.delta = cut


def _settle(item: _Symbol, risk: RiskOverlaysConfig) -> None:
    """Turn 'guardrails left nothing' into a denial, then drop orders below the minimum notional."""
    if item.denied:
        return
    if item.codes and item.delta == 0.0 and item.requested_delta != 0.0:
        # The guardrails left nothing of the requested change: that is a denial, not a clip.
        item.denied = True
        return
    if rules.is_below_min_notional(item.delta, item.price, risk.min_order_notional):
        item.flag(
            rules.BELOW_MIN_NOTIONAL,
            f"order notional {abs(item.delta) * item.price:.2f} below minimum {risk.min_order_notional:.2f}; "
            "nothing sent",
        )
        item.delta = 0.0


def _finish(item: _Symbol, equity: float, marks: dict[str, float], safe_mode_note: str | None) -> RiskDecision:
    final_qty = item.current_qty + item.delta
    mark = marks.get(item.decision.symbol, math.nan)
    weight = final_qty * mark / equity if equity > 0 and math.isfinite(mark) and final_qty != 0 else 0.0
    notes = item.notes if safe_mode_note is None else [*item.notes, safe_mode_note]
    return RiskDecision(
        symbol=item.decision.symbol,
        approved=not item.denied,
        reason_code=item.codes[0] if item.codes else None,
        detail="; ".join(notes),
        target_weight=weight,
    )


def _order_intent(
    batch: TimestepDecisions, policy_tag: str, symbol: str, delta: float, price: float, risk: RiskOverlaysConfig,
    *, policy_version: str | None = None,
) -> OrderIntent:
    side = side_of(delta)
    qty = abs(delta)
    return OrderIntent(
        client_order_id=client_order_id(policy_tag, symbol, batch.bar_index, intent_text(side, qty)),
        symbol=symbol,
        side=side,
        qty=qty,
        reference_price=price,
        policy_version=policy_version or batch.policy_version,
        bar_index=batch.bar_index,
        timestep=batch.timestep,
        estimated_cost=estimate_cost(qty, price, risk),
    )


def _reduces(item: _Symbol) -> bool:
    after = item.current_qty + item.delta
    return abs(after) < abs(item.current_qty) and (after == 0 or (after > 0) == (item.current_qty > 0))


def plan_flatten(
    batch: TimestepDecisions,
    *,
    portfolio: Portfolio,
    flatten: Mapping[str, float],
    risk: RiskOverlaysConfig,
    pending_symbols: frozenset[str] = frozenset(),
    market_open: bool = True,
    order_budget: int | None = None,
) -> FlattenPlan:
    """Safe mode's closing orders for this interval: each held symbol in `flatten` is reduced toward zero by
    at most `flatten[symbol]` shares (rounded up to whole shares, never past flat).

    Price: the decision's price when the symbol has a decision this timestep (an unusable one closes
    nothing), else the portfolio mark. Nothing is closed on a restricted symbol (no trading at all), with an
    order still open, while the market is closed, or beyond `order_budget`; an order above the max order
    notional is cut to it. The largest positions go first, so a short budget closes the biggest risk.
    Client ids use policy version "<policy_version>:flatten".
    """
    prices = {d.symbol: d.price for d in batch.decisions}
    held = portfolio.positions()
    detail: dict[str, str] = {}
    closes: list[tuple[float, str, float, float]] = []  # (-|notional|, symbol, delta, price)
    for symbol, position in held.items():
        if symbol not in flatten:
            continue
        price = prices[symbol] if symbol in prices else portfolio.mark_of(symbol)
        if rules.is_restricted(symbol, risk.restricted_symbols):
            detail[symbol] = f"safe mode: not closed, {rules.RESTRICTED_SYMBOL} (compliance: no trading at all)"
            continue
        if not market_open:
            detail[symbol] = f"safe mode: not closed, {rules.MARKET_CLOSED}"
            continue
        if not rules.price_is_usable(price):
            detail[symbol] = f"safe mode: not closed, {rules.NO_PRICE} (price {price!r})"
            continue
        if symbol in pending_symbols:
            detail[symbol] = f"safe mode: not closed, {rules.ORDER_PENDING}"
            continue
        close = rules.flatten_close_qty(position.qty, flatten[symbol])
        if close == 0.0:
            detail[symbol] = f"safe mode: nothing to close (schedule allows {flatten[symbol]!r} shares)"
            continue
        delta = -math.copysign(close, position.qty)
        cut, code = rules.cut_to_max_order_notional(delta, price, risk.max_order_notional)
        if cut == 0.0:
            detail[symbol] = f"safe mode: not closed, {code} (one share costs more than the maximum order)"
            continue
        note = "" if code is None else f" ({code}: cut from {format_qty(close)})"
        detail[symbol] = f"safe mode: closing {format_qty(abs(cut))} shares of {format_qty(abs(position.qty))}{note}"
        closes.append((-abs(position.qty * price), symbol, cut, price))
    closes.sort()
    intents: list[OrderIntent] = []
    for _, symbol, delta, price in closes:
        if order_budget is not None and len(intents) >= order_budget:
            detail[symbol] = f"safe mode: not closed, {rules.ORDER_RATE_LIMIT} (order budget {order_budget} spent)"
            continue
        intents.append(_order_intent(batch, f"{batch.policy_version}:{FLATTEN_TAG}", symbol, delta, price, risk))
    return FlattenPlan(intents=tuple(intents), detail=detail)


def _apply_order_budget(orders: list[_Symbol], order_budget: int | None, spent: int) -> list[_Symbol]:
    """Orders within the budget (in their order); the rest are denied ORDER_RATE_LIMIT."""
    if order_budget is None:
        return orders
    allowed = max(0, order_budget - spent)
    for rank, item in enumerate(orders[allowed:], start=allowed + 1):
        item.deny(
            rules.ORDER_RATE_LIMIT,
            f"order throttle allows {max(0, order_budget)} more orders now (risk-reducing first); "
            f"this would be number {rank + spent}",
        )
    return orders[:allowed]


def plan_timestep(
    batch: TimestepDecisions,
    *,
    directive: MasterDirective | None,
    portfolio: Portfolio,
    trading_state: TradingState,
    risk: RiskOverlaysConfig,
    max_directive_ttl_seconds: float | None = None,
    pending_symbols: frozenset[str] = frozenset(),
    market_open: bool = True,
    order_budget: int | None = None,
    flatten: Mapping[str, float] | None = None,
    override: DefensiveOverride | None = None,
) -> TimestepPlan:
    """Apply overlay and guardrails to every decision of `batch`; return one RiskDecision per
    decision (input order) and the order intents to send (risk-reducing first).

    `directive` is checked against `batch.timestep` (market time): a stale or future directive
    counts as missing and the configured fallback preset applies. Symbols in `pending_symbols`
    have an order still open at the broker and get no new one. `market_open` False denies every
    decision MARKET_CLOSED. `order_budget` is how many more orders the rolling-window throttle
    allows now (None: no limit). `flatten` (safe mode, only when `trading_state` is HALTED) maps
    symbol -> shares to close at most this interval; see `plan_flatten`. `override` (an operator's
    defensive floor) makes the overlay defensive with the smaller caps, whatever the directive says.
    """
    overlay = tighten(resolve_overlay(directive, risk, at=batch.timestep, max_ttl_seconds=max_directive_ttl_seconds),
                      override)
    marks, equity = _valuation(batch, portfolio)
    items = [_Symbol(d, portfolio.qty(d.symbol), d.price) for d in batch.decisions]
    for item in items:
        _plan_symbol(
            item,
            equity=equity,
            overlay=overlay,
            state=trading_state,
            risk=risk,
            pending=pending_symbols,
            market_open=market_open,
        )
    if trading_state != TradingState.HALTED and equity > 0:
        _apply_gross_leverage(items, portfolio, marks, equity, risk)
    for item in items:
        _apply_max_order_notional(item, risk)
        _settle(item, risk)

    safe_mode = FlattenPlan(intents=(), detail={})
    if flatten is not None:
        if trading_state == TradingState.HALTED:
            safe_mode = plan_flatten(
                batch,
                portfolio=portfolio,
                flatten=flatten,
                risk=risk,
                pending_symbols=pending_symbols,
                market_open=market_open,
                order_budget=order_budget,
            )
        else:
            logger.warning("flatten schedule ignored: safe mode needs trading state HALTED, not %s", trading_state)

    orders = [item for item in items if item.delta != 0.0]
    orders.sort(key=lambda item: 0 if _reduces(item) else 1)  # stable: input order within each group
    orders = _apply_order_budget(orders, order_budget, spent=len(safe_mode.intents))
    decisions = tuple(
        _finish(item, equity, marks, safe_mode.detail.get(item.decision.symbol)) for item in items
    )
    policy_intents = tuple(
        _order_intent(batch, item.decision.policy_version or batch.policy_version, item.decision.symbol, item.delta,
                      item.price, risk, policy_version=item.decision.policy_version)
        for item in orders
    )
    return TimestepPlan(
        risk=decisions,
        intents=safe_mode.intents + policy_intents,
        overlay=overlay,
        equity=equity,
        flatten=safe_mode.intents,
        flatten_detail=safe_mode.detail,
    )

