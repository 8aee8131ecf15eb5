"""Greedy backtests of a symbol policy and a master policy on `HierarchicalTradingEnv`, as they act when served.

The policies act exactly as the live loop makes them act: the symbol policy's greedy action (no mask: in
serving the gateway clamps what a directive forbids, and so does the book here), the master policy on its
schedule. The returned tracks hold one return per bar after the first, net of transaction costs.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from contracts.config import RiskOverlaysConfig
from contracts.policy import DIRECTIVE_MODES

from agents.acting import Policy, greedy_action_fn
from agents.environment import EnvSettings, HierarchicalTradingEnv, MarketEpisode
from agents.errors import AgentError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrderRecord:
    bar_index: int
    symbol: str
    side: str
    qty: float


@dataclass(frozen=True)
class BacktestResult:
    timestamps: pd.DatetimeIndex  # [T-1] bar at which each return is realised
    returns: np.ndarray  # [T-1] net of costs
    costs: np.ndarray  # [T-1] fraction of net equity
    turnover: np.ndarray  # [T-1] traded notional / net equity
    weights: np.ndarray  # [T-1, N] holdings after each decision bar, at its closes
    directive_modes: tuple[str, ...]  # [T-1] mode of the directive in force at each decision bar ("" = none)
    orders: tuple[OrderRecord, ...]
    final_net_equity: float
    final_book_equity: float  # before transaction costs: what the gateway's book (paper exchange fills) shows


def constant_master(mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """A master "policy" that always issues `mode` (baselines and the SL fallback run under it)."""
    if mode not in DIRECTIVE_MODES:
        raise AgentError(f"unknown directive mode {mode!r}; expected one of {list(DIRECTIVE_MODES)}")
    index = DIRECTIVE_MODES.index(mode)

    def act(observations: np.ndarray) -> np.ndarray:
        return np.full(len(observations), index, dtype=np.int64)

    return act


def run_backtest(
    episode: MarketEpisode,
    risk: RiskOverlaysConfig,
    symbol_policy: Policy,
    master_policy: Policy | None,
    *,
    settings: EnvSettings = EnvSettings(),
    trade_last_bar: bool = False,
) -> BacktestResult:
    """Replay `episode` with greedy policies. `master_policy=None` issues no directive: the gateway's
    missing-directive fallback preset applies, as in serving without a master. `trade_last_bar` also plans
    the final bar (whose orders earn nothing inside the episode); live replays do, evaluations do not."""
    env = HierarchicalTradingEnv(episode, risk, settings)
    act_symbols = greedy_action_fn(symbol_policy)
    act_master = greedy_action_fn(master_policy) if master_policy is not None else None
    env.reset()
    n = env.n_symbols
    last = env.n_steps if trade_last_bar else env.n_steps - 1
    returns, costs, turnover, modes = [], [], [], []
    weights = np.zeros((last, n))
    orders: list[OrderRecord] = []
    for t in range(last):
        if act_master is not None and env.master_due():
            env.issue_directive(int(act_master(env.master_observation())[0]))
        directive = env.directive
        modes.append(directive.mode if directive is not None else "")
        step = env.step(act_symbols(env.symbol_observation()))
        prices = episode.closes[t]
        net_at_t = step.book.equity - (env.book.total_costs - float(step.book.costs.sum()))
        weights[t] = step.book.qty_after * prices / net_at_t
        returns.append(step.portfolio_return)
        costs.append(step.info["cost"])
        turnover.append(step.info["turnover"])
        orders.extend(OrderRecord(t, i.symbol, i.side.value, float(i.qty)) for i in step.book.intents)
    stamps = episode.timestamps[1 : last + 1] if not trade_last_bar else episode.timestamps[1:].append(episode.timestamps[-1:])
    result = BacktestResult(
        timestamps=pd.DatetimeIndex(stamps),
        returns=np.asarray(returns),
        costs=np.asarray(costs),
        turnover=np.asarray(turnover),
        weights=weights,
        directive_modes=tuple(modes),
        orders=tuple(orders),
        final_net_equity=env.book.net_equity,
        final_book_equity=env.book.equity,
    )
    logger.debug("backtest over %d bars: %d orders, final net equity %.2f", last, len(orders), result.final_net_equity)
    return result
