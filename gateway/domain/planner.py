"""One decision interval, planned: decisions + directive + portfolio + state + config -> risk decisions + intents.

Pure: reads the portfolio, never changes it. The order of the rules, per symbol:
  trading state HALTED -> price check -> open order check -> equity check -> master overlay (defensive clamp)
  -> REDUCING clamp -> per-symbol cap -> whole shares
then across the timestep: gross leverage (scale increases), minimum notional (drop tiny orders).
Intents come out risk-reducing first, so a throttled broker connection spends its budget on them.
"""

import math
from dataclasses import dataclass, field

from contracts.config import RiskOverlaysConfig
from contracts.decisions import MasterDirective, SymbolDecision, TimestepDecisions
from contracts.orders import OrderIntent, RiskDecision, TradingState
from gateway.domain import risk as rules
from gateway.domain.costs import estimate_cost
from gateway.domain.orders import client_order_id, intent_text, order_delta, side_of, whole_target_qty
from gateway.domain.overlay import DEFENSIVE_MODE, EffectiveOverlay, apply_overlay, resolve_overlay
from gateway.domain.portfolio import Portfolio


@dataclass(frozen=True)
class TimestepPlan:
    risk: tuple[RiskDecision, ...]
    intents: tuple[OrderIntent, ...]
    overlay: EffectiveOverlay
    equity: float

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
        self.flag(code, note)


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
) -> None:
    d = item.decision
    if state == TradingState.HALTED:
        item.deny(rules.TRADING_HALTED, "trading is HALTED (kill switch); no order of any kind is sent")
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
        item.delta = new_delta


def _finish(item: _Symbol, equity: float, risk: RiskOverlaysConfig, marks: dict[str, float]) -> RiskDecision:
    approved = not item.denied
    if approved and item.codes and item.delta == 0.0 and item.requested_delta != 0.0:
        # The guardrails left nothing of the requested change: that is a denial, not a clip.
        approved = False
    if approved and rules.is_below_min_notional(item.delta, item.price, risk.min_order_notional):
        item.flag(
            rules.BELOW_MIN_NOTIONAL,
            f"order notional {abs(item.delta) * item.price:.2f} below minimum {risk.min_order_notional:.2f}; "
            "nothing sent",
        )
        item.delta = 0.0
    final_qty = item.current_qty + item.delta
    mark = marks.get(item.decision.symbol, math.nan)
    weight = final_qty * mark / equity if equity > 0 and math.isfinite(mark) and final_qty != 0 else 0.0
    return RiskDecision(
        symbol=item.decision.symbol,
        approved=approved,
        reason_code=item.codes[0] if item.codes else None,
        detail="; ".join(item.notes),
        target_weight=weight,
    )


def _intent(item: _Symbol, batch: TimestepDecisions, risk: RiskOverlaysConfig) -> OrderIntent:
    side = side_of(item.delta)
    qty = abs(item.delta)
    return OrderIntent(
        client_order_id=client_order_id(
            batch.policy_version, item.decision.symbol, batch.bar_index, intent_text(side, qty)
        ),
        symbol=item.decision.symbol,
        side=side,
        qty=qty,
        reference_price=item.price,
        policy_version=batch.policy_version,
        bar_index=batch.bar_index,
        timestep=batch.timestep,
        estimated_cost=estimate_cost(qty, item.price, risk),
    )


def _reduces(item: _Symbol) -> bool:
    after = item.current_qty + item.delta
    return abs(after) < abs(item.current_qty) and (after == 0 or (after > 0) == (item.current_qty > 0))


def plan_timestep(
    batch: TimestepDecisions,
    *,
    directive: MasterDirective | None,
    portfolio: Portfolio,
    trading_state: TradingState,
    risk: RiskOverlaysConfig,
    max_directive_ttl_seconds: float | None = None,
    pending_symbols: frozenset[str] = frozenset(),
) -> TimestepPlan:
    """Apply overlay and guardrails to every decision of `batch`; return one RiskDecision per
    decision (input order) and the order intents to send (risk-reducing first).

    `directive` is checked against `batch.timestep` (market time): a stale or future directive
    counts as missing and the configured fallback preset applies. Symbols in `pending_symbols`
    have an order still open at the broker and get no new one.
    """
    overlay = resolve_overlay(directive, risk, at=batch.timestep, max_ttl_seconds=max_directive_ttl_seconds)
    marks, equity = _valuation(batch, portfolio)
    items = [_Symbol(d, portfolio.qty(d.symbol), d.price) for d in batch.decisions]
    for item in items:
        _plan_symbol(item, equity=equity, overlay=overlay, state=trading_state, risk=risk, pending=pending_symbols)
    if trading_state != TradingState.HALTED and equity > 0:
        _apply_gross_leverage(items, portfolio, marks, equity, risk)
    decisions = tuple(_finish(item, equity, risk, marks) for item in items)
    orders = [item for item in items if item.delta != 0.0]
    orders.sort(key=lambda item: 0 if _reduces(item) else 1)  # stable: input order within each group
    return TimestepPlan(
        risk=decisions,
        intents=tuple(_intent(item, batch, risk) for item in orders),
        overlay=overlay,
        equity=equity,
    )
