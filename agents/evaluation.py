"""Greedy (no exploration) backtests of trained policies on the simulator."""

import logging
from collections.abc import Sequence

import numpy as np

from contracts.config import RiskOverlaysConfig
from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES

from agents.acting import Policy, greedy_action_fn
from agents.environment import MasterEnv, StepInfo, SymbolTradingEnv
from agents.metrics import performance_summary

logger = logging.getLogger(__name__)


def _summarise(infos: list[StepInfo], total_reward: float) -> dict[str, float]:
    returns = np.array([info["portfolio_return"] for info in infos])
    summary = performance_summary(returns)
    summary.update(
        {
            "turnover": float(sum(info["turnover"] for info in infos)),
            "n_trades": float(sum(info["n_trades"] for info in infos)),
            "total_cost": float(sum(info["cost"] for info in infos)),
            "mean_gross_exposure": float(np.mean([info["gross_exposure"] for info in infos])),
            "total_reward": total_reward,
        }
    )
    return summary


def evaluate_symbol_policy(
    module: Policy,
    symbol_market: np.ndarray,
    forward_returns: np.ndarray,
    risk: RiskOverlaysConfig,
    *,
    action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
    directive_mode: str = "normal",
) -> dict[str, float]:
    """Run the policy greedily over the whole period under one directive mode.

    Returns sharpe (annualised, 252 bars), max_drawdown, total_return, profit_factor, turnover (sum of
    |Δweight|), n_trades (symbol-bars whose weight changed), total_cost, mean_gross_exposure,
    total_reward (sum of per-symbol rewards) and n_steps.
    """
    env = SymbolTradingEnv(symbol_market, forward_returns, risk=risk, action_levels=action_levels)
    act = greedy_action_fn(module)
    obs = env.reset()
    infos: list[StepInfo] = []
    total_reward = 0.0
    done = False
    while not done:
        obs, rewards, done, info = env.step(act(obs), directive_mode)
        total_reward += float(rewards.sum())
        infos.append(info)
    summary = _summarise(infos, total_reward)
    logger.info("symbol policy evaluation over %d bars: %s", env.n_steps, summary)
    return summary


def evaluate_master_policy(
    master_module: Policy,
    symbol_policy: Policy,
    master_market: np.ndarray,
    symbol_market: np.ndarray,
    forward_returns: np.ndarray,
    risk: RiskOverlaysConfig,
    *,
    action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
    drawdown_penalty: float = 0.5,
) -> dict[str, float]:
    """Run master and symbol policies greedily together; adds the share of bars spent in each directive mode."""
    env = MasterEnv(
        master_market,
        symbol_market,
        forward_returns,
        symbol_policy,
        risk=risk,
        action_levels=action_levels,
        drawdown_penalty=drawdown_penalty,
    )
    act = greedy_action_fn(master_module)
    obs = env.reset()
    infos: list[StepInfo] = []
    total_reward = 0.0
    done = False
    while not done:
        obs, reward, done, info = env.step(int(act(obs[None, :])[0]))
        total_reward += reward
        infos.append(info)
    summary = _summarise(infos, total_reward)
    directives = np.array([info["directive"] for info in infos])
    for index, mode in enumerate(DIRECTIVE_MODES):
        summary[f"share_{mode}"] = float((directives == index).mean())
    logger.info("master policy evaluation over %d bars: %s", env.n_steps, summary)
    return summary
