"""Tiny signed policies that honour the serving contract, for tests and smoke checks of a Triton setup.

Real policies come from `agents/` (trained, exported, signed by the registry); these are a
Linear + softmax so a Triton repository can be exercised without training anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES, PolicySignature, TensorSpec
from registry.verification import sign_artifact


class TinyPolicy(torch.nn.Module):
    """observations [B, D] -> (softmax probabilities [B, A], argmax action [B] int64)."""

    def __init__(self, features: int, actions: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(features, actions)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.linear(observations), dim=-1)
        return probabilities, torch.argmax(probabilities, dim=-1)


@dataclass(frozen=True)
class SignedPolicy:
    artifact: Path
    public_key_path: Path
    manifest: dict[str, Any]
    module: torch.jit.ScriptModule


def policy_signature(agent: str, features: int, actions: int, feature_spec_hash: str) -> PolicySignature:
    """The serving contract for a policy with D=`features` inputs and A=`actions` actions."""
    labels = DIRECTIVE_MODES if agent == "master_agent" else tuple(f"level_{lvl}" for lvl in DEFAULT_ACTION_LEVELS)
    if len(labels) != actions:
        labels = tuple(f"action_{i}" for i in range(actions))
    return PolicySignature(
        agent=agent,  # type: ignore[arg-type]
        inputs=(TensorSpec(name="observations", dtype="FP32", dims=(features,)),),
        outputs=(
            TensorSpec(name="probabilities", dtype="FP32", dims=(actions,)),
            TensorSpec(name="action", dtype="INT64", dims=(1,)),
        ),
        feature_spec_hash=feature_spec_hash,
        action_labels=labels,
    )


def write_public_key(private_key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        private_key.public_key().public_bytes(
            encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def make_signed_policy(
    directory: Path,
    private_key: Ed25519PrivateKey,
    *,
    agent: str = "symbol_agent",
    features: int = 16,
    actions: int = 5,
    version: str = "1",
    seed: int = 0,
    feature_spec_hash: str | None = None,
    module: torch.nn.Module | None = None,
) -> SignedPolicy:
    """Script a seeded TinyPolicy (or `module`), save it as `<directory>/<agent>-v<version>.ptc` and sign it."""
    directory.mkdir(parents=True, exist_ok=True)
    if module is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = TinyPolicy(features, actions)
    scripted = torch.jit.script(module.eval())
    artifact = directory / f"{agent}-v{version}.ptc"
    scripted.save(str(artifact))
    spec_hash = feature_spec_hash or hashlib.sha256(f"feature-spec:{agent}:{features}".encode()).hexdigest()
    manifest = sign_artifact(
        artifact,
        {
            "agent": agent,
            "version": version,
            "feature_spec_hash": spec_hash,
            "signature": policy_signature(agent, features, actions, spec_hash).model_dump(mode="json"),
        },
        private_key,
    )
    public_key_path = write_public_key(private_key, directory / "trusted.pub.pem")
    return SignedPolicy(artifact=artifact, public_key_path=public_key_path, manifest=manifest, module=scripted)
