"""The hierarchical multi-agent trading environment over replayed bars.

One agent per symbol (all sharing one policy) picks a target level every bar; the master agent picks a
directive mode every `master_every_bars` bars or when a regime flag changes, exactly as the live master service
does. Orders, fills, positions and guardrails come from `agents.book.BacktestBook`, i.e. from the gateway's own
pure rules, so a backtest and a live replay of the same bars make the same trades.

Timing of one step at bar t (the same as the live loop): observations carry bar t's market features, the level
each symbol's agent chose last, and the gross exposure / drawdown the book reported after bar t-1's fills. The
decisions are planned and filled at bar t's closes; the reward of step t is what the positions earn to bar t+1,
less the transaction costs of bar t's orders, as a fraction of the net equity at bar t. Per-symbol rewards sum to
the portfolio return (cash earns nothing), so each symbol agent is credited with its own contribution.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from contracts.config import LoopConfig, RiskOverlaysConfig
from contracts.decisions import MasterDirective, directive_from_preset
from contracts.features import MASTER_MARKET_FEATURES, REGIME_FEATURES
from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES
from gateway.domain.overlay import reduce_only, resolve_overlay

from agents.book import DEFAULT_INITIAL_CASH, BacktestBook, BookStep
from agents.errors import EnvironmentStateError, InputShapeError, InvalidActionError
from agents.inputs import MASTER_MARKET_DIM, SYMBOL_MARKET_DIM, as_float_array, check_action_levels, market_dims

logger = logging.getLogger(__name__)

# The widths of HybridRLObservation v1 (the default). An episode of another version has its own
# (MarketEpisode.symbol_obs_dim, ...); the environment and MAPPO read the episode's.
SYMBOL_OBS_DIM = SYMBOL_MARKET_DIM + 2
MASTER_OBS_DIM = MASTER_MARKET_DIM + 2
N_DIRECTIVES = len(DIRECTIVE_MODES)
# Critic inputs: master market, drawdown, gross, directive one-hot, mean held level, mean symbol market features.
GLOBAL_STATE_DIM = MASTER_MARKET_DIM + 2 + N_DIRECTIVES + 1 + SYMBOL_MARKET_DIM
SYMBOL_CRITIC_DIM = SYMBOL_OBS_DIM + GLOBAL_STATE_DIM
# v2 appends its macro features after the v1 master market features: the regime columns are the same.
_REGIME_COLUMNS = [MASTER_MARKET_FEATURES.index(name) for name in REGIME_FEATURES]
N_PORTFOLIO = 2  # position level + gross exposure (symbol), drawdown + gross exposure (master)


@dataclass(frozen=True)
class MarketEpisode:
    """The bars an episode replays, already turned into normalised market features (HybridRLObservation)."""

    timestamps: pd.DatetimeIndex  # [T]
    symbols: tuple[str, ...]  # [N]
    symbol_market: np.ndarray  # [T, N, symbol_market_dim] float32
    master_market: np.ndarray  # [T, master_market_dim] float32
    closes: np.ndarray  # [T, N] float64, the prices decisions are made and filled at
    clip: float = 5.0  # the feature spec's clip, applied to the portfolio features as in serving
    # The feature spec's version: it fixes the market widths (v2 adds sentiment and macro features).
    observation_version: int = 1

    def __post_init__(self) -> None:
        steps = len(self.timestamps)
        if steps < 2:
            raise InputShapeError(f"an episode needs at least 2 bars, got {steps}")
        n = len(self.symbols)
        symbol_dim, master_dim = market_dims(self.observation_version)
        as_float_array("symbol_market", self.symbol_market, (steps, n, symbol_dim), ("T", "N", "Dm"))
        as_float_array("master_market", self.master_market, (steps, master_dim), ("T", "Mm"))
        closes = as_float_array("closes", self.closes, (steps, n), ("T", "N"))
        if (closes <= 0).any():
            first = tuple(int(i) for i in np.argwhere(closes <= 0)[0])
            raise InputShapeError(f"closes: non-positive price at index {first} (T, N)")

    @property
    def n_steps(self) -> int:
        return len(self.timestamps)

    @property
    def symbol_obs_dim(self) -> int:
        return int(self.symbol_market.shape[2]) + N_PORTFOLIO

    @property
    def master_obs_dim(self) -> int:
        return int(self.master_market.shape[1]) + N_PORTFOLIO

    @property
    def global_state_dim(self) -> int:
        """Master observation, directive one-hot, mean held level, mean symbol market features."""
        return self.master_obs_dim + N_DIRECTIVES + 1 + int(self.symbol_market.shape[2])

    @property
    def symbol_critic_dim(self) -> int:
        return self.symbol_obs_dim + self.global_state_dim

    def window(self, start: int, stop: int) -> "MarketEpisode":
        return MarketEpisode(
            timestamps=self.timestamps[start:stop],
            symbols=self.symbols,
            symbol_market=self.symbol_market[start:stop],
            master_market=self.master_market[start:stop],
            closes=self.closes[start:stop],
            clip=self.clip,
            observation_version=self.observation_version,
        )

    def regime_shifts(self) -> np.ndarray:
        """[T] bool: a regime flag differs from the previous bar's (never at the first bar, as in serving)."""
        flags = self.master_market[:, _REGIME_COLUMNS]
        shifts = np.zeros(self.n_steps, dtype=bool)
        shifts[1:] = (flags[1:] != flags[:-1]).any(axis=1)
        return shifts


@dataclass(frozen=True)
class EnvSettings:
    master_every_bars: int = 5
    directive_ttl_seconds: float = 10 * 86400.0
    initial_cash: float = DEFAULT_INITIAL_CASH
    action_levels: tuple[float, ...] = DEFAULT_ACTION_LEVELS
    drawdown_penalty: float = 0.5  # per unit of new drawdown of net equity, shared by the team
    cost_penalty: float = 0.0  # extra weight on transaction costs beyond paying them
    symbol_policy_version: str = "backtest/symbol_agent"
    master_policy_version: str = "backtest/master_agent"

    def __post_init__(self) -> None:
        if self.master_every_bars < 1:
            raise InputShapeError(f"master_every_bars must be >= 1, got {self.master_every_bars}")
        if self.directive_ttl_seconds <= 0:
            raise InputShapeError(f"directive_ttl_seconds must be > 0, got {self.directive_ttl_seconds}")
        if self.drawdown_penalty < 0 or self.cost_penalty < 0:
            raise InputShapeError("drawdown_penalty and cost_penalty must be >= 0")
        check_action_levels(self.action_levels)

    @classmethod
    def from_loop(cls, loop: LoopConfig, **overrides: object) -> "EnvSettings":
        """Schedule and directive TTL exactly as the live loop uses them (config/rl/serving.yaml `loop`)."""
        return cls(
            master_every_bars=loop.master_every_bars,
            directive_ttl_seconds=loop.directive_ttl_bars * loop.bar_seconds,
            **overrides,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class EnvStep:
    symbol_rewards: np.ndarray  # [N] shaped per-symbol rewards
    master_reward: float  # shaped team reward
    portfolio_return: float  # net of costs, unshaped
    done: bool
    book: BookStep
    info: dict[str, float] = field(default_factory=dict)


class HierarchicalTradingEnv:
    def __init__(self, episode: MarketEpisode, risk: RiskOverlaysConfig, settings: EnvSettings = EnvSettings()) -> None:
        self.episode = episode
        self.risk = risk
        self.settings = settings
        self.levels = np.asarray(settings.action_levels, dtype=np.float64)
        self.n_symbols = len(episode.symbols)
        self.n_actions = int(self.levels.size)
        self.n_steps = episode.n_steps
        self._shifts = episode.regime_shifts()
        self._mean_market = episode.symbol_market.mean(axis=1)
        self._t: int | None = None

    # -- state -----------------------------------------------------------------------------------------

    def reset(self) -> None:
        self._t = 0
        self.book = BacktestBook(
            self.episode.symbols,
            self.risk,
            initial_cash=self.settings.initial_cash,
            max_directive_ttl_seconds=self.settings.directive_ttl_seconds,
            policy_version=self.settings.symbol_policy_version,
        )
        self._held = np.zeros(self.n_symbols)
        # What the gateway reports after the previous timestep; nothing traded yet.
        self._gross = 0.0
        self._drawdown = 0.0
        self._directive: MasterDirective | None = None
        self._net_peak = self.book.net_equity

    @property
    def t(self) -> int:
        if self._t is None:
            raise EnvironmentStateError("HierarchicalTradingEnv: call reset() first")
        return self._t

    @property
    def done(self) -> bool:
        return self._t is not None and self._t >= self.n_steps

    @property
    def held_levels(self) -> np.ndarray:
        return self._held.copy()

    @property
    def directive(self) -> MasterDirective | None:
        return self._directive

    def _check_running(self) -> int:
        t = self.t
        if t >= self.n_steps:
            raise EnvironmentStateError(f"episode ended after {self.n_steps} steps; call reset() to start again")
        return t

    # -- observations ----------------------------------------------------------------------------------

    def _clip(self, values: np.ndarray) -> np.ndarray:
        clip = self.episode.clip
        return np.clip(values, -clip, clip).astype(np.float32)

    def symbol_observation(self) -> np.ndarray:
        """[N, SYMBOL_OBS_DIM] float32, built as the live loop builds it."""
        t = self._check_running()
        portfolio = np.column_stack([self._held, np.full(self.n_symbols, self._gross)])
        return np.concatenate([self.episode.symbol_market[t], self._clip(portfolio)], axis=1)

    def master_due(self) -> bool:
        t = self._check_running()
        return t % self.settings.master_every_bars == 0 or bool(self._shifts[t])

    def master_observation(self) -> np.ndarray:
        """[1, MASTER_OBS_DIM] float32."""
        t = self._check_running()
        portfolio = self._clip(np.array([[self._drawdown, self._gross]]))
        return np.concatenate([self.episode.master_market[t][None, :], portfolio], axis=1)

    def global_state(self) -> np.ndarray:
        """[GLOBAL_STATE_DIM] float32: what the centralised critics see beyond an agent's own observation."""
        t = self._check_running()
        one_hot = np.zeros(N_DIRECTIVES, dtype=np.float32)
        if self._directive is not None:
            one_hot[DIRECTIVE_MODES.index(self._directive.mode)] = 1.0
        return np.concatenate(
            [
                self.master_observation()[0],
                one_hot,
                np.array([self._held.mean()], dtype=np.float32),
                self._mean_market[t].astype(np.float32),
            ]
        )

    def action_mask(self) -> np.ndarray:
        """[N, A] bool: the levels the overlay in force would let through unchanged.

        Only a defensive overlay masks (it allows no exposure increase); caps and scales of the other modes
        rescale a level rather than forbid it. The gateway enforces the same rule in serving by clamping.
        """
        t = self._check_running()
        overlay = resolve_overlay(
            self._directive,
            self.risk,
            at=self.episode.timestamps[t].to_pydatetime(),
            max_ttl_seconds=self.settings.directive_ttl_seconds,
        )
        mask = np.ones((self.n_symbols, self.n_actions), dtype=bool)
        if not overlay.defensive:
            return mask
        prices = self.episode.closes[t]
        qty = self.book.quantities()
        equity = self.book.portfolio.cash + float((qty * prices).sum())
        if equity <= 0:
            return mask
        weights = qty * prices / equity
        size = overlay.size(self.risk.per_symbol_cap)
        for i, current in enumerate(weights):
            for j, level in enumerate(self.levels):
                _, clipped = reduce_only(float(current), float(level) * size)
                mask[i, j] = not clipped
        return mask

    # -- actions ---------------------------------------------------------------------------------------

    def issue_directive(self, action: int) -> MasterDirective:
        """The master agent's action at this bar becomes the directive in force (as the live service issues it)."""
        t = self._check_running()
        if not isinstance(action, (int, np.integer)) or not 0 <= int(action) < N_DIRECTIVES:
            raise InvalidActionError(f"master action {action!r} out of range 0..{N_DIRECTIVES - 1} for {DIRECTIVE_MODES}")
        mode = DIRECTIVE_MODES[int(action)]
        self._directive = directive_from_preset(
            directive_id=f"master-{self.settings.master_policy_version}-bar{t}",
            issued_at=self.episode.timestamps[t].to_pydatetime(),
            ttl_seconds=self.settings.directive_ttl_seconds,
            mode=mode,  # type: ignore[arg-type]
            preset=self.risk.directive_presets[mode],
            policy_version=self.settings.master_policy_version,
        )
        return self._directive

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
                f"actions: index {int(array[first])} for symbol {self.episode.symbols[first]} out of range "
                f"0..{self.n_actions - 1}"
            )
        return array.astype(np.int64)

    def step(self, actions: np.ndarray | Sequence[int]) -> EnvStep:
        t = self._check_running()
        indices = self._check_actions(actions)
        levels = self.levels[indices]
        prices = self.episode.closes[t]
        booked = self.book.step(
            timestep=self.episode.timestamps[t].to_pydatetime(),
            bar_index=t,
            prices=prices,
            actions=indices,
            levels=levels,
            directive=self._directive,
        )
        net_at_t = booked.equity - (self.book.total_costs - float(booked.costs.sum()))
        self._held = levels
        self._gross, self._drawdown = booked.gross_exposure, booked.drawdown
        done = t + 1 >= self.n_steps
        if done:
            pnl = np.zeros(self.n_symbols)
        else:
            pnl = booked.qty_after * (self.episode.closes[t + 1] - prices)
            self.book.mark(self.episode.closes[t + 1])
        contributions = (pnl - booked.costs) / net_at_t
        portfolio_return = float(contributions.sum())
        net_after = self.book.net_equity
        drawdown_before = 1.0 - net_at_t / self._net_peak
        self._net_peak = max(self._net_peak, net_after)
        drawdown_after = 1.0 - net_after / self._net_peak
        deepening = max(0.0, drawdown_after - drawdown_before)
        cost_share = booked.costs / net_at_t
        penalty_dd = self.settings.drawdown_penalty * deepening
        symbol_rewards = contributions - self.settings.cost_penalty * cost_share - penalty_dd / self.n_symbols
        master_reward = portfolio_return - self.settings.cost_penalty * float(cost_share.sum()) - penalty_dd
        self._t = t + 1
        info = {
            "portfolio_return": portfolio_return,
            "cost": float(cost_share.sum()),
            "turnover": float(sum(i.qty * i.reference_price for i in booked.intents) / net_at_t),
            "n_orders": float(len(booked.intents)),
            "gross_exposure": booked.gross_exposure,
            "net_equity": net_after,
            "drawdown": drawdown_after,
        }
        return EnvStep(symbol_rewards, master_reward, portfolio_return, done, booked, info)
