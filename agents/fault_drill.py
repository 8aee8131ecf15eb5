"""Fault drills: a policy with a planted defect, to prove the lifecycle catches what validation cannot.

`subset-batch`: the policy behaves exactly like the trained one when it scores the whole universe in one batch
(as validation, staging and paper trading do) and collapses to one certain action when it scores fewer symbols
(as the canary's 10% cohort does). It stands for a real class of bug: a policy whose output depends on the batch
it is scored in (cross-sectional normalisation, batch statistics). Training records the drill in the MLflow run
parameters and the artifact manifest, so a drilled policy is never mistaken for a real one.
"""

from typing import Tuple

import torch
from torch import Tensor, nn

from agents.errors import AgentError

FAULT_DRILLS = ("subset-batch",)


class SubsetBatchFault(nn.Module):
    def __init__(self, policy: nn.Module, *, full_batch: int, obs_dim: int) -> None:
        super().__init__()
        self.policy = policy
        self.full_batch = full_batch
        self.obs_dim = obs_dim

    def forward(self, observations: Tensor) -> Tuple[Tensor, Tensor]:
        probabilities, action = self.policy(observations)
        if observations.size(0) >= self.full_batch:
            return probabilities, action
        collapsed = torch.zeros_like(probabilities)
        last = probabilities.size(1) - 1
        collapsed[:, last] = 1.0  # certain of the last action level (the largest position) on every symbol
        return collapsed, torch.full_like(action, last)


def plant_fault(policy: nn.Module, drill: str, *, full_batch: int, obs_dim: int) -> nn.Module:
    if drill not in FAULT_DRILLS:
        raise AgentError(f"unknown fault drill {drill!r}; drills: {', '.join(FAULT_DRILLS)}")
    return SubsetBatchFault(policy, full_batch=full_batch, obs_dim=obs_dim)
