import math

import pytest
from gateway_builders import T0, batch, directive

from contracts.config import RiskOverlaysConfig
from contracts.decisions import SymbolDecision, TimestepDecisions
from contracts.orders import OrderSide, RiskDecision, TradingState
from gateway.domain import risk as rules
from gateway.domain.costs import estimate_cost
from gateway.domain.planner import TimestepPlan, plan_timestep
from gateway.domain.portfolio import Portfolio, Position

RISK = RiskOverlaysConfig()
NORMAL = directive("normal")


def plan(decisions: TimestepDecisions, book: Portfolio, *, state: TradingState = TradingState.ACTIVE,
         risk: RiskOverlaysConfig = RISK, live: bool = True, pending: frozenset[str] = frozenset()) -> TimestepPlan:
    return plan_timestep(decisions, directive=NORMAL if live else None, portfolio=book, trading_state=state,
                         risk=risk, pending_symbols=pending)


def by_symbol(p: TimestepPlan) -> dict[str, RiskDecision]:
    return {r.symbol: r for r in p.risk}


def test_plan_when_active_and_normal_directive_then_orders_size_to_target_weight() -> None:
    p = plan(batch({"AAPL": (1.0, 100.0), "MSFT": (-0.5, 250.0)}), Portfolio(1_000_000.0))
    assert [(i.symbol, i.side, i.qty) for i in p.intents] == [
        ("AAPL", OrderSide.BUY, 1000.0), ("MSFT", OrderSide.SELL, 200.0)]
    assert all(r.approved and r.reason_code is None for r in p.risk)
    assert p.intents[0].estimated_cost == pytest.approx(estimate_cost(1000, 100.0, RISK))


def test_plan_when_halted_then_every_decision_denied_trading_halted_and_no_orders() -> None:
    book = Portfolio(900_000.0, {"AAPL": Position("AAPL", 1000, 100.0)})
    p = plan(batch({"AAPL": (0.0, 100.0), "MSFT": (1.0, 250.0)}), book, state=TradingState.HALTED)
    assert p.intents == ()
    assert {(r.symbol, r.approved, r.reason_code) for r in p.risk} == {
        ("AAPL", False, "TRADING_HALTED"), ("MSFT", False, "TRADING_HALTED")}


def test_plan_when_reducing_and_target_larger_then_denied_trading_reducing() -> None:
    book = Portfolio(950_000.0, {"AAPL": Position("AAPL", 500, 100.0)})  # 5% long
    p = plan(batch({"AAPL": (1.0, 100.0), "MSFT": (1.0, 100.0)}), book, state=TradingState.REDUCING)
    decisions = by_symbol(p)
    assert (decisions["AAPL"].approved, decisions["AAPL"].reason_code) == (False, "TRADING_REDUCING")
    assert (decisions["MSFT"].approved, decisions["MSFT"].reason_code) == (False, "TRADING_REDUCING")
    assert p.intents == ()


def test_plan_when_reducing_and_target_smaller_then_reduction_sent() -> None:
    book = Portfolio(950_000.0, {"AAPL": Position("AAPL", 500, 100.0)})
    p = plan(batch({"AAPL": (0.2, 100.0)}), book, state=TradingState.REDUCING)
    assert p.risk[0].approved and p.risk[0].reason_code is None
    assert [(i.side, i.qty) for i in p.intents] == [(OrderSide.SELL, 300.0)]


def test_plan_when_reducing_and_target_flips_then_clipped_to_flat() -> None:
    book = Portfolio(950_000.0, {"AAPL": Position("AAPL", 500, 100.0)})
    p = plan(batch({"AAPL": (-1.0, 100.0)}), book, state=TradingState.REDUCING)
    assert (p.risk[0].approved, p.risk[0].reason_code) == (True, "TRADING_REDUCING")
    assert [(i.side, i.qty) for i in p.intents] == [(OrderSide.SELL, 500.0)]


def test_plan_when_price_not_finite_then_denied_no_price() -> None:
    bad = SymbolDecision.model_construct(symbol="AAPL", action=0, target_level=1.0, probabilities=(),
                                         price=math.inf)
    decisions = TimestepDecisions(timestep=T0, bar_index=0, policy_version="v1",
                                  decisions=(bad, SymbolDecision(symbol="MSFT", action=0, target_level=1.0,
                                                                 price=100.0)))
    p = plan(decisions, Portfolio(1_000_000.0))
    assert (p.risk[0].approved, p.risk[0].reason_code) == (False, "NO_PRICE")
    assert [i.symbol for i in p.intents] == ["MSFT"]


def test_plan_when_symbol_has_open_order_then_denied_order_pending() -> None:
    p = plan(batch({"AAPL": (1.0, 100.0)}), Portfolio(1_000_000.0), pending=frozenset({"AAPL"}))
    assert (p.risk[0].approved, p.risk[0].reason_code) == (False, "ORDER_PENDING")
    assert p.intents == ()


def test_plan_when_equity_not_positive_then_denied_non_positive_equity() -> None:
    book = Portfolio(-20_000.0, {"AAPL": Position("AAPL", 100, 100.0)})
    p = plan(batch({"MSFT": (1.0, 100.0)}), book)
    assert (p.risk[0].approved, p.risk[0].reason_code) == (False, "NON_POSITIVE_EQUITY")


def test_clip_to_cap_when_target_above_cap_then_clipped_with_per_symbol_cap() -> None:
    assert rules.clip_to_cap(0.25, 0.10) == (0.10, "PER_SYMBOL_CAP")
    assert rules.clip_to_cap(-0.25, 0.10) == (-0.10, "PER_SYMBOL_CAP")
    assert rules.clip_to_cap(0.10, 0.10) == (0.10, None)


def test_plan_when_directive_allows_more_than_cap_then_position_stays_within_cap() -> None:
    generous = directive(max_position_size=1.0, risk_scale=1.0)
    p = plan_timestep(batch({"AAPL": (1.0, 99.0)}), directive=generous, portfolio=Portfolio(1_000_000.0),
                      trading_state=TradingState.ACTIVE, risk=RISK)
    assert p.risk[0].target_weight <= RISK.per_symbol_cap
    assert p.intents[0].qty * 99.0 <= RISK.per_symbol_cap * 1_000_000.0


def test_plan_when_increases_breach_gross_leverage_then_scaled_pro_rata_within_limit() -> None:
    # 1.45x gross already held in X; three new 10% positions would take it to 1.75x.
    book = Portfolio(-450_000.0, {"X": Position("X", 14_500, 100.0)})
    p = plan(batch({"A": (1.0, 100.0), "B": (1.0, 100.0), "C": (1.0, 100.0)}), book)
    assert {(r.approved, r.reason_code) for r in p.risk} == {(True, "MAX_GROSS_LEVERAGE")}
    assert [i.qty for i in p.intents] == [166.0, 166.0, 166.0]  # 1/6 of 1000 shares each, whole shares
    gross_after = 14_500 * 100 + sum(i.qty * 100 for i in p.intents)
    assert gross_after <= RISK.max_gross_leverage * 1_000_000


def test_plan_when_gross_already_above_limit_then_increases_denied_and_reductions_sent() -> None:
    # equity 1.0M, gross 1.7x; even with Y closed, X alone is 1.6x: no headroom for A.
    book = Portfolio(-700_000.0, {"X": Position("X", 16_000, 100.0), "Y": Position("Y", 1_000, 100.0)})
    p = plan(batch({"A": (1.0, 100.0), "Y": (0.0, 100.0)}), book)
    decisions = by_symbol(p)
    assert (decisions["A"].approved, decisions["A"].reason_code) == (False, "MAX_GROSS_LEVERAGE")
    assert (decisions["Y"].approved, decisions["Y"].reason_code) == (True, None)
    assert [(i.symbol, i.side, i.qty) for i in p.intents] == [("Y", OrderSide.SELL, 1000.0)]


def test_plan_when_order_below_min_notional_then_approved_without_order() -> None:
    risk = RiskOverlaysConfig(min_order_notional=1_000.0)
    p = plan(batch({"AAPL": (0.05, 10.0)}), Portfolio(10_000.0), risk=risk)  # 5 shares = $50
    assert (p.risk[0].approved, p.risk[0].reason_code) == (True, "BELOW_MIN_NOTIONAL")
    assert p.intents == ()


def test_plan_when_no_live_directive_then_fallback_defensive_denies_new_exposure() -> None:
    p = plan(batch({"AAPL": (1.0, 100.0)}), Portfolio(1_000_000.0), live=False)
    assert p.directive_fallback
    assert (p.risk[0].approved, p.risk[0].reason_code) == (False, "DEFENSIVE_MODE")
    assert "fallback preset 'defensive'" in p.risk[0].detail


def test_plan_when_defensive_fallback_and_position_large_then_reduced_to_preset_size() -> None:
    book = Portfolio(900_000.0, {"AAPL": Position("AAPL", 1000, 100.0)})  # 10% long
    p = plan(batch({"AAPL": (1.0, 100.0)}), book, live=False)
    # defensive preset: min(0.10, 0.02) * 0.25 = 0.5% -> 50 shares
    assert [(i.side, i.qty) for i in p.intents] == [(OrderSide.SELL, 950.0)]
    assert p.risk[0].approved


def test_plan_when_mixed_orders_then_risk_reducing_orders_come_first() -> None:
    book = Portfolio(900_000.0, {"Z": Position("Z", 1000, 100.0)})
    p = plan(batch({"A": (1.0, 100.0), "Z": (0.0, 100.0), "B": (1.0, 100.0)}), book)
    assert [i.symbol for i in p.intents] == ["Z", "A", "B"]


def test_plan_when_called_twice_then_same_plan_and_portfolio_untouched() -> None:
    book = Portfolio(1_000_000.0, {"AAPL": Position("AAPL", 10, 90.0)})
    decisions = batch({"AAPL": (1.0, 100.0), "MSFT": (0.5, 200.0)}, bar_index=3)
    first, second = plan(decisions, book), plan(decisions, book)
    assert first.intents == second.intents
    assert book.positions() == {"AAPL": Position("AAPL", 10, 90.0)} and book.cash == 1_000_000.0


def test_estimate_cost_when_configured_bps_then_commission_half_spread_and_slippage() -> None:
    risk = RiskOverlaysConfig(commission_bps=1.0, spread_bps=4.0, slippage_bps=0.5)
    assert estimate_cost(-100, 50.0, risk) == pytest.approx(5_000 * (1.0 + 2.0 + 0.5) * 1e-4)
