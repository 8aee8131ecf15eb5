"""Every pre-trade guardrail of the pure planner, each with its breach planted: the denial or clip, its reason
code, and the orders that come out (or do not)."""

import math
import random
from datetime import timedelta

import pytest
from gateway_builders import T0, batch, directive, fill

from contracts.config import RiskOverlaysConfig, SafeModeConfig, ShortSaleRule
from contracts.decisions import SymbolDecision, TimestepDecisions
from contracts.orders import OrderSide, RiskDecision, TradingState
from gateway.domain import risk as rules
from gateway.domain.orders import client_order_id, intent_text
from gateway.domain.planner import TimestepPlan, plan_timestep
from gateway.domain.portfolio import Portfolio, Position

RISK = RiskOverlaysConfig()
NORMAL = directive("normal")


def plan(decisions: TimestepDecisions, book: Portfolio, *, state: TradingState = TradingState.ACTIVE,
         risk: RiskOverlaysConfig = RISK, **kwargs: object) -> TimestepPlan:
    kwargs.setdefault("directive", NORMAL)
    return plan_timestep(decisions, portfolio=book, trading_state=state, risk=risk, **kwargs)  # type: ignore[arg-type]


def by_symbol(p: TimestepPlan) -> dict[str, RiskDecision]:
    return {r.symbol: r for r in p.risk}


def verdicts(p: TimestepPlan) -> dict[str, tuple[bool, str | None]]:
    return {r.symbol: (r.approved, r.reason_code) for r in p.risk}


def orders(p: TimestepPlan) -> list[tuple[str, OrderSide, float]]:
    return [(i.symbol, i.side, i.qty) for i in p.intents]


# ---- reason codes -----------------------------------------------------------------------------------------

def test_reason_codes_when_listed_then_new_guardrails_present_upper_case_and_unique() -> None:
    new = {"RESTRICTED_SYMBOL", "MARKET_CLOSED", "SHORT_SALE_RESTRICTED", "MAX_ORDER_NOTIONAL", "ORDER_RATE_LIMIT"}
    assert new <= set(rules.REASON_CODES)
    assert len(set(rules.REASON_CODES)) == len(rules.REASON_CODES)
    assert all(code == code.upper() and " " not in code for code in rules.REASON_CODES)
    for code in rules.REASON_CODES:
        assert code in (rules.__doc__ or ""), f"{code} missing from the risk module's table"


# ---- max gross leverage -----------------------------------------------------------------------------------

def test_plan_when_new_positions_breach_gross_leverage_then_increases_scaled_to_the_headroom() -> None:
    # equity 1.0M, 1.4x gross held in X: 0.1x headroom for two new 10% positions -> half of each.
    book = Portfolio(-400_000.0, {"X": Position("X", 14_000, 100.0)})
    p = plan(batch({"A": (1.0, 100.0), "B": (1.0, 50.0)}), book)
    assert verdicts(p) == {"A": (True, "MAX_GROSS_LEVERAGE"), "B": (True, "MAX_GROSS_LEVERAGE")}
    assert orders(p) == [("A", OrderSide.BUY, 500.0), ("B", OrderSide.BUY, 1000.0)]
    gross = 14_000 * 100 + 500 * 100 + 1000 * 50
    assert gross <= RISK.max_gross_leverage * p.equity * (1 + 1e-12)


def test_plan_when_gross_at_limit_then_increase_denied_and_reduction_still_sent() -> None:
    # equity 1.0M, gross 1.6x; after Y's reduction 1.55x is kept: still no headroom for A.
    book = Portfolio(-600_000.0, {"X": Position("X", 15_000, 100.0), "Y": Position("Y", 1_000, 100.0)})
    p = plan(batch({"A": (1.0, 100.0), "Y": (0.5, 100.0)}), book)
    assert verdicts(p) == {"A": (False, "MAX_GROSS_LEVERAGE"), "Y": (True, None)}
    assert orders(p) == [("Y", OrderSide.SELL, 500.0)]


def test_plan_when_earlier_clip_and_leverage_leaves_nothing_then_reason_is_max_gross_leverage() -> None:
    # A per-symbol clip first (a level outside the contract), then no leverage headroom left at all.
    wild = SymbolDecision.model_construct(symbol="A", action=0, target_level=3.0, probabilities=(), price=100.0)
    decisions = TimestepDecisions(timestep=T0, bar_index=0, policy_version="v1", decisions=(wild,))
    book = Portfolio(-500_000.0, {"X": Position("X", 15_000, 100.0)})
    p = plan(decisions, book, directive=directive(max_position_size=1.0))
    assert verdicts(p) == {"A": (False, "MAX_GROSS_LEVERAGE")}
    assert "PER_SYMBOL_CAP" in p.risk[0].detail
    assert p.intents == ()


# ---- per-symbol cap ---------------------------------------------------------------------------------------

def test_plan_when_target_above_per_symbol_cap_then_clipped_to_cap() -> None:
    # The overlay never sizes above the cap; a decision that skipped validation (level 3.0) is the breach.
    wild = SymbolDecision.model_construct(symbol="A", action=0, target_level=3.0, probabilities=(), price=40.0)
    decisions = TimestepDecisions(timestep=T0, bar_index=0, policy_version="v1", decisions=(wild,))
    p = plan(decisions, Portfolio(1_000_000.0))
    assert verdicts(p) == {"A": (True, "PER_SYMBOL_CAP")}
    assert orders(p) == [("A", OrderSide.BUY, RISK.per_symbol_cap * 1_000_000.0 / 40.0)]
    assert p.risk[0].target_weight == pytest.approx(RISK.per_symbol_cap)


def test_plan_when_reducing_holds_position_above_cap_then_cut_back_to_cap() -> None:
    # A held at 15% after a price rise; REDUCING keeps 15% at most, the cap still cuts it to 10%.
    book = Portfolio(850_000.0, {"A": Position("A", 1_500, 100.0)})
    wild = SymbolDecision.model_construct(symbol="A", action=0, target_level=2.0, probabilities=(), price=100.0)
    decisions = TimestepDecisions(timestep=T0, bar_index=0, policy_version="v1", decisions=(wild,))
    p = plan(decisions, book, state=TradingState.REDUCING)
    assert verdicts(p)["A"] == (True, "TRADING_REDUCING")
    assert "PER_SYMBOL_CAP" in p.risk[0].detail
    assert orders(p) == [("A", OrderSide.SELL, 500.0)]


# ---- max order notional -----------------------------------------------------------------------------------

def test_plan_when_order_notional_above_maximum_then_cut_to_whole_shares_toward_target() -> None:
    risk = RiskOverlaysConfig(max_order_notional=50_000.0)
    book = Portfolio(900_000.0, {"S": Position("S", 1_000, 100.0)})  # 10% long, to be closed
    p = plan(batch({"B": (1.0, 333.0), "S": (0.0, 100.0), "C": (0.1, 100.0)}), book, risk=risk)
    assert verdicts(p) == {"B": (True, "MAX_ORDER_NOTIONAL"), "S": (True, "MAX_ORDER_NOTIONAL"), "C": (True, None)}
    # B wants 300 shares ($99,900): floor(50,000 / 333) = 150. S wants to sell 1,000 ($100,000): 500.
    assert orders(p) == [("S", OrderSide.SELL, 500.0), ("B", OrderSide.BUY, 150.0), ("C", OrderSide.BUY, 100.0)]
    assert all(i.qty * i.reference_price <= risk.max_order_notional for i in p.intents)


def test_plan_when_one_share_costs_more_than_max_order_notional_then_denied() -> None:
    risk = RiskOverlaysConfig(max_order_notional=1_000.0)
    p = plan(batch({"BRK": (1.0, 5_000.0)}), Portfolio(1_000_000.0), risk=risk)
    assert verdicts(p) == {"BRK": (False, "MAX_ORDER_NOTIONAL")}
    assert p.intents == ()


# ---- order budget (rolling-window throttle) --------------------------------------------------------------

def _budget_case(budget: int | None) -> TimestepPlan:
    book = Portfolio(800_000.0, {"Y": Position("Y", 1_000, 100.0), "Z": Position("Z", 1_000, 100.0)})
    decisions = batch({"A": (1.0, 100.0), "Z": (0.0, 100.0), "B": (1.0, 100.0), "Y": (0.0, 100.0)})
    return plan(decisions, book, order_budget=budget)


@pytest.mark.parametrize(("budget", "sent", "throttled"), [
    (None, ["Z", "Y", "A", "B"], set()),
    (4, ["Z", "Y", "A", "B"], set()),
    (3, ["Z", "Y", "A"], {"B"}),
    (2, ["Z", "Y"], {"A", "B"}),
    (1, ["Z"], {"Y", "A", "B"}),
    (0, [], {"Z", "Y", "A", "B"}),
])
def test_plan_when_order_budget_short_then_reductions_first_and_rest_denied_order_rate_limit(
    budget: int | None, sent: list[str], throttled: set[str]
) -> None:
    p = _budget_case(budget)
    assert [i.symbol for i in p.intents] == sent
    assert {s for s, (ok, code) in verdicts(p).items() if (ok, code) == (False, "ORDER_RATE_LIMIT")} == throttled
    assert all(ok for s, (ok, _) in verdicts(p).items() if s not in throttled)
    sides = {i.symbol: (i.side, i.qty) for i in p.intents}
    assert all(sides[s] == (OrderSide.SELL, 1000.0) for s in sent if s in {"Y", "Z"})


# ---- restricted symbols ------------------------------------------------------------------------------------

def test_plan_when_symbol_restricted_then_denied_even_a_reduction() -> None:
    risk = RiskOverlaysConfig(restricted_symbols=("aapl", "TSLA"))  # case does not matter
    book = Portfolio(900_000.0, {"AAPL": Position("AAPL", 1_000, 100.0)})
    p = plan(batch({"AAPL": (0.0, 100.0), "TSLA": (1.0, 200.0), "MSFT": (1.0, 100.0)}), book, risk=risk)
    assert verdicts(p) == {"AAPL": (False, "RESTRICTED_SYMBOL"), "TSLA": (False, "RESTRICTED_SYMBOL"),
                           "MSFT": (True, None)}
    assert orders(p) == [("MSFT", OrderSide.BUY, 1000.0)]


# ---- market hours -----------------------------------------------------------------------------------------

def test_plan_when_market_closed_then_every_decision_denied_market_closed_and_nothing_sent() -> None:
    book = Portfolio(900_000.0, {"Y": Position("Y", 1_000, 100.0)})
    p = plan(batch({"A": (1.0, 100.0), "Y": (0.0, 100.0)}), book, market_open=False)
    assert verdicts(p) == {"A": (False, "MARKET_CLOSED"), "Y": (False, "MARKET_CLOSED")}
    assert p.intents == ()
    assert p.risk[1].target_weight == pytest.approx(0.1)  # Y is still held


def test_plan_when_several_rules_deny_then_the_earliest_rule_is_the_reason() -> None:
    risk = RiskOverlaysConfig(restricted_symbols=("R",))
    decisions = batch({"R": (1.0, 100.0), "P": (1.0, 100.0)})
    pending = frozenset({"R", "P"})
    assert verdicts(plan(decisions, Portfolio(1e6), risk=risk, market_open=False, pending_symbols=pending,
                         state=TradingState.HALTED)) == {"R": (False, "TRADING_HALTED"), "P": (False, "TRADING_HALTED")}
    assert verdicts(plan(decisions, Portfolio(1e6), risk=risk, market_open=False, pending_symbols=pending)) == {
        "R": (False, "RESTRICTED_SYMBOL"), "P": (False, "MARKET_CLOSED")}
    assert verdicts(plan(decisions, Portfolio(1e6), risk=risk, pending_symbols=pending)) == {
        "R": (False, "RESTRICTED_SYMBOL"), "P": (False, "ORDER_PENDING")}


# ---- short sale -------------------------------------------------------------------------------------------

def test_plan_when_long_only_then_no_new_short_and_long_goes_flat_at_most() -> None:
    risk = RiskOverlaysConfig(short_sale=ShortSaleRule(allowed=False))
    book = Portfolio(950_000.0, {"L": Position("L", 500, 100.0)})  # 5% long
    p = plan(batch({"N": (-1.0, 100.0), "L": (-1.0, 100.0), "B": (0.5, 100.0)}), book, risk=risk)
    assert verdicts(p) == {"N": (False, "SHORT_SALE_RESTRICTED"), "L": (True, "SHORT_SALE_RESTRICTED"),
                           "B": (True, None)}
    assert orders(p) == [("L", OrderSide.SELL, 500.0), ("B", OrderSide.BUY, 500.0)]


def test_plan_when_long_only_and_short_held_then_it_may_shrink_but_not_grow() -> None:
    risk = RiskOverlaysConfig(short_sale=ShortSaleRule(allowed=False))
    # -5% in G (would grow to -10%) and -5% in S (asked to shrink to -2%).
    book = Portfolio(1_100_000.0, {"G": Position("G", -500, 100.0), "S": Position("S", -500, 100.0)})
    p = plan(batch({"G": (-1.0, 100.0), "S": (-0.2, 100.0)}), book, risk=risk)
    assert verdicts(p) == {"G": (False, "SHORT_SALE_RESTRICTED"), "S": (True, None)}
    assert orders(p) == [("S", OrderSide.BUY, 300.0)]
    assert by_symbol(p)["G"].target_weight == pytest.approx(-0.05)


def test_plan_when_symbol_not_shortable_then_only_that_symbol_is_long_only() -> None:
    risk = RiskOverlaysConfig(short_sale=ShortSaleRule(allowed=True, not_shortable=("HTB",)))
    p = plan(batch({"HTB": (-1.0, 100.0), "EZ": (-1.0, 100.0)}), Portfolio(1_000_000.0), risk=risk)
    assert verdicts(p) == {"HTB": (False, "SHORT_SALE_RESTRICTED"), "EZ": (True, None)}
    assert orders(p) == [("EZ", OrderSide.SELL, 1000.0)]
    assert "not shortable" in by_symbol(p)["HTB"].detail


# ---- master overlay: defensive directive and stale directive ----------------------------------------------

def test_plan_when_defensive_directive_then_no_new_exposure_and_reductions_allowed() -> None:
    defensive = directive("defensive", max_position_size=0.10, risk_scale=1.0)
    book = Portfolio(800_000.0, {"R": Position("R", 1_000, 100.0), "F": Position("F", 1_000, 100.0)})
    p = plan(batch({"N": (1.0, 100.0), "R": (0.2, 100.0), "F": (-1.0, 100.0)}), book, directive=defensive)
    assert verdicts(p) == {"N": (False, "DEFENSIVE_MODE"), "R": (True, None), "F": (True, "DEFENSIVE_MODE")}
    # R: 10% -> 0.2 x 10% = 2% (sell 800); F: a flip is cut at flat (sell 1000).
    assert orders(p) == [("R", OrderSide.SELL, 800.0), ("F", OrderSide.SELL, 1000.0)]
    assert not p.directive_fallback


def test_plan_when_directive_older_than_ttl_then_defensive_fallback_applies() -> None:
    stale = directive("normal", issued_at=T0, ttl_seconds=3600)
    book = Portfolio(900_000.0, {"H": Position("H", 1_000, 100.0)})  # 10% long
    decisions = batch({"N": (1.0, 100.0), "H": (1.0, 100.0)}, at=T0 + timedelta(hours=2))
    p = plan(decisions, book, directive=stale)
    assert p.directive_fallback and p.overlay.mode == RISK.missing_directive_fallback
    assert verdicts(p) == {"N": (False, "DEFENSIVE_MODE"), "H": (True, None)}
    # defensive preset: min(0.10, 0.02) x 0.25 = 0.5% of 1.0M = 50 shares kept.
    assert orders(p) == [("H", OrderSide.SELL, 950.0)]
    live = plan(decisions, book, directive=directive("normal", issued_at=T0 + timedelta(hours=1), ttl_seconds=3600))
    assert not live.directive_fallback and orders(live) == [("N", OrderSide.BUY, 1000.0)]  # H already at 10%


def test_plan_when_gateway_max_ttl_shorter_than_directive_ttl_then_fallback() -> None:
    fresh = directive("normal", issued_at=T0, ttl_seconds=86_400)
    decisions = batch({"N": (1.0, 100.0)}, at=T0 + timedelta(minutes=20))
    assert orders(plan(decisions, Portfolio(1e6), directive=fresh)) == [("N", OrderSide.BUY, 1000.0)]
    p = plan(decisions, Portfolio(1e6), directive=fresh, max_directive_ttl_seconds=600)
    assert p.directive_fallback and verdicts(p) == {"N": (False, "DEFENSIVE_MODE")}


# ---- trading state ----------------------------------------------------------------------------------------

def test_plan_when_reducing_then_increases_denied_flips_cut_at_flat_and_reductions_sent() -> None:
    book = Portfolio(800_000.0, {"F": Position("F", 1_000, 100.0), "R": Position("R", 1_000, 100.0)})
    p = plan(batch({"N": (1.0, 100.0), "F": (-1.0, 100.0), "R": (0.5, 100.0)}), book, state=TradingState.REDUCING)
    assert verdicts(p) == {"N": (False, "TRADING_REDUCING"), "F": (True, "TRADING_REDUCING"), "R": (True, None)}
    assert orders(p) == [("F", OrderSide.SELL, 1000.0), ("R", OrderSide.SELL, 500.0)]


def test_plan_when_halted_then_nothing_sent_not_even_reductions() -> None:
    book = Portfolio(900_000.0, {"R": Position("R", 1_000, 100.0)})
    p = plan(batch({"N": (1.0, 100.0), "R": (0.0, 100.0)}), book, state=TradingState.HALTED)
    assert verdicts(p) == {"N": (False, "TRADING_HALTED"), "R": (False, "TRADING_HALTED")}
    assert p.intents == () and p.flatten == ()


# ---- safe mode: gradual flatten ----------------------------------------------------------------------------

def test_plan_when_safe_mode_then_decisions_denied_and_held_symbols_closed_by_schedule() -> None:
    book = Portfolio(1_000_000.0, {"L": Position("L", 1_000, 100.0), "S": Position("S", -400, 50.0),
                                   "Q": Position("Q", 300, 20.0)})
    book.mark({"Q": 25.0})
    decisions = batch({"L": (1.0, 110.0), "S": (0.0, 50.0), "N": (1.0, 10.0)}, bar_index=7)
    p = plan(decisions, book, state=TradingState.HALTED, flatten={"L": 250.0, "S": 100.0, "Q": 75.0, "N": 10.0})
    assert verdicts(p) == {"L": (False, "TRADING_HALTED"), "S": (False, "TRADING_HALTED"),
                           "N": (False, "TRADING_HALTED")}
    # Largest position first; Q has no decision and is priced at its mark.
    assert [(i.symbol, i.side, i.qty, i.reference_price) for i in p.intents] == [
        ("L", OrderSide.SELL, 250.0, 110.0), ("S", OrderSide.BUY, 100.0, 50.0), ("Q", OrderSide.SELL, 75.0, 25.0)]
    assert p.flatten == p.intents
    assert p.intents[0].client_order_id == client_order_id("v1:flatten", "L", 7, intent_text(OrderSide.SELL, 250.0))
    assert "safe mode: closing 250 shares" in by_symbol(p)["L"].detail
    assert "safe mode: closing 100 shares" in by_symbol(p)["S"].detail
    assert "N" not in p.flatten_detail  # not held: nothing to close


def test_plan_when_flatten_allows_more_than_held_then_closes_to_zero_without_flipping() -> None:
    book = Portfolio(1_000_000.0, {"L": Position("L", 37, 100.0), "S": Position("S", -12.5, 40.0)})
    p = plan(batch({"L": (1.0, 100.0), "S": (1.0, 40.0)}), book, state=TradingState.HALTED,
             flatten={"L": 1_000.0, "S": math.inf})
    assert orders(p) == [("L", OrderSide.SELL, 37.0), ("S", OrderSide.BUY, 12.5)]


def test_plan_when_safe_mode_and_symbol_restricted_pending_or_unpriced_then_not_closed() -> None:
    risk = RiskOverlaysConfig(restricted_symbols=("R",))
    book = Portfolio(1_000_000.0, {s: Position(s, 100, 10.0) for s in ("R", "P", "X", "OK")})
    bad = SymbolDecision.model_construct(symbol="X", action=0, target_level=0.0, probabilities=(), price=math.nan)
    decisions = TimestepDecisions(timestep=T0, bar_index=1, policy_version="v1", decisions=(
        bad, SymbolDecision(symbol="R", action=0, target_level=0.0, price=10.0)))
    p = plan(decisions, book, risk=risk, state=TradingState.HALTED, pending_symbols=frozenset({"P"}),
             flatten={s: 50.0 for s in ("R", "P", "X", "OK")})
    assert orders(p) == [("OK", OrderSide.SELL, 50.0)]
    assert "RESTRICTED_SYMBOL" in p.flatten_detail["R"] and "RESTRICTED_SYMBOL" in by_symbol(p)["R"].detail
    assert "ORDER_PENDING" in p.flatten_detail["P"]
    assert "NO_PRICE" in p.flatten_detail["X"]
    assert verdicts(p) == {"X": (False, "TRADING_HALTED"), "R": (False, "TRADING_HALTED")}


def test_plan_when_safe_mode_and_market_closed_or_no_budget_then_nothing_closed() -> None:
    book = Portfolio(1_000_000.0, {"A": Position("A", 100, 10.0), "B": Position("B", 200, 10.0)})
    decisions = batch({"A": (0.0, 10.0)})
    closed = plan(decisions, book, state=TradingState.HALTED, flatten={"A": 50.0, "B": 50.0}, market_open=False)
    assert closed.intents == () and "MARKET_CLOSED" in closed.flatten_detail["A"]
    one = plan(decisions, book, state=TradingState.HALTED, flatten={"A": 50.0, "B": 50.0}, order_budget=1)
    assert orders(one) == [("B", OrderSide.SELL, 50.0)]  # the larger position gets the only order
    assert "ORDER_RATE_LIMIT" in one.flatten_detail["A"]


def test_plan_when_flatten_given_but_not_halted_then_schedule_ignored() -> None:
    book = Portfolio(900_000.0, {"A": Position("A", 1_000, 100.0)})
    p = plan(batch({"A": (1.0, 100.0)}), book, flatten={"A": 500.0})
    assert p.intents == () and p.flatten == ()
    assert verdicts(p) == {"A": (True, None)}


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.4, 0.3, 0.25, 0.1])
def test_flatten_when_applied_each_interval_with_fills_then_flat_in_ceil_one_over_fraction(fraction: float) -> None:
    safe_mode = SafeModeConfig(flatten_fraction_per_interval=fraction)
    start = {"L": (1_000.0, 100.0), "S": (-400.0, 50.0), "F": (10.5, 30.0)}
    book = Portfolio(500_000.0, {s: Position(s, q, p) for s, (q, p) in start.items()})
    # The schedule the lead's safe mode builds: a fixed fraction of each position's size when it began.
    schedule = {s: safe_mode.flatten_fraction_per_interval * abs(q) for s, (q, _) in start.items()}
    history: dict[str, list[float]] = {s: [q] for s, (q, _) in start.items()}
    intervals = 0
    for bar in range(1, 50):
        if not book.positions():
            break
        p = plan(batch({s: (0.0, price) for s, (_, price) in start.items()}, bar_index=bar), book,
                 state=TradingState.HALTED, flatten=schedule)
        assert p.intents, "a held position with a price must get a closing order"
        for intent in p.intents:
            book.apply_fill(fill(intent.symbol, intent.side, intent.qty, intent.reference_price,
                                 intent.client_order_id))
        for s in start:
            history[s].append(book.qty(s))
        intervals += 1
    assert book.positions() == {}
    expected = math.ceil(1 / fraction)
    assert intervals <= expected
    # L and S are whole multiples of the schedule: exactly ceil(1/fraction) intervals.
    assert sum(1 for a, b in zip(history["L"], history["L"][1:]) if a != b) == expected
    for s, (q0, _) in start.items():
        seen = history[s]
        assert all(math.copysign(1, x) == math.copysign(1, q0) or x == 0 for x in seen), f"{s} flipped: {seen}"
        assert all(abs(b) <= abs(a) for a, b in zip(seen, seen[1:])), f"{s} grew: {seen}"


def test_flatten_when_order_above_max_order_notional_then_cut() -> None:
    risk = RiskOverlaysConfig(max_order_notional=10_000.0)
    book = Portfolio(0.0, {"A": Position("A", 1_000, 100.0)})
    p = plan(batch({"A": (0.0, 100.0)}), book, risk=risk, state=TradingState.HALTED, flatten={"A": 500.0})
    assert orders(p) == [("A", OrderSide.SELL, 100.0)]
    assert "MAX_ORDER_NOTIONAL" in p.flatten_detail["A"]


# ---- default config and default arguments: the plan the rules always made ---------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_when_default_config_and_arguments_then_orders_are_the_plain_overlay_targets(seed: int) -> None:
    rng = random.Random(seed)
    # 12 symbols x at most 10% each stays inside 1.5x gross, so only the overlay and whole shares act.
    symbols = [f"S{i:02d}" for i in range(12)]
    prices = {s: round(rng.uniform(5.0, 500.0), 2) for s in symbols}
    held = {s: float(rng.randint(-150, 150)) for s in rng.sample(symbols, 6)}
    cash = 1_000_000.0
    book = Portfolio(cash, {s: Position(s, q, prices[s] * rng.uniform(0.8, 1.2)) for s, q in held.items()})
    levels = {s: rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0]) for s in symbols}
    decisions = batch({s: (levels[s], prices[s]) for s in symbols}, bar_index=seed)

    p = plan_timestep(decisions, directive=NORMAL, portfolio=book, trading_state=TradingState.ACTIVE, risk=RISK)

    equity = cash + sum(q * prices[s] for s, q in held.items())
    assert p.equity == pytest.approx(equity)
    expected: list[tuple[str, OrderSide, float, bool]] = []
    for s in symbols:
        raw = levels[s] * 0.10 * equity / prices[s]
        target = float(math.trunc(raw + math.copysign(1e-9, raw))) if raw else 0.0
        current = held.get(s, 0.0)
        delta = target - current
        if delta == 0 or abs(delta) * prices[s] < 1.0:
            continue
        reduces = abs(target) < abs(current) and (target == 0 or (target > 0) == (current > 0))
        expected.append((s, OrderSide.BUY if delta > 0 else OrderSide.SELL, abs(delta), reduces))
    expected.sort(key=lambda row: 0 if row[3] else 1)
    assert [(i.symbol, i.side, i.qty) for i in p.intents] == [row[:3] for row in expected]
    assert all(r.approved and r.reason_code is None for r in p.risk)
    assert [i.client_order_id for i in p.intents] == [
        client_order_id("v1", i.symbol, seed, intent_text(i.side, i.qty)) for i in p.intents]
    assert p.flatten == () and p.flatten_detail == {}
    explicit = plan_timestep(decisions, directive=NORMAL, portfolio=book, trading_state=TradingState.ACTIVE,
                             risk=RISK, max_directive_ttl_seconds=None, pending_symbols=frozenset(),
                             market_open=True, order_budget=None, flatten=None)
    assert explicit == p

