from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from contracts.config import RiskOverlaysConfig
from contracts.decisions import MasterDirective, directive_from_preset
from contracts.orders import OrderSide, TradingState

from agents.book import DEFAULT_INITIAL_CASH, BacktestBook, BookStep
from agents.errors import InputShapeError

SYMBOLS = ("AAA", "BBB")
T0 = datetime(2024, 1, 2, 21, 0, tzinfo=timezone.utc)
# 1 bp commission + half of a 4 bp spread + 2 bp slippage = 5 bp per unit of traded notional.
COST_RATE = (1.0 + 4.0 / 2 + 2.0) * 1e-4


@pytest.fixture
def priced_risk() -> RiskOverlaysConfig:
    """Default caps and presets (normal: 10% per symbol; defensive: 2% x 0.25), costs chosen for the test."""
    return RiskOverlaysConfig(commission_bps=1.0, spread_bps=4.0, slippage_bps=2.0)


def _directive(mode: str, risk: RiskOverlaysConfig, at: datetime = T0) -> MasterDirective:
    return directive_from_preset(
        directive_id=f"test-{mode}",
        issued_at=at,
        ttl_seconds=10 * 86400.0,
        mode=mode,  # type: ignore[arg-type]
        preset=risk.directive_presets[mode],
        policy_version="test",
    )


def _step(
    book: BacktestBook,
    prices: list[float],
    levels: list[float],
    directive: MasterDirective | None,
    *,
    bar: int = 0,
    state: TradingState = TradingState.ACTIVE,
) -> BookStep:
    return book.step(
        timestep=T0 + timedelta(days=bar),
        bar_index=bar,
        prices=np.array(prices, dtype=np.float64),
        actions=np.arange(len(prices), dtype=np.int64),
        levels=np.array(levels, dtype=np.float64),
        directive=directive,
        trading_state=state,
    )


def test_step_when_normal_directive_then_buys_whole_shares_of_the_target_weight(priced_risk) -> None:
    book = BacktestBook(SYMBOLS, priced_risk)
    step = _step(book, [333.0, 70.0], [1.0, 0.5], _directive("normal", priced_risk))

    # level 1.0 -> 10% of 1,000,000 = 100,000 at 333 -> 300.3 shares -> 300 whole shares;
    # level 0.5 -> 5% = 50,000 at 70 -> 714.28 shares -> 714.
    assert [(i.symbol, i.side, i.qty, i.reference_price) for i in step.intents] == [
        ("AAA", OrderSide.BUY, 300.0, 333.0),
        ("BBB", OrderSide.BUY, 714.0, 70.0),
    ]
    np.testing.assert_array_equal(step.qty_after, [300.0, 714.0])
    np.testing.assert_array_equal(book.quantities(), [300.0, 714.0])
    assert book.portfolio.cash == pytest.approx(1_000_000.0 - 300 * 333.0 - 714 * 70.0, abs=1e-9)
    assert step.denied == 0


def test_step_when_orders_fill_then_costs_are_notional_times_cost_rate(priced_risk) -> None:
    book = BacktestBook(SYMBOLS, priced_risk)
    step = _step(book, [333.0, 70.0], [1.0, 0.5], _directive("normal", priced_risk))

    expected = np.array([300 * 333.0 * COST_RATE, 714 * 70.0 * COST_RATE])
    np.testing.assert_allclose(step.costs, expected, rtol=1e-12)
    assert [i.estimated_cost for i in step.intents] == pytest.approx(expected.tolist(), rel=1e-12)
    assert book.total_costs == pytest.approx(expected.sum(), rel=1e-12)
    # Fills at the reference price move cash into shares of equal value; the costs live in their own ledger.
    assert step.equity == pytest.approx(DEFAULT_INITIAL_CASH, abs=1e-6)
    assert book.net_equity == pytest.approx(DEFAULT_INITIAL_CASH - expected.sum(), abs=1e-6)


def test_net_equity_when_prices_move_and_book_rebalances_then_equals_equity_less_all_costs(priced_risk) -> None:
    book = BacktestBook(SYMBOLS, priced_risk)
    normal = _directive("normal", priced_risk)
    first = _step(book, [100.0, 50.0], [1.0, 1.0], normal)
    book.mark(np.array([110.0, 45.0]))
    marked_equity = 1_000_000.0 + 1000 * 10.0 + 2000 * -5.0  # 1000 AAA gain 10, 2000 BBB lose 5
    assert book.equity == pytest.approx(marked_equity, abs=1e-6)
    assert book.net_equity == pytest.approx(book.equity - first.costs.sum(), abs=1e-9)

    second = _step(book, [110.0, 45.0], [1.0, 1.0], normal, bar=1)
    # Same equity (1,000,000): AAA target 100,000 / 110 = 909.09 -> 909 (sell 91); BBB 100,000 / 45 -> 2222 (buy 222).
    assert [(i.symbol, i.side, i.qty) for i in second.intents] == [
        ("AAA", OrderSide.SELL, 91.0),
        ("BBB", OrderSide.BUY, 222.0),
    ]
    assert book.total_costs == pytest.approx(first.costs.sum() + second.costs.sum(), rel=1e-12)
    assert second.costs.sum() == pytest.approx((91 * 110.0 + 222 * 45.0) * COST_RATE, rel=1e-12)
    assert book.net_equity == pytest.approx(book.equity - book.total_costs, abs=1e-9)


def test_step_when_reducing_and_increasing_orders_then_reductions_come_first(priced_risk) -> None:
    book = BacktestBook(SYMBOLS, priced_risk)
    normal = _directive("normal", priced_risk)
    _step(book, [100.0, 50.0], [0.0, 1.0], normal)
    step = _step(book, [100.0, 50.0], [1.0, 0.0], normal, bar=1)
    assert [(i.symbol, i.side) for i in step.intents] == [("BBB", OrderSide.SELL), ("AAA", OrderSide.BUY)]


def test_step_when_defensive_directive_then_no_position_grows(priced_risk) -> None:
    book = BacktestBook(SYMBOLS, priced_risk)
    _step(book, [333.0, 70.0], [0.25, 0.0], _directive("normal", priced_risk))
    before = book.quantities()
    assert before.tolist() == [75.0, 0.0]  # 2.5% of 1,000,000 = 25,000 at 333 -> 75.07 -> 75

    step = _step(book, [333.0, 70.0], [1.0, 1.0], _directive("defensive", priced_risk, T0 + timedelta(days=1)), bar=1)

    assert step.overlay.defensive and step.overlay.mode == "defensive" and not step.overlay.fallback
    assert all(i.side == OrderSide.SELL for i in step.intents)
    assert np.all(np.abs(step.qty_after) <= np.abs(before))
    # Defensive level 1.0 = 2% x 0.25 = 0.5% weight: AAA (2.5%) is cut to 5,000 / 333 -> 15 shares;
    # BBB is flat, so buying is denied (DEFENSIVE_MODE) rather than sent.
    assert step.qty_after.tolist() == [15.0, 0.0]
    assert step.denied == 1


def test_step_when_trading_halted_then_nothing_is_sent_not_even_reductions(priced_risk) -> None:
    book = BacktestBook(SYMBOLS, priced_risk)
    normal = _directive("normal", priced_risk)
    _step(book, [100.0, 50.0], [1.0, 1.0], normal)
    held, costs_before = book.quantities(), book.total_costs

    step = _step(book, [100.0, 50.0], [0.0, 0.5], normal, bar=1, state=TradingState.HALTED)

    assert step.intents == ()
    assert step.denied == len(SYMBOLS)
    np.testing.assert_array_equal(step.qty_after, held)
    np.testing.assert_array_equal(step.costs, [0.0, 0.0])
    assert book.total_costs == costs_before


def test_step_when_no_directive_then_defensive_fallback_buys_nothing(priced_risk) -> None:
    assert priced_risk.missing_directive_fallback == "defensive"
    book = BacktestBook(SYMBOLS, priced_risk)
    step = _step(book, [100.0, 50.0], [1.0, 1.0], None)
    assert step.overlay.fallback and step.overlay.defensive
    assert step.intents == ()
    assert book.quantities().tolist() == [0.0, 0.0]
    assert book.net_equity == DEFAULT_INITIAL_CASH


def test_step_when_directive_older_than_book_ttl_then_fallback_applies(priced_risk) -> None:
    book = BacktestBook(SYMBOLS, priced_risk, max_directive_ttl_seconds=86400.0)
    stale = _directive("normal", priced_risk, T0 - timedelta(days=2))
    step = _step(book, [100.0, 50.0], [1.0, 1.0], stale)
    assert step.overlay.fallback
    assert step.intents == ()


def test_book_when_no_symbols_or_bad_cash_then_input_shape_error(priced_risk) -> None:
    with pytest.raises(InputShapeError, match="at least one symbol"):
        BacktestBook((), priced_risk)
    with pytest.raises(InputShapeError, match="initial_cash"):
        BacktestBook(SYMBOLS, priced_risk, initial_cash=0.0)
    with pytest.raises(InputShapeError, match="initial_cash"):
        BacktestBook(SYMBOLS, priced_risk, initial_cash=float("nan"))


def test_step_when_levels_do_not_match_symbols_then_input_shape_error_names_shapes(priced_risk) -> None:
    book = BacktestBook(SYMBOLS, priced_risk)
    with pytest.raises(InputShapeError, match=r"one price, action and level per symbol expected \(2\)"):
        _step(book, [100.0, 50.0], [1.0, 1.0, 1.0], None)
