"""Pre-trade cost estimate from the configured basis points.

A market order pays the commission, crosses half the quoted spread, and slips; the training
backtest book (agents/book.py) charges exactly these estimates.
"""

from contracts.config import RiskOverlaysConfig

BPS = 1e-4


def cost_rate(risk: RiskOverlaysConfig) -> float:
    """Cost per unit of traded notional."""
    return (risk.commission_bps + risk.spread_bps / 2.0 + risk.slippage_bps) * BPS


def estimate_cost(qty: float, price: float, risk: RiskOverlaysConfig) -> float:
    """Expected cost in account currency of trading `qty` shares (either side) at `price`."""
    return abs(qty) * price * cost_rate(risk)
