"""Vectorised trading environments for the per-symbol agents and the master agent.

Timing: the observation at bar t carries the market features of bar t and the portfolio held entering
bar t. The action chosen at t sets the target weights held over (t, t+1], earning
`forward_returns[t]`. Positions are rebalanced to exactly the target each bar (no drift between bars),
which keeps the portfolio return an exact sum of per-symbol rewards, so each agent's reward is its own
contribution.
"""

import logging
from collections.abc import Sequence

import numpy as np

from contracts.config import RiskOverlaysConfig
from contracts.features import MASTER_FEATURES, SYMBOL_FEATURES
from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES

from agents.acting import Policy, greedy_action_fn
from agents.errors import EnvironmentStateError, InputShapeError, InvalidActionError
from agents.inputs import check_action_levels, check_market_inputs, check_master_market
from agents.overlay import cost_rate, directive_mode_for_action, directive_preset, target_weights

logger = logging.getLogger(__name__)

SYMBOL_OBS_DIM = len(SYMBOL_FEATURES)
MASTER_OBS_DIM = len(MASTER_FEATURES)
# A change of weight below this is float noise, not a trade.
TRADE_EPSILON = 1e-12

StepInfo = dict[str, float]


class SymbolTradingEnv:
    """N symbols stepped together over T bars; one shared policy acts for every symbol."""

    def __init__(
        self,
        symbol_market: np.ndarray,
        forward_returns: np.ndarray,
        *,
        risk: RiskOverlaysConfig,
        action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
    ) -> None:
        self._market, self._returns = check_market_inputs(symbol_market, forward_returns)
        self._levels = check_action_levels(action_levels)
        self._risk = risk
        self._cost_rate = cost_rate(risk)
        self.n_steps, self.n_symbols, self.market_dim = self._market.shape
        self.obs_dim = self.market_dim + 2
        self.n_actions = int(self._levels.size)
        self._t: int | None = None
        self._reset_portfolio()

    def _reset_portfolio(self) -> None:
        self._held_levels = np.zeros(self.n_symbols)
        self._weights = np.zeros(self.n_symbols)
        self._equity = 1.0
        self._peak = 1.0

    @property
    def t(self) -> int:
        if self._t is None:
            raise EnvironmentStateError("SymbolTradingEnv: call reset() before using the environment")
        return self._t

    @property
    def done(self) -> bool:
        return self._t is not None and self._t >= self.n_steps

    @property
    def weights(self) -> np.ndarray:
        return self._weights.copy()

    @property
    def held_levels(self) -> np.ndarray:
        return self._held_levels.copy()

    @property
    def equity(self) -> float:
        return self._equity

    @property
    def drawdown(self) -> float:
        return 1.0 - self._equity / self._peak

    @property
    def gross_exposure(self) -> float:
        # Weights are fractions of current equity, so their absolute sum is gross exposure / equity.
        return float(np.abs(self._weights).sum())

    def reset(self) -> np.ndarray:
        self._t = 0
        self._reset_portfolio()
        return self.observation()

    def observation(self) -> np.ndarray:
        """obs [N, obs_dim] float32: market features of the current bar, then position_level, gross_exposure.

        After the last step there is no next bar; the final observation repeats the last bar's market
        features with the final portfolio.
        """
        bar = min(self.t, self.n_steps - 1)
        portfolio = np.column_stack([self._held_levels, np.full(self.n_symbols, self.gross_exposure)])
        return np.concatenate([self._market[bar], portfolio], axis=1).astype(np.float32)

    def _check_actions(self, actions: np.ndarray | Sequence[int]) -> np.ndarray:
        array = np.asarray(actions)
        if array.shape != (self.n_symbols,):
            raise InputShapeError(f"actions: expected shape ({self.n_symbols},) (one per symbol), got {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise InvalidActionError(f"actions: expected integer action indices, got dtype {array.dtype}")
        bad = (array < 0) | (array >= self.n_actions)
        if bad.any():
            first = int(np.argmax(bad))
            raise InvalidActionError(
                f"actions: index {int(array[first])} for symbol {first} out of range 0..{self.n_actions - 1}"
            )
        return array.astype(np.int64)

    def step(
        self, actions: np.ndarray | Sequence[int], directive_mode: str = "normal"
    ) -> tuple[np.ndarray, np.ndarray, bool, StepInfo]:
        """Apply one action per symbol under `directive_mode`; rewards [N] = weight * forward_return - cost."""
        if self.done:
            raise EnvironmentStateError(
                f"SymbolTradingEnv: episode ended after {self.n_steps} steps; call reset() to start again"
            )
        t = self.t
        indices = self._check_actions(actions)
        directive_preset(self._risk, directive_mode)
        levels = self._levels[indices]
        new_weights = target_weights(levels, self._weights, self._risk, directive_mode)
        traded = np.abs(new_weights - self._weights)
        costs = self._cost_rate * traded
        rewards = new_weights * self._returns[t] - costs
        portfolio_return = float(rewards.sum())
        self._equity *= 1.0 + portfolio_return
        self._peak = max(self._peak, self._equity)
        self._weights = new_weights
        self._held_levels = levels
        self._t = t + 1
        info: StepInfo = {
            "portfolio_return": portfolio_return,
            "turnover": float(traded.sum()),
            "cost": float(costs.sum()),
            "n_trades": float((traded > TRADE_EPSILON).sum()),
            "gross_exposure": self.gross_exposure,
            "equity": self._equity,
            "drawdown": self.drawdown,
        }
        return self.observation(), rewards, self.done, info


class MasterEnv:
    """The master agent picks a directive mode each bar; the symbol actions come from a fixed symbol policy.

    Reward = portfolio return - drawdown_penalty * (increase of drawdown this bar): new losses below the
    peak hurt extra, and the penalty is attributable to the current bar even with gamma = 0.
    """

    def __init__(
        self,
        master_market: np.ndarray,
        symbol_market: np.ndarray,
        forward_returns: np.ndarray,
        symbol_policy: Policy,
        *,
        risk: RiskOverlaysConfig,
        action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
        drawdown_penalty: float = 0.5,
    ) -> None:
        if drawdown_penalty < 0:
            raise InputShapeError(f"drawdown_penalty must be >= 0, got {drawdown_penalty}")
        self.symbol_env = SymbolTradingEnv(symbol_market, forward_returns, risk=risk, action_levels=action_levels)
        self._master = check_master_market(master_market, self.symbol_env.n_steps)
        self._act_symbols = greedy_action_fn(symbol_policy)
        self.drawdown_penalty = drawdown_penalty
        self.n_steps = self.symbol_env.n_steps
        self.obs_dim = self._master.shape[1] + 2
        self.n_actions = len(DIRECTIVE_MODES)

    @property
    def done(self) -> bool:
        return self.symbol_env.done

    def reset(self) -> np.ndarray:
        self.symbol_env.reset()
        return self.observation()

    def observation(self) -> np.ndarray:
        """obs [obs_dim] float32: master market features of the current bar, then drawdown, gross_exposure."""
        bar = min(self.symbol_env.t, self.n_steps - 1)
        portfolio = np.array([self.symbol_env.drawdown, self.symbol_env.gross_exposure])
        return np.concatenate([self._master[bar], portfolio]).astype(np.float32)

    def symbol_observation(self) -> np.ndarray:
        return self.symbol_env.observation()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, StepInfo]:
        symbol_actions = self._act_symbols(self.symbol_env.observation())
        return self.step_with_symbol_actions(action, symbol_actions)

    def step_with_symbol_actions(
        self, action: int, symbol_actions: np.ndarray
    ) -> tuple[np.ndarray, float, bool, StepInfo]:
        """Step with symbol actions computed by the caller (training batches the symbol policy across envs)."""
        if np.asarray(action).shape != () or not np.issubdtype(np.asarray(action).dtype, np.integer):
            raise InvalidActionError(f"master action must be one integer index, got {action!r}")
        mode = directive_mode_for_action(int(action))
        drawdown_before = self.symbol_env.drawdown
        _, _, done, info = self.symbol_env.step(symbol_actions, mode)
        deepening = max(0.0, info["drawdown"] - drawdown_before)
        reward = info["portfolio_return"] - self.drawdown_penalty * deepening
        info = {**info, "directive": float(action), "drawdown_penalty": self.drawdown_penalty * deepening}
        return self.observation(), reward, done, info
