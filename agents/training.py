"""Training of the shared symbol policy and of the master policy on the simulator.

Small and real: full-episode rollouts, a clipped policy-gradient update against a learned value baseline
with an entropy bonus, seeded and deterministic on CPU.
"""

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from contracts.config import RiskOverlaysConfig
from contracts.policy import DEFAULT_ACTION_LEVELS

from agents.acting import Policy, greedy_action_fn
from agents.environment import MasterEnv, SymbolTradingEnv
from agents.evaluation import evaluate_master_policy, evaluate_symbol_policy
from agents.inputs import check_action_levels
from agents.networks import PolicyNet, ValueNet
from agents.ppo import RolloutBatch, UpdateSettings, discounted_returns, ppo_update, sample_actions

logger = logging.getLogger(__name__)

IterationCallback = Callable[[int, dict[str, float]], None]
NO_PROGRESS_ENV = "MARLOPS_NO_PROGRESS"


class TrainingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 7
    iterations: int = Field(default=30, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    hidden: int = Field(default=64, ge=1)
    entropy_coef: float = Field(default=0.01, ge=0)
    gamma: float = Field(default=0.0, ge=0, lt=1)
    clip_ratio: float = Field(default=0.2, gt=0)
    value_coef: float = Field(default=0.5, ge=0)
    max_grad_norm: float = Field(default=0.5, gt=0)
    epochs_per_iteration: int = Field(default=4, ge=1)
    minibatches: int = Field(default=4, ge=1)
    # Master training runs this many episodes side by side per iteration (only its directives are sampled).
    master_episodes: int = Field(default=4, ge=1)
    drawdown_penalty: float = Field(default=0.5, ge=0)
    action_levels: tuple[float, ...] = DEFAULT_ACTION_LEVELS

    @field_validator("action_levels")
    @classmethod
    def _levels_valid(cls, levels: tuple[float, ...]) -> tuple[float, ...]:
        check_action_levels(levels)
        return levels

    def update_settings(self) -> UpdateSettings:
        return UpdateSettings(
            clip_ratio=self.clip_ratio,
            entropy_coef=self.entropy_coef,
            value_coef=self.value_coef,
            max_grad_norm=self.max_grad_norm,
            epochs=self.epochs_per_iteration,
            minibatches=self.minibatches,
        )


@dataclass(frozen=True)
class TrainResult:
    module: PolicyNet
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def progress_disabled() -> bool:
    return os.environ.get(NO_PROGRESS_ENV, "") not in ("", "0") or not sys.stderr.isatty()


@contextmanager
def _deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seed torch, force deterministic single-threaded kernels for the duration, give a private sampling generator."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    # One thread: the nets are tiny (threads only add overhead) and results cannot depend on the core count.
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(previous_threads)


class _ReturnScaler:
    """Divides returns by the spread of the first batch, so the critic sees O(1) targets every iteration."""

    def __init__(self) -> None:
        self._scale: float | None = None

    def __call__(self, returns: np.ndarray) -> torch.Tensor:
        if self._scale is None:
            std = float(returns.std())
            self._scale = 1.0 / std if std > 1e-12 else 1.0
        return torch.from_numpy((returns * self._scale).astype(np.float32))


def _train_loop(
    name: str,
    cfg: TrainingConfig,
    policy: PolicyNet,
    value: ValueNet,
    rollout: Callable[[torch.Generator], tuple[RolloutBatch, dict[str, float]]],
    generator: torch.Generator,
    on_iteration: IterationCallback | None,
) -> list[dict[str, float]]:
    optimizer = torch.optim.Adam(list(policy.parameters()) + list(value.parameters()), lr=cfg.lr)
    settings = cfg.update_settings()
    history: list[dict[str, float]] = []
    bar = tqdm(range(cfg.iterations), desc=f"train {name}", disable=progress_disabled(), leave=False)
    for iteration in bar:
        batch, rollout_stats = rollout(generator)
        losses = ppo_update(policy, value, optimizer, batch, settings, generator)
        record = {"iteration": float(iteration), **rollout_stats, **losses}
        history.append(record)
        bar.set_postfix(reward=f"{rollout_stats['sampled_total_reward']:.4f}", entropy=f"{losses['entropy']:.3f}")
        logger.debug("%s iteration %d: %s", name, iteration, record)
        if on_iteration is not None:
            on_iteration(iteration, record)
    policy.eval()
    return history


def train_symbol_agent(
    symbol_market: np.ndarray,
    forward_returns: np.ndarray,
    risk: RiskOverlaysConfig,
    cfg: TrainingConfig = TrainingConfig(),
    *,
    on_iteration: IterationCallback | None = None,
) -> TrainResult:
    """Train the shared symbol policy on `symbol_market [T, N, 13]`, `forward_returns [T, N]` (normal mode)."""
    env = SymbolTradingEnv(symbol_market, forward_returns, risk=risk, action_levels=cfg.action_levels)
    scale_returns = _ReturnScaler()
    with _deterministic(cfg.seed) as generator:
        policy = PolicyNet(env.obs_dim, env.n_actions, cfg.hidden)
        value = ValueNet(env.obs_dim, cfg.hidden)

        def rollout(gen: torch.Generator) -> tuple[RolloutBatch, dict[str, float]]:
            obs_buf = np.empty((env.n_steps, env.n_symbols, env.obs_dim), dtype=np.float32)
            actions_buf = torch.empty((env.n_steps, env.n_symbols), dtype=torch.int64)
            log_probs_buf = torch.empty((env.n_steps, env.n_symbols), dtype=torch.float32)
            rewards_buf = np.empty((env.n_steps, env.n_symbols))
            obs = env.reset()
            for t in range(env.n_steps):
                obs_buf[t] = obs
                actions, log_probs = sample_actions(policy, torch.from_numpy(obs), gen)
                actions_buf[t], log_probs_buf[t] = actions, log_probs
                obs, rewards_buf[t], _, _ = env.step(actions.numpy())
            batch = RolloutBatch(
                observations=torch.from_numpy(obs_buf.reshape(-1, env.obs_dim)),
                actions=actions_buf.reshape(-1),
                old_log_probs=log_probs_buf.reshape(-1),
                returns=scale_returns(discounted_returns(rewards_buf, cfg.gamma).reshape(-1)),
            )
            stats = {
                "sampled_total_reward": float(rewards_buf.sum()),
                "sampled_mean_reward": float(rewards_buf.mean()),
                "sampled_final_equity": env.equity,
            }
            return batch, stats

        history = _train_loop("symbol_agent", cfg, policy, value, rollout, generator, on_iteration)
        metrics = evaluate_symbol_policy(policy, symbol_market, forward_returns, risk, action_levels=cfg.action_levels)
    metrics["final_entropy"] = history[-1]["entropy"]
    logger.info("trained symbol_agent: %s", metrics)
    return TrainResult(module=policy, metrics=metrics, history=history)


def train_master_agent(
    master_market: np.ndarray,
    symbol_market: np.ndarray,
    forward_returns: np.ndarray,
    symbol_policy: Policy,
    risk: RiskOverlaysConfig,
    cfg: TrainingConfig = TrainingConfig(),
    *,
    on_iteration: IterationCallback | None = None,
) -> TrainResult:
    """Train the master policy (directive mode per bar) with the symbol policy fixed and acting greedily."""
    envs = [
        MasterEnv(
            master_market,
            symbol_market,
            forward_returns,
            symbol_policy,
            risk=risk,
            action_levels=cfg.action_levels,
            drawdown_penalty=cfg.drawdown_penalty,
        )
        for _ in range(cfg.master_episodes)
    ]
    act_symbols = greedy_action_fn(symbol_policy)
    first = envs[0]
    n_steps, n_symbols, n_envs = first.n_steps, first.symbol_env.n_symbols, len(envs)
    scale_returns = _ReturnScaler()
    with _deterministic(cfg.seed) as generator:
        policy = PolicyNet(first.obs_dim, first.n_actions, cfg.hidden)
        value = ValueNet(first.obs_dim, cfg.hidden)

        def rollout(gen: torch.Generator) -> tuple[RolloutBatch, dict[str, float]]:
            obs_buf = np.empty((n_steps, n_envs, first.obs_dim), dtype=np.float32)
            actions_buf = torch.empty((n_steps, n_envs), dtype=torch.int64)
            log_probs_buf = torch.empty((n_steps, n_envs), dtype=torch.float32)
            rewards_buf = np.empty((n_steps, n_envs))
            obs = np.stack([env.reset() for env in envs])
            for t in range(n_steps):
                obs_buf[t] = obs
                actions, log_probs = sample_actions(policy, torch.from_numpy(obs), gen)
                actions_buf[t], log_probs_buf[t] = actions, log_probs
                # One symbol-policy call for all episodes: batch = episodes x symbols.
                symbol_actions = act_symbols(np.concatenate([env.symbol_observation() for env in envs]))
                steps = [
                    env.step_with_symbol_actions(int(action), symbol_actions[k * n_symbols : (k + 1) * n_symbols])
                    for k, (env, action) in enumerate(zip(envs, actions.tolist()))
                ]
                obs = np.stack([step[0] for step in steps])
                rewards_buf[t] = [step[1] for step in steps]
            batch = RolloutBatch(
                observations=torch.from_numpy(obs_buf.reshape(-1, first.obs_dim)),
                actions=actions_buf.reshape(-1),
                old_log_probs=log_probs_buf.reshape(-1),
                returns=scale_returns(discounted_returns(rewards_buf, cfg.gamma).reshape(-1)),
            )
            stats = {
                "sampled_total_reward": float(rewards_buf.sum(axis=0).mean()),
                "sampled_mean_reward": float(rewards_buf.mean()),
                "sampled_final_equity": float(np.mean([env.symbol_env.equity for env in envs])),
            }
            return batch, stats

        history = _train_loop("master_agent", cfg, policy, value, rollout, generator, on_iteration)
        metrics = evaluate_master_policy(
            policy,
            symbol_policy,
            master_market,
            symbol_market,
            forward_returns,
            risk,
            action_levels=cfg.action_levels,
            drawdown_penalty=cfg.drawdown_penalty,
        )
    metrics["final_entropy"] = history[-1]["entropy"]
    logger.info("trained master_agent: %s", metrics)
    return TrainResult(module=policy, metrics=metrics, history=history)
