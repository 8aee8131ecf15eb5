import math
from collections.abc import Callable

import numpy as np
import pytest

from contracts.config import RiskOverlaysConfig

from agents.evaluation import evaluate_symbol_policy
from agents.inputs import SYMBOL_MARKET_DIM
from agents.metrics import max_drawdown, profit_factor, sharpe_ratio

ZERO_COST = RiskOverlaysConfig(commission_bps=0.0, spread_bps=0.0, slippage_bps=0.0)


def constant(action: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda obs: np.full(obs.shape[0], action, dtype=np.int64)


def test_evaluate_when_policy_stays_flat_then_no_trades_and_zero_everything(risk: RiskOverlaysConfig) -> None:
    market = np.zeros((5, 3, SYMBOL_MARKET_DIM))
    result = evaluate_symbol_policy(constant(0), market, np.full((5, 3), 0.01), risk)
    assert result["n_trades"] == 0.0 and result["turnover"] == 0.0
    assert result["total_return"] == 0.0 and result["sharpe"] == 0.0 and result["max_drawdown"] == 0.0
    assert result["n_steps"] == 5.0


def test_evaluate_when_fully_invested_then_return_and_drawdown_match_hand_computation() -> None:
    returns = np.array([[0.1, 0.1], [-0.2, -0.2], [0.1, 0.1]])
    market = np.zeros((3, 2, SYMBOL_MARKET_DIM))
    result = evaluate_symbol_policy(constant(4), market, returns, ZERO_COST)
    portfolio = np.array([0.02, -0.04, 0.02])  # 2 symbols x 0.10 weight
    assert result["total_return"] == pytest.approx(1.02 * 0.96 * 1.02 - 1.0)
    assert result["max_drawdown"] == pytest.approx(0.04)
    assert result["sharpe"] == pytest.approx(portfolio.mean() / portfolio.std(ddof=1) * math.sqrt(252))
    assert result["n_trades"] == 2.0  # bought once per symbol, then held
    assert result["turnover"] == pytest.approx(0.2)
    assert result["mean_gross_exposure"] == pytest.approx(0.2)


def test_evaluate_when_directive_mode_given_then_positions_are_smaller(risk: RiskOverlaysConfig) -> None:
    market = np.zeros((4, 2, SYMBOL_MARKET_DIM))
    returns = np.full((4, 2), 0.01)
    normal = evaluate_symbol_policy(constant(4), market, returns, risk)
    cautious = evaluate_symbol_policy(constant(4), market, returns, risk, directive_mode="cautious")
    assert cautious["mean_gross_exposure"] == pytest.approx(2 * 0.03)
    assert 0.0 < cautious["total_return"] < normal["total_return"]


def test_metrics_when_series_hand_made_then_values_match() -> None:
    assert max_drawdown(np.array([0.1, -0.5, 0.2])) == pytest.approx(0.5)
    assert max_drawdown(np.array([-0.1])) == pytest.approx(0.1)
    assert profit_factor(np.array([0.02, -0.01, 0.01])) == pytest.approx(3.0)
    assert profit_factor(np.array([0.01])) == math.inf
    assert profit_factor(np.array([0.0])) == 0.0
    assert sharpe_ratio(np.full(10, 0.01)) == 0.0
