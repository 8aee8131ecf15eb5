"""Held-out performance of one strategy: its per-bar track and the statistics the Go/No-Go gate reads."""

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agents.errors import InputShapeError
from agents.inputs import as_float_array
from agents.metrics import TRADING_DAYS_PER_YEAR, equity_curve, max_drawdown, profit_factor, sharpe_ratio

logger = logging.getLogger(__name__)

# Gross exposure at or below this counts as flat: float dust after closing a position must not enter the HHI.
_EXPOSURE_EPS = 1e-12
_STD_EPS = 1e-15


def _frozen(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class StrategyTrack:
    """Per-bar record of one strategy over the evaluation window (T bars, N instruments).

    timestamps: [T] bar at which each return is realised (strictly increasing, no NaT)
    returns:    [T] net per-bar returns after costs, fraction of equity (>= -1)
    costs:      [T] transaction costs per bar, fraction of equity (>= 0)
    turnover:   [T] traded notional / equity per bar (>= 0)
    weights:    [T, N] holdings weights (fraction of equity) after each bar's trades

    Arrays are stored as read-only float64 copies. Invalid input raises InputShapeError naming the field.
    """

    name: str
    timestamps: pd.DatetimeIndex
    returns: np.ndarray
    costs: np.ndarray
    turnover: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputShapeError(f"name: a strategy track needs a non-empty name, got {self.name!r}")
        label = f"track {self.name!r}"
        returns = as_float_array(f"returns ({label})", self.returns, (None,), ("T",))
        steps = returns.shape[0]
        if (returns < -1.0).any():
            first = int(np.argmax(returns < -1.0))
            raise InputShapeError(f"returns ({label}): value {returns[first]} < -1 (a loss beyond 100%) at T={first}")
        costs = as_float_array(f"costs ({label})", self.costs, (steps,), ("T",))
        turnover = as_float_array(f"turnover ({label})", self.turnover, (steps,), ("T",))
        for field, values in (("costs", costs), ("turnover", turnover)):
            if (values < 0).any():
                first = int(np.argmax(values < 0))
                raise InputShapeError(f"{field} ({label}): must be >= 0, got {values[first]} at T={first}")
        weights = as_float_array(f"weights ({label})", self.weights, (steps, None), ("T", "N"))
        object.__setattr__(self, "timestamps", _check_timestamps(self.timestamps, steps, label))
        object.__setattr__(self, "returns", _frozen(returns))
        object.__setattr__(self, "costs", _frozen(costs))
        object.__setattr__(self, "turnover", _frozen(turnover))
        object.__setattr__(self, "weights", _frozen(weights))

    @property
    def n_bars(self) -> int:
        return int(self.returns.shape[0])


def _check_timestamps(value: object, steps: int, label: str) -> pd.DatetimeIndex:
    try:
        index = pd.DatetimeIndex(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputShapeError(f"timestamps ({label}): not convertible to a DatetimeIndex ({exc})") from exc
    if len(index) != steps:
        raise InputShapeError(f"timestamps ({label}): {len(index)} timestamps for {steps} returns (axis T)")
    if index.hasnans:
        raise InputShapeError(f"timestamps ({label}): contains NaT")
    if not (index.is_monotonic_increasing and index.is_unique):
        raise InputShapeError(f"timestamps ({label}): must be strictly increasing")
    return index


def buy_and_hold_track(name: str, timestamps: object, asset_returns: np.ndarray) -> StrategyTrack:
    """Hold one asset at weight 1.0 for the whole window.

    The position is taken before the window opens, so no bar carries the purchase: costs and turnover are 0
    on every bar (the entry cost is one bar's worth of spread and would not change any verdict).
    """
    returns = as_float_array(f"asset_returns (track {name!r})", asset_returns, (None,), ("T",))
    steps = returns.shape[0]
    return StrategyTrack(
        name=name,
        timestamps=timestamps,  # type: ignore[arg-type]  # coerced and checked in __post_init__
        returns=returns,
        costs=np.zeros(steps),
        turnover=np.zeros(steps),
        weights=np.ones((steps, 1)),
    )


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size >= 2 else 0.0


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def probabilistic_sharpe_ratio(returns: np.ndarray, benchmark_sharpe: float = 0.0) -> float:
    """P(true per-bar Sharpe > benchmark_sharpe) (Bailey & Lopez de Prado 2012).

    PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2)), with SR = mean / std (ddof=1) of
    the per-bar returns, skew and kurt the per-bar sample skewness and (non-excess) kurtosis (population moments).
    Degenerate cases: fewer than 2 bars -> 0.5 (no evidence either way); constant returns -> 1.0, 0.0 or 0.5 as
    the mean is positive, negative or zero; a non-positive denominator -> 1.0 or 0.0 by the sign of SR - SR*.
    """
    n = returns.size
    if n < 2:
        return 0.5
    mean = float(returns.mean())
    std = _std(returns)
    if std <= _STD_EPS:
        # Zero spread makes SR infinite in the direction of the mean, whatever finite benchmark it is compared with.
        return 1.0 if mean > 0 else (0.0 if mean < 0 else 0.5)
    sr = mean / std
    centred = returns - mean
    m2 = float(np.mean(centred**2))
    skew = float(np.mean(centred**3)) / m2**1.5
    kurt = float(np.mean(centred**4)) / m2**2
    # 1 - skew SR + (kurt-1)/4 SR^2 >= (1 - skew SR / 2)^2 >= 0 since kurt >= skew^2 + 1; it reaches 0 only by rounding.
    denominator = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    gap = sr - benchmark_sharpe
    if denominator <= 1e-12:
        return 1.0 if gap > 0 else (0.0 if gap < 0 else 0.5)
    return normal_cdf(gap * math.sqrt(n - 1) / math.sqrt(denominator))


def herfindahl(weights: np.ndarray) -> float:
    """Mean over exposed bars of sum(w_i^2) / sum(|w_i|)^2; 0.0 if the strategy never holds anything."""
    gross = np.abs(weights).sum(axis=1)
    exposed = gross > _EXPOSURE_EPS
    if not exposed.any():
        return 0.0
    return float(np.mean((weights[exposed] ** 2).sum(axis=1) / gross[exposed] ** 2))


def strategy_metrics(
    track: StrategyTrack, benchmark_returns: np.ndarray, periods_per_year: int = TRADING_DAYS_PER_YEAR
) -> dict[str, float]:
    """Held-out statistics of `track` against `benchmark_returns [T]` (same bars). All values are floats.

    With r the net per-bar returns, b the benchmark, a = r - b, n = T, P = periods_per_year, std with ddof=1:
      sharpe                 mean(r) / std(r) * sqrt(P); 0 when r is constant or n < 2 (agents.metrics.sharpe_ratio)
      max_drawdown           largest fall of the equity curve prod(1 + r) from its running peak, the start 1.0
                             included, as a fraction of that peak (agents.metrics.max_drawdown)
      profit_factor          sum(r > 0) / -sum(r < 0); inf with gains and no losses; 0 with neither
      win_rate               share of bars with r > 0 among bars with r != 0; 0 if there are none
      total_return           prod(1 + r) - 1
      annual_return          (1 + total_return) ** (P / n) - 1 (geometric); -1 when equity reached 0
      volatility             std(r) * sqrt(P); 0 when n < 2
      turnover               mean(turnover) * P (annualised traded notional / equity)
      cost_ratio             sum(costs) / sum(r + costs) (costs over gross P&L); 0 without costs;
                             inf when there are costs and gross P&L <= 0
      herfindahl             mean over bars with gross exposure > 1e-12 of sum(w_i^2) / sum(|w_i|)^2;
                             0 if never exposed (1 = one name, 1/k = k equal names)
      tracking_error         std(a) * sqrt(P)
      information_ratio      active_return / tracking_error; 0 when tracking_error is 0
      benchmark_correlation  Pearson correlation of r and b; 0 when either is constant
      active_return          mean(a) * P
      beta                   cov(r, b) / var(b) (ddof=1); 0 when b is constant
      probabilistic_sharpe   P(true Sharpe > 0), see probabilistic_sharpe_ratio
      n_bars                 n
    """
    if periods_per_year < 1:
        raise InputShapeError(f"periods_per_year: must be >= 1, got {periods_per_year}")
    r = track.returns
    n = track.n_bars
    b = as_float_array(f"benchmark_returns (for track {track.name!r})", benchmark_returns, (n,), ("T",))
    annualiser = math.sqrt(periods_per_year)

    total_return = float(equity_curve(r)[-1] - 1.0)
    annual_return = -1.0 if total_return <= -1.0 else float((1.0 + total_return) ** (periods_per_year / n) - 1.0)
    nonzero = r[r != 0.0]
    win_rate = float((nonzero > 0).mean()) if nonzero.size else 0.0

    total_costs = float(track.costs.sum())
    gross_pnl = float((r + track.costs).sum())
    if total_costs == 0.0:
        cost_ratio = 0.0
    elif gross_pnl <= 0.0:
        cost_ratio = math.inf
    else:
        cost_ratio = total_costs / gross_pnl

    active = r - b
    tracking_error = _std(active) * annualiser
    active_return = float(active.mean()) * periods_per_year
    information_ratio = active_return / tracking_error if tracking_error > _STD_EPS else 0.0
    std_r, std_b = _std(r), _std(b)
    if n >= 2 and std_b > _STD_EPS:
        covariance = float(np.cov(r, b, ddof=1)[0, 1])
        beta = covariance / std_b**2
        correlation = covariance / (std_r * std_b) if std_r > _STD_EPS else 0.0
    else:
        beta = correlation = 0.0

    metrics = {
        "sharpe": sharpe_ratio(r, periods_per_year),
        "max_drawdown": max_drawdown(r),
        "profit_factor": profit_factor(r),
        "win_rate": win_rate,
        "total_return": total_return,
        "annual_return": annual_return,
        "volatility": _std(r) * annualiser,
        "turnover": float(track.turnover.mean()) * periods_per_year,
        "cost_ratio": cost_ratio,
        "herfindahl": herfindahl(track.weights),
        "tracking_error": tracking_error,
        "information_ratio": information_ratio,
        "benchmark_correlation": float(np.clip(correlation, -1.0, 1.0)),
        "active_return": active_return,
        "beta": beta,
        "probabilistic_sharpe": probabilistic_sharpe_ratio(r),
        "n_bars": float(n),
    }
    logger.debug("metrics of %s over %d bars: %s", track.name, n, metrics)
    return metrics
