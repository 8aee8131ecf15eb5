"""Hierarchical Multi-Agent PPO (MAPPO) on `HierarchicalTradingEnv`.

Decentralised actors: one policy shared by every symbol agent (it sees only its own observation) and one master
policy. Centralised critics: the symbol critic sees the agent's observation plus the global state (master
features, portfolio, directive in force, cross-sectional means); the master critic sees the global state.
GAE for both (the master's transitions span the bars between its decisions, discounted by the bars elapsed),
the clipped surrogate with an entropy bonus, value normalisation (running mean/std of the return targets),
action masking of the symbol actions a defensive directive forbids, and rewards shaped with drawdown and cost
penalties (see agents.environment). Seeded and deterministic on CPU (single thread, deterministic kernels).
"""

import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from tqdm import tqdm

from contracts.config import RiskOverlaysConfig

from agents.environment import (
    N_DIRECTIVES,
    EnvSettings,
    HierarchicalTradingEnv,
    MarketEpisode,
)
from agents.metrics import TRADING_DAYS_PER_YEAR, sharpe_ratio
from agents.networks import PolicyNet, ValueNet

logger = logging.getLogger(__name__)

IterationCallback = Callable[[int, dict[str, float]], None]
NO_PROGRESS_ENV = "MARLOPS_NO_PROGRESS"
MASKED_LOGIT = -1e9


class MAPPOConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 7
    iterations: int = Field(default=60, ge=1)
    hidden: int = Field(default=64, ge=1)
    actor_lr: float = Field(default=1e-3, gt=0)
    critic_lr: float = Field(default=1e-3, gt=0)
    gamma: float = Field(default=0.8, ge=0, lt=1)
    gae_lambda: float = Field(default=0.9, ge=0, le=1)
    clip_ratio: float = Field(default=0.2, gt=0)
    entropy_coef: float = Field(default=0.01, ge=0)
    max_grad_norm: float = Field(default=0.5, gt=0)
    epochs: int = Field(default=4, ge=1)
    minibatches: int = Field(default=4, ge=1)
    drawdown_penalty: float = Field(default=0.5, ge=0)
    cost_penalty: float = Field(default=0.0, ge=0)
    # Each iteration replays a window of this many bars starting at a seeded random bar (0 = the whole period).
    episode_bars: int = Field(default=0, ge=0)
    train_master: bool = True


@dataclass(frozen=True)
class MAPPOResult:
    symbol_policy: PolicyNet
    master_policy: PolicyNet
    history: list[dict[str, float]] = field(default_factory=list)


def progress_disabled() -> bool:
    return os.environ.get(NO_PROGRESS_ENV, "") not in ("", "0") or not sys.stderr.isatty()


@contextmanager
def deterministic_torch(seed: int) -> Iterator[torch.Generator]:
    """Seed torch, force deterministic single-threaded kernels for the duration, give a private generator."""
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


class ValueNormalizer:
    """Running mean/std of value targets; critics learn normalised targets so reward scale does not matter."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, values: np.ndarray) -> None:
        batch = values.reshape(-1)
        if batch.size == 0:
            return
        batch_mean = float(batch.mean())
        batch_m2 = float(((batch - batch_mean) ** 2).sum())
        total = self.count + batch.size
        delta = batch_mean - self.mean
        self.mean += delta * batch.size / total
        self.m2 += batch_m2 + delta**2 * self.count * batch.size / total
        self.count = total

    @property
    def std(self) -> float:
        if self.count < 2:
            return 1.0
        return max(math.sqrt(self.m2 / self.count), 1e-8)

    def normalize(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


def masked_log_probs(policy: PolicyNet, observations: Tensor, masks: Tensor | None) -> Tensor:
    logits = policy.logits(observations)
    if masks is not None:
        logits = logits.masked_fill(~masks, MASKED_LOGIT)
    return torch.log_softmax(logits, dim=-1)


def sample(policy: PolicyNet, observations: np.ndarray, masks: np.ndarray | None, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        mask_t = None if masks is None else torch.from_numpy(masks)
        log_probs = masked_log_probs(policy, torch.from_numpy(observations), mask_t)
        actions = torch.multinomial(log_probs.exp(), 1, generator=gen).squeeze(1)
        return actions.numpy(), log_probs.gather(1, actions[:, None]).squeeze(1).numpy()


def values_of(critic: ValueNet, inputs: np.ndarray, norm: ValueNormalizer) -> np.ndarray:
    with torch.no_grad():
        return norm.denormalize(critic(torch.from_numpy(inputs)).numpy().astype(np.float64))


def gae(rewards: np.ndarray, values: np.ndarray, discounts: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns along axis 0. `discounts[k]` multiplies the value after transition k (0 at the end)."""
    advantages = np.zeros_like(rewards)
    running = np.zeros_like(rewards[0])
    for k in range(len(rewards) - 1, -1, -1):
        next_value = values[k + 1] if k + 1 < len(values) else np.zeros_like(values[k])
        delta = rewards[k] + discounts[k] * next_value - values[k]
        running = delta + discounts[k] * lam * running
        advantages[k] = running
    return advantages, advantages + values


@dataclass
class _Batch:
    observations: Tensor
    critic_inputs: Tensor
    actions: Tensor
    old_log_probs: Tensor
    advantages: Tensor
    targets: Tensor  # normalised returns
    masks: Tensor | None


def _ppo_update(
    actor: PolicyNet,
    critic: ValueNet,
    actor_opt: torch.optim.Optimizer,
    critic_opt: torch.optim.Optimizer,
    batch: _Batch,
    cfg: MAPPOConfig,
    gen: torch.Generator,
    minibatches: int,
) -> dict[str, float]:
    size = batch.actions.shape[0]
    adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8) if size > 1 else batch.advantages
    step = max(1, math.ceil(size / minibatches))
    totals = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
    updates = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(size, generator=gen)
        for start in range(0, size, step):
            idx = order[start : start + step]
            masks = None if batch.masks is None else batch.masks[idx]
            log_probs_all = masked_log_probs(actor, batch.observations[idx], masks)
            log_probs = log_probs_all.gather(1, batch.actions[idx, None]).squeeze(1)
            log_ratio = log_probs - batch.old_log_probs[idx]
            ratio = log_ratio.exp()
            clipped = ratio.clamp(1.0 - cfg.clip_ratio, 1.0 + cfg.clip_ratio)
            policy_loss = -torch.min(ratio * adv[idx], clipped * adv[idx]).mean()
            probs = log_probs_all.exp()
            entropy = -(probs * torch.where(probs > 0, log_probs_all, torch.zeros_like(log_probs_all))).sum(-1).mean()
            actor_opt.zero_grad()
            (policy_loss - cfg.entropy_coef * entropy).backward()
            nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
            actor_opt.step()
            value_loss = nn.functional.mse_loss(critic(batch.critic_inputs[idx]), batch.targets[idx])
            critic_opt.zero_grad()
            value_loss.backward()
            nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
            critic_opt.step()
            with torch.no_grad():
                totals["policy_loss"] += float(policy_loss)
                totals["value_loss"] += float(value_loss)
                totals["entropy"] += float(entropy)
                totals["approx_kl"] += float(((ratio - 1.0) - log_ratio).mean())
                totals["clip_fraction"] += float(((ratio - 1.0).abs() > cfg.clip_ratio).float().mean())
            updates += 1
    return {key: total / max(updates, 1) for key, total in totals.items()}


class _Agent:
    def __init__(self, obs_dim: int, critic_dim: int, n_actions: int, cfg: MAPPOConfig) -> None:
        self.actor = PolicyNet(obs_dim, n_actions, cfg.hidden)
        self.critic = ValueNet(critic_dim, cfg.hidden)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.norm = ValueNormalizer()


def _episode_window(episode: MarketEpisode, cfg: MAPPOConfig, rng: np.random.Generator) -> MarketEpisode:
    if cfg.episode_bars == 0 or cfg.episode_bars >= episode.n_steps:
        return episode
    start = int(rng.integers(0, episode.n_steps - cfg.episode_bars + 1))
    return episode.window(start, start + cfg.episode_bars)


def train_mappo(
    episode: MarketEpisode,
    risk: RiskOverlaysConfig,
    cfg: MAPPOConfig = MAPPOConfig(),
    *,
    settings: EnvSettings | None = None,
    on_iteration: IterationCallback | None = None,
) -> MAPPOResult:
    """Train the shared symbol policy and the master policy together on `episode` (training bars only)."""
    base = settings or EnvSettings()
    env_settings = replace(base, drawdown_penalty=cfg.drawdown_penalty, cost_penalty=cfg.cost_penalty)
    n_actions = len(env_settings.action_levels)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []
    with deterministic_torch(cfg.seed) as gen:
        # Widths from the episode (its spec's observation version), not v1's module constants.
        symbol = _Agent(episode.symbol_obs_dim, episode.symbol_critic_dim, n_actions, cfg)
        master = _Agent(episode.master_obs_dim, episode.global_state_dim, N_DIRECTIVES, cfg)
        bar = tqdm(range(cfg.iterations), desc="MAPPO", disable=progress_disabled(), leave=False)
        for iteration in bar:
            env = HierarchicalTradingEnv(_episode_window(episode, cfg, rng), risk, env_settings)
            rollout = _rollout(env, symbol, master, cfg, gen)
            stats = _learn(rollout, symbol, master, cfg, gen)
            record = {"iteration": float(iteration), **rollout.stats, **stats}
            history.append(record)
            bar.set_postfix(reward=f"{rollout.stats['episode_return']:+.4f}", sharpe=f"{rollout.stats['episode_sharpe']:+.2f}")
            logger.debug("MAPPO iteration %d: %s", iteration, record)
            if on_iteration is not None:
                on_iteration(iteration, record)
    symbol.actor.eval()
    master.actor.eval()
    return MAPPOResult(symbol_policy=symbol.actor, master_policy=master.actor, history=history)


@dataclass
class _Rollout:
    sym_obs: np.ndarray  # [T, N, obs]
    sym_critic: np.ndarray  # [T, N, critic]
    sym_actions: np.ndarray  # [T, N]
    sym_log_probs: np.ndarray
    sym_masks: np.ndarray  # [T, N, A]
    sym_rewards: np.ndarray  # [T, N]
    sym_values: np.ndarray  # [T, N]
    m_obs: np.ndarray  # [K, obs]
    m_state: np.ndarray  # [K, global]
    m_actions: np.ndarray  # [K]
    m_log_probs: np.ndarray
    m_rewards: np.ndarray  # [K] discounted team reward until the next decision
    m_discounts: np.ndarray  # [K] gamma ** bars until the next decision (0 after the last)
    m_values: np.ndarray
    stats: dict[str, float]


def _rollout(env: HierarchicalTradingEnv, symbol: _Agent, master: _Agent, cfg: MAPPOConfig, gen: torch.Generator) -> _Rollout:
    env.reset()
    steps, n = env.n_steps, env.n_symbols
    episode = env.episode
    sym_obs = np.empty((steps, n, episode.symbol_obs_dim), dtype=np.float32)
    sym_critic = np.empty((steps, n, episode.symbol_critic_dim), dtype=np.float32)
    sym_actions = np.empty((steps, n), dtype=np.int64)
    sym_log_probs = np.empty((steps, n), dtype=np.float32)
    sym_masks = np.empty((steps, n, env.n_actions), dtype=bool)
    sym_rewards = np.empty((steps, n))
    master_rewards = np.empty(steps)
    returns = np.empty(steps)
    m_obs, m_state, m_actions, m_log_probs, m_start = [], [], [], [], []
    for t in range(steps):
        if env.master_due():
            obs = env.master_observation()
            state = env.global_state()
            if cfg.train_master:
                action, log_prob = sample(master.actor, obs, None, gen)
            else:
                action, log_prob = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.float32)
            env.issue_directive(int(action[0]))
            m_obs.append(obs[0])
            m_state.append(state)
            m_actions.append(int(action[0]))
            m_log_probs.append(float(log_prob[0]))
            m_start.append(t)
        obs = env.symbol_observation()
        mask = env.action_mask()
        global_state = env.global_state()
        sym_obs[t] = obs
        sym_critic[t] = np.concatenate([obs, np.broadcast_to(global_state, (n, episode.global_state_dim))], axis=1)
        sym_masks[t] = mask
        sym_actions[t], sym_log_probs[t] = sample(symbol.actor, obs, mask, gen)
        result = env.step(sym_actions[t])
        sym_rewards[t] = result.symbol_rewards
        master_rewards[t] = result.master_reward
        returns[t] = result.portfolio_return
    starts = np.array(m_start + [steps])
    k_count = len(m_start)
    m_rewards = np.empty(k_count)
    m_discounts = np.empty(k_count)
    for k in range(k_count):
        span = master_rewards[starts[k] : starts[k + 1]]
        m_rewards[k] = float((span * cfg.gamma ** np.arange(len(span))).sum())
        m_discounts[k] = 0.0 if k + 1 == k_count else cfg.gamma ** len(span)
    sym_values = values_of(symbol.critic, sym_critic.reshape(-1, episode.symbol_critic_dim),
                           symbol.norm).reshape(steps, n)
    m_state_arr = np.array(m_state, dtype=np.float32).reshape(k_count, episode.global_state_dim)
    m_values = values_of(master.critic, m_state_arr, master.norm)
    equity = np.cumprod(1.0 + returns)
    stats = {
        "episode_return": float(equity[-1] - 1.0),
        "episode_sharpe": sharpe_ratio(returns, TRADING_DAYS_PER_YEAR),
        "episode_max_drawdown": float((1.0 - equity / np.maximum.accumulate(np.maximum(equity, 1.0))).max()),
        "episode_cost": float(env.book.total_costs / env.settings.initial_cash),
        "mean_symbol_reward": float(sym_rewards.mean()),
        "master_decisions": float(k_count),
        "share_defensive": float(np.mean([a == N_DIRECTIVES - 1 for a in m_actions])) if m_actions else 0.0,
        "masked_share": float(1.0 - sym_masks.mean()),
    }
    return _Rollout(sym_obs, sym_critic, sym_actions, sym_log_probs, sym_masks, sym_rewards, sym_values,
                    np.array(m_obs, dtype=np.float32).reshape(k_count, episode.master_obs_dim), m_state_arr,
                    np.array(m_actions, dtype=np.int64), np.array(m_log_probs, dtype=np.float32),
                    m_rewards, m_discounts, m_values, stats)


def _learn(r: _Rollout, symbol: _Agent, master: _Agent, cfg: MAPPOConfig, gen: torch.Generator) -> dict[str, float]:
    steps, n = r.sym_rewards.shape
    obs_dim, critic_dim = r.sym_obs.shape[-1], r.sym_critic.shape[-1]
    discounts = np.full(steps, cfg.gamma)
    discounts[-1] = 0.0
    sym_adv, sym_ret = gae(r.sym_rewards, r.sym_values, discounts[:, None] * np.ones((1, n)), cfg.gae_lambda)
    symbol.norm.update(sym_ret)
    sym_batch = _Batch(
        observations=torch.from_numpy(r.sym_obs.reshape(-1, obs_dim)),
        critic_inputs=torch.from_numpy(r.sym_critic.reshape(-1, critic_dim)),
        actions=torch.from_numpy(r.sym_actions.reshape(-1)),
        old_log_probs=torch.from_numpy(r.sym_log_probs.reshape(-1)),
        advantages=torch.from_numpy(sym_adv.reshape(-1).astype(np.float32)),
        targets=torch.from_numpy(symbol.norm.normalize(sym_ret.reshape(-1)).astype(np.float32)),
        masks=torch.from_numpy(r.sym_masks.reshape(-1, r.sym_masks.shape[-1])),
    )
    out = {f"symbol_{k}": v for k, v in _ppo_update(symbol.actor, symbol.critic, symbol.actor_opt, symbol.critic_opt,
                                                      sym_batch, cfg, gen, cfg.minibatches).items()}
    if cfg.train_master and len(r.m_actions) > 1:
        m_adv, m_ret = gae(r.m_rewards, r.m_values, r.m_discounts, cfg.gae_lambda)
        master.norm.update(m_ret)
        m_batch = _Batch(
            observations=torch.from_numpy(r.m_obs),
            critic_inputs=torch.from_numpy(r.m_state),
            actions=torch.from_numpy(r.m_actions),
            old_log_probs=torch.from_numpy(r.m_log_probs),
            advantages=torch.from_numpy(m_adv.astype(np.float32)),
            targets=torch.from_numpy(master.norm.normalize(m_ret).astype(np.float32)),
            masks=None,
        )
        out.update({f"master_{k}": v for k, v in _ppo_update(master.actor, master.critic, master.actor_opt,
                                                              master.critic_opt, m_batch, cfg, gen, 1).items()})
    return out
