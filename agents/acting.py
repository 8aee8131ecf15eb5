"""Turn a policy (PolicyNet, TorchScript module, or plain function) into a greedy numpy action function."""

from collections.abc import Callable

import numpy as np
import torch

from agents.errors import AgentError

ActionFn = Callable[[np.ndarray], np.ndarray]
Policy = torch.nn.Module | ActionFn


def greedy_action_fn(policy: Policy) -> ActionFn:
    """obs [B, obs_dim] float32 -> actions [B] int64, the argmax action (no exploration)."""
    if isinstance(policy, torch.nn.Module):
        module = policy

        def act(observations: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                _, action = module(torch.from_numpy(np.ascontiguousarray(observations, dtype=np.float32)))
            return action.numpy().astype(np.int64, copy=False)

        return act
    if callable(policy):
        return policy
    raise AgentError(f"policy must be a torch.nn.Module or a callable, got {type(policy).__name__}")
