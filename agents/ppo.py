"""Clipped policy-gradient update with a learned baseline (PPO-style actor-critic), on a full-episode batch."""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from agents.networks import PolicyNet, ValueNet


@dataclass(frozen=True)
class RolloutBatch:
    observations: Tensor  # [B, obs_dim] float32
    actions: Tensor  # [B] int64
    old_log_probs: Tensor  # [B] float32, log pi_old(action | obs) at sampling time
    returns: Tensor  # [B] float32, scaled discounted returns-to-go


@dataclass(frozen=True)
class UpdateSettings:
    clip_ratio: float
    entropy_coef: float
    value_coef: float
    max_grad_norm: float
    epochs: int
    minibatches: int


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Returns-to-go along axis 0 (time) of `rewards [T, ...]`; gamma = 0 gives the rewards themselves."""
    returns = np.array(rewards, dtype=np.float64, copy=True)
    if gamma > 0.0:
        for t in range(returns.shape[0] - 2, -1, -1):
            returns[t] += gamma * returns[t + 1]
    return returns


def sample_actions(policy: PolicyNet, observations: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Sample one action per row from the policy; returns (actions [B], their log-probabilities [B])."""
    with torch.no_grad():
        log_probs = torch.log_softmax(policy.logits(observations), dim=-1)
        actions = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(1)
        return actions, log_probs.gather(1, actions[:, None]).squeeze(1)


def ppo_update(
    policy: PolicyNet,
    value: ValueNet,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    settings: UpdateSettings,
    generator: torch.Generator,
) -> dict[str, float]:
    with torch.no_grad():
        advantages = batch.returns - value(batch.observations)
        # Normalised advantages make the step size independent of the reward scale (bps vs percent).
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    parameters = list(policy.parameters()) + list(value.parameters())
    size = batch.actions.shape[0]
    minibatch = max(1, size // settings.minibatches)
    totals = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
    updates = 0
    for _ in range(settings.epochs):
        order = torch.randperm(size, generator=generator)
        for start in range(0, size, minibatch):
            idx = order[start : start + minibatch]
            log_probs_all = torch.log_softmax(policy.logits(batch.observations[idx]), dim=-1)
            log_probs = log_probs_all.gather(1, batch.actions[idx, None]).squeeze(1)
            log_ratio = log_probs - batch.old_log_probs[idx]
            ratio = log_ratio.exp()
            adv = advantages[idx]
            clipped = ratio.clamp(1.0 - settings.clip_ratio, 1.0 + settings.clip_ratio)
            policy_loss = -torch.min(ratio * adv, clipped * adv).mean()
            entropy = -(log_probs_all.exp() * log_probs_all).sum(dim=-1).mean()
            value_loss = nn.functional.mse_loss(value(batch.observations[idx]), batch.returns[idx])
            loss = policy_loss - settings.entropy_coef * entropy + settings.value_coef * value_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                totals["policy_loss"] += float(policy_loss)
                totals["value_loss"] += float(value_loss)
                totals["entropy"] += float(entropy)
                totals["approx_kl"] += float(((ratio - 1.0) - log_ratio).mean())
                totals["clip_fraction"] += float(((ratio - 1.0).abs() > settings.clip_ratio).float().mean())
            updates += 1
    return {key: total / updates for key, total in totals.items()}
