"""Policy and value networks. Small MLPs; the policy is exported as TorchScript and served by Triton."""

from typing import Tuple

import torch
from torch import Tensor, nn


class Dense(nn.Module):
    """Affine layer without the shape constants of nn.Linear.

    nn.Linear stores in/out sizes as TorchScript constants, so layers of different sizes become
    different script types whose generated names depend on Python's hash seed; the saved archive's
    bytes then change from one process to the next. With only tensors, every layer shares one type.
    """

    def __init__(self, in_features: int, out_features: int, gain: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        # Orthogonal init; a tiny gain on the output layer starts the policy near uniform, so early
        # rollouts explore every action.
        nn.init.orthogonal_(self.weight, gain=gain)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class PolicyNet(nn.Module):
    """Observation batch -> (action probabilities [B, n_actions], greedy action [B])."""

    # Plain int attributes, not Final: TorchScript writes Final constants in set order, which follows
    # PYTHONHASHSEED, and the archive's bytes would then differ between processes.
    obs_dim: int
    n_actions: int

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        if obs_dim < 1 or n_actions < 2 or hidden < 1:
            raise ValueError(
                f"PolicyNet needs obs_dim >= 1, n_actions >= 2, hidden >= 1; got {obs_dim}, {n_actions}, {hidden}"
            )
        self.obs_dim = obs_dim
        self.n_actions = n_actions
        self.body = nn.Sequential(
            Dense(obs_dim, hidden, gain=2**0.5),
            nn.Tanh(),
            Dense(hidden, hidden, gain=2**0.5),
            nn.Tanh(),
            Dense(hidden, n_actions, gain=0.01),
        )

    def logits(self, observations: Tensor) -> Tensor:
        # The check lives inside the scripted graph, so Triton callers get the same message.
        if observations.dim() != 2 or observations.size(1) != self.obs_dim:
            raise RuntimeError(
                "PolicyNet expects observations of shape [batch, "
                + str(self.obs_dim)
                + "], got "
                + str(observations.shape)
            )
        return self.body(observations)

    def forward(self, observations: Tensor) -> Tuple[Tensor, Tensor]:
        logits = self.logits(observations)
        probabilities = torch.softmax(logits, dim=-1)
        action = torch.argmax(logits, dim=-1)
        return probabilities, action


class ValueNet(nn.Module):
    """State-value critic used only during training (never exported)."""

    def __init__(self, obs_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Dense(obs_dim, hidden, gain=2**0.5),
            nn.Tanh(),
            Dense(hidden, hidden, gain=2**0.5),
            nn.Tanh(),
            Dense(hidden, 1, gain=1.0),
        )

    def forward(self, observations: Tensor) -> Tensor:
        return self.body(observations).squeeze(-1)
