import hashlib

import pytest

from contracts.orders import OrderSide
from gateway.domain.orders import client_order_id, intent_text, order_delta, whole_target_qty


def test_client_order_id_when_same_inputs_then_same_id_and_documented_formula() -> None:
    first = client_order_id("v7", "AAPL", 42, intent_text(OrderSide.BUY, 10.0))
    second = client_order_id("v7", "AAPL", 42, intent_text(OrderSide.BUY, 10))
    expected = "mo-" + hashlib.sha256(b"v7|AAPL|42|buy:10").hexdigest()[:32]
    assert first == second == expected
    assert len(first) == 35


@pytest.mark.parametrize("change", [("v8", "AAPL", 42, "buy:10"), ("v7", "MSFT", 42, "buy:10"),
                                    ("v7", "AAPL", 43, "buy:10"), ("v7", "AAPL", 42, "sell:10")])
def test_client_order_id_when_any_input_differs_then_id_differs(change: tuple[str, str, int, str]) -> None:
    assert client_order_id(*change) != client_order_id("v7", "AAPL", 42, "buy:10")


def test_whole_target_qty_when_fractional_then_truncated_toward_zero() -> None:
    assert whole_target_qty(0.1, 1_000_000, 301.0) == 332.0
    assert whole_target_qty(-0.1, 1_000_000, 301.0) == -332.0


def test_whole_target_qty_when_float_noise_below_integer_then_not_dropped_a_share() -> None:
    assert whole_target_qty(0.29, 100.0, 1.0) == 29.0  # 0.29 * 100 = 28.999999999999996 in floats


def test_order_delta_when_target_zero_then_closes_fractional_position_exactly() -> None:
    assert order_delta(0.0, 1_000.0, 10.0, 3.25) == -3.25


def test_order_delta_when_position_matches_target_then_zero() -> None:
    assert order_delta(0.05, 100_000.0, 50.0, 100.0) == 0.0
