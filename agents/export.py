"""TorchScript export of trained policies, with the serving signature Triton checks before it loads one."""

import copy
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import ValidationError

from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES, PolicySignature, TensorSpec

from agents.errors import ExportError
from agents.networks import PolicyNet

logger = logging.getLogger(__name__)

SIGNATURE_EXTRA_FILE = "marlops_signature.json"
_PROBE_BATCH = 32
_PROBE_SEED = 0


def script_policy(net: PolicyNet) -> torch.jit.ScriptModule:
    """Script an eval-mode copy of `net` and prove the scripted outputs equal the eager ones on a random batch."""
    eager = copy.deepcopy(net).eval()
    # Serving never back-propagates: without grad tracking the outputs carry no autograd graph.
    eager.requires_grad_(False)
    try:
        scripted = torch.jit.script(eager)
    except (RuntimeError, torch.jit.frontend.FrontendError) as exc:
        raise ExportError(f"PolicyNet could not be scripted: {exc}") from exc
    probe = torch.randn(_PROBE_BATCH, net.obs_dim, generator=torch.Generator().manual_seed(_PROBE_SEED))
    with torch.no_grad():
        eager_probs, eager_action = eager(probe)
        scripted_probs, scripted_action = scripted(probe)
    if scripted_probs.dtype != torch.float32 or scripted_action.dtype != torch.int64:
        raise ExportError(
            f"scripted policy returns ({scripted_probs.dtype}, {scripted_action.dtype}); expected (float32, int64)"
        )
    if not torch.equal(eager_action, scripted_action) or not torch.allclose(eager_probs, scripted_probs, atol=1e-6):
        diff = float((eager_probs - scripted_probs).abs().max())
        raise ExportError(f"scripted policy disagrees with the eager module on the probe batch (max |Δp| = {diff:.3g})")
    return scripted


def save_policy(module: torch.jit.ScriptModule, path: Path, *, signature: PolicySignature | None = None) -> Path:
    """Write the TorchScript archive to `path` (atomically), optionally embedding the signature JSON.

    The bytes are reproducible for the same weights, signature and source checkout: we serialise through a
    buffer because torch names the archive's inner folder after the target file name. TorchScript debug
    info still records the path of agents/networks.py, so a different checkout location gives other bytes.
    """
    if not isinstance(module, torch.jit.ScriptModule):
        raise ExportError(f"save_policy expects a TorchScript module (use script_policy), got {type(module).__name__}")
    extra = {SIGNATURE_EXTRA_FILE: signature.model_dump_json()} if signature is not None else {}
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files=extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, path)
    logger.info("saved policy to %s (%d bytes)", path, len(buffer.getvalue()))
    return path


def load_policy(path: Path) -> torch.jit.ScriptModule:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: policy file not found")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise ExportError(f"{path}: not a TorchScript archive: {exc}") from exc
    return module.eval()


def embedded_signature(path: Path) -> PolicySignature | None:
    """The signature stored inside the archive by save_policy, or None if it was saved without one."""
    extra = {SIGNATURE_EXTRA_FILE: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as exc:
        raise ExportError(f"{path}: not a TorchScript archive: {exc}") from exc
    text = extra[SIGNATURE_EXTRA_FILE]
    if not text:
        return None
    return PolicySignature.model_validate_json(text)


def symbol_action_labels(action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS) -> tuple[str, ...]:
    return tuple(f"level_{level:+.2f}" for level in action_levels)


def master_action_labels() -> tuple[str, ...]:
    return DIRECTIVE_MODES


def policy_signature(
    agent: str, obs_dim: int, n_actions: int, feature_spec_hash: str, action_labels: Sequence[str]
) -> PolicySignature:
    labels = tuple(action_labels)
    if len(labels) != n_actions:
        raise ExportError(f"policy_signature: {len(labels)} action labels for {n_actions} actions: {labels}")
    if obs_dim < 1:
        raise ExportError(f"policy_signature: obs_dim must be >= 1, got {obs_dim}")
    try:
        return PolicySignature.model_validate(
            {
                "agent": agent,
                "inputs": (TensorSpec(name="observations", dtype="FP32", dims=(obs_dim,)),),
                "outputs": (
                    TensorSpec(name="probabilities", dtype="FP32", dims=(n_actions,)),
                    TensorSpec(name="action", dtype="INT64", dims=(1,)),
                ),
                "feature_spec_hash": feature_spec_hash,
                "action_labels": labels,
            }
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ExportError(f"policy_signature: {problems}") from exc
