"""Performance of a traded window from its bar records: the same numbers for paper, canary, review."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from marlops.lifecycle.records import BarRecord


def equity_curve(records: Sequence[BarRecord], initial_equity: float) -> list[float]:
    return [float(initial_equity)] + [float(r.equity) for r in records]


def window_metrics(records: Sequence[BarRecord], initial_equity: float, *, trading_days: int,
                   periods_per_year: int = 252) -> dict[str, float]:
    """Net return, annualised Sharpe of bar returns, max drawdown, turnover per day (traded notional / mean
    equity / days), cost, orders-as-notional, denial and error rates."""
    curve = np.asarray(equity_curve(records, initial_equity), dtype=float)
    returns = np.diff(curve) / curve[:-1] if len(curve) > 1 else np.zeros(0)
    peak = np.maximum.accumulate(curve)
    drawdown = float(np.max(1.0 - curve / peak)) if len(curve) else 0.0
    std = float(returns.std(ddof=1)) if len(returns) > 1 else 0.0
    sharpe = float(returns.mean() / std * math.sqrt(periods_per_year)) if std > 0 else 0.0
    rows = [s for r in records for s in r.symbols]
    notional = sum(s.traded_notional for s in rows)
    mean_equity = float(curve.mean()) if len(curve) else initial_equity
    days = max(1, trading_days)
    return {
        "net_return": float(curve[-1] / curve[0] - 1.0) if len(curve) else 0.0,
        "sharpe": sharpe,
        "max_drawdown": drawdown,
        "turnover_per_day": notional / mean_equity / days if mean_equity > 0 else 0.0,
        "cost": float(sum(s.cost for s in rows)),
        "traded_notional": float(notional),
        "denial_rate": sum(s.denied for s in rows) / len(rows) if rows else 0.0,
        "error_rate": sum(s.error for s in rows) / len(rows) if rows else 0.0,
        "bars": float(len(records)),
        "final_equity": float(curve[-1]) if len(curve) else initial_equity,
    }
