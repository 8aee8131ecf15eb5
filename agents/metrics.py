"""Performance statistics of a series of per-bar portfolio returns."""

import math

import numpy as np

TRADING_DAYS_PER_YEAR = 252


def sharpe_ratio(returns: np.ndarray, periods_per_year: int = TRADING_DAYS_PER_YEAR) -> float:
    """Annualised Sharpe ratio (zero risk-free rate); 0.0 when the returns do not vary."""
    if returns.size < 2:
        return 0.0
    std = float(returns.std(ddof=1))
    if std <= 1e-15:
        return 0.0
    return float(returns.mean()) / std * math.sqrt(periods_per_year)


def equity_curve(returns: np.ndarray) -> np.ndarray:
    """Equity after each bar, starting from 1.0 (the starting value is not included)."""
    return np.cumprod(1.0 + returns)


def max_drawdown(returns: np.ndarray) -> float:
    """Largest fall from a running peak, as a fraction of that peak; the initial equity counts as a peak."""
    equity = np.concatenate([[1.0], equity_curve(returns)])
    peaks = np.maximum.accumulate(equity)
    return float((1.0 - equity / peaks).max())


def profit_factor(returns: np.ndarray) -> float:
    """Sum of gains / sum of losses over bars; inf when there are gains and no losses, 0.0 with neither."""
    gains = float(returns[returns > 0].sum())
    losses = float(-returns[returns < 0].sum())
    if losses == 0.0:
        return math.inf if gains > 0 else 0.0
    return gains / losses


def performance_summary(returns: np.ndarray) -> dict[str, float]:
    return {
        "sharpe": sharpe_ratio(returns),
        "max_drawdown": max_drawdown(returns),
        "total_return": float(equity_curve(returns)[-1] - 1.0) if returns.size else 0.0,
        "profit_factor": profit_factor(returns),
        "n_steps": float(returns.size),
    }
