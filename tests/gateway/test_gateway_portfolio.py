import math

import pytest
from gateway_builders import fill

from contracts.orders import OrderSide
from gateway.domain.portfolio import Portfolio, Position
from gateway.errors import PortfolioError


def test_apply_fill_when_buying_twice_then_average_price_is_weighted() -> None:
    book = Portfolio(10_000.0)
    book.apply_fill(fill("AAPL", OrderSide.BUY, 10, 100.0))
    book.apply_fill(fill("AAPL", OrderSide.BUY, 30, 120.0))
    position = book.positions()["AAPL"]
    assert position.qty == 40
    assert position.avg_price == pytest.approx((10 * 100 + 30 * 120) / 40)
    assert book.cash == pytest.approx(10_000 - 1_000 - 3_600)


def test_apply_fill_when_partial_sell_then_average_price_kept_and_cash_credited() -> None:
    book = Portfolio(0.0, {"AAPL": Position("AAPL", 10, 100.0)})
    book.apply_fill(fill("AAPL", OrderSide.SELL, 4, 150.0))
    assert book.qty("AAPL") == 6
    assert book.positions()["AAPL"].avg_price == 100.0
    assert book.cash == pytest.approx(600.0)


def test_apply_fill_when_selling_short_then_negative_qty_and_proceeds_in_cash() -> None:
    book = Portfolio(1_000.0)
    book.apply_fill(fill("TSLA", OrderSide.SELL, 5, 200.0))
    book.mark({"TSLA": 180.0})
    assert book.qty("TSLA") == -5
    assert book.cash == pytest.approx(2_000.0)
    assert book.equity == pytest.approx(2_000.0 - 5 * 180.0)  # the short gained 100
    assert book.weight("TSLA") == pytest.approx(-900.0 / 1_100.0)


def test_apply_fill_when_crossing_through_zero_then_remainder_priced_at_fill() -> None:
    book = Portfolio(0.0, {"AAPL": Position("AAPL", 10, 100.0)})
    book.apply_fill(fill("AAPL", OrderSide.SELL, 15, 110.0))
    position = book.positions()["AAPL"]
    assert position.qty == -5
    assert position.avg_price == 110.0


def test_apply_fill_when_covering_short_fully_then_position_removed() -> None:
    book = Portfolio(2_000.0, {"TSLA": Position("TSLA", -5, 200.0)})
    book.apply_fill(fill("TSLA", OrderSide.BUY, 5, 190.0))
    assert "TSLA" not in book.positions()
    assert book.cash == pytest.approx(2_000.0 - 950.0)


def test_apply_fill_when_partial_fills_of_one_order_then_same_as_one_fill() -> None:
    split = Portfolio(10_000.0)
    split.apply_fill(fill("AAPL", OrderSide.BUY, 3, 100.0))
    split.apply_fill(fill("AAPL", OrderSide.BUY, 7, 101.0))
    whole = Portfolio(10_000.0)
    whole.apply_fill(fill("AAPL", OrderSide.BUY, 10, (3 * 100.0 + 7 * 101.0) / 10))
    assert split.qty("AAPL") == whole.qty("AAPL")
    assert split.positions()["AAPL"].avg_price == pytest.approx(whole.positions()["AAPL"].avg_price)
    assert split.cash == pytest.approx(whole.cash)


def test_mark_when_equity_falls_then_drawdown_from_peak() -> None:
    book = Portfolio(0.0, {"AAPL": Position("AAPL", 100, 100.0)})
    book.mark({"AAPL": 120.0})
    book.mark({"AAPL": 90.0})
    assert book.peak_equity == pytest.approx(12_000.0)
    assert book.drawdown == pytest.approx(1 - 9_000 / 12_000)
    assert book.gross_exposure == pytest.approx(1.0)


def test_mark_when_price_not_finite_then_previous_mark_kept() -> None:
    book = Portfolio(0.0, {"AAPL": Position("AAPL", 1, 100.0)})
    book.mark({"AAPL": 105.0})
    book.mark({"AAPL": math.inf})
    assert book.mark_of("AAPL") == 105.0


def test_apply_fill_when_price_infinite_then_portfolio_error_names_order() -> None:
    book = Portfolio(0.0)
    bad = fill("AAPL", OrderSide.BUY, 1, 100.0).model_copy(update={"price": math.inf})
    with pytest.raises(PortfolioError, match="mo-test"):
        book.apply_fill(bad)
    assert book.positions() == {}


def test_from_broker_when_snapshot_given_then_positions_valued_at_entry_until_marked() -> None:
    book = Portfolio.from_broker(500.0, {"AAPL": (10.0, 100.0), "DUST": (0.0, 1.0)})
    assert set(book.positions()) == {"AAPL"}
    assert book.equity == pytest.approx(1_500.0)
