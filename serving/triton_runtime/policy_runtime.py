"""Verify, load and run one signed TorchScript policy. The logic behind Triton's `model.py`.

Standalone on purpose: it imports only stdlib, numpy, torch and its two siblings, because the
export copies it into each model version folder, where the project is not importable (a Triton
container in production). In the repository it is `serving.triton_runtime.policy_runtime` and
takes its siblings from the project instead.

Tensor contract (one request = the whole universe at one timestep):
  input  `observations`  FP32  [B, D]
  output `probabilities` FP32  [B, A]
  output `action`        INT64 [B] from the module; Triton declares it dims [1] with
                         `reshape: { shape: [ ] }`, so clients receive [B, 1] (a batched model
                         cannot declare scalar dims) and flatten it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__:
    from registry.verification import ArtifactVerificationError, verify_artifact
    from serving.triton_runtime.errors import PolicyInputError, PolicyLoadError, PolicyOutputError
else:  # loaded from a Triton model version folder, next to its copied siblings
    from errors import PolicyInputError, PolicyLoadError, PolicyOutputError  # type: ignore[no-redef]
    from verification import ArtifactVerificationError, verify_artifact  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

INPUT_NAME = "observations"
PROBABILITIES_NAME = "probabilities"
ACTION_NAME = "action"

ARTIFACT_FILE = "model.ptc"
MANIFEST_FILE = "model.manifest.json"
SIGNATURE_FILE = "model.manifest.sig"

# config.pbtxt parameters written by the export and read by `initialize`.
PARAM_PUBLIC_KEY_PATH = "public_key_path"
# JSON objects {"<version>": "<hex>"}: retraining refits the feature z-scores, so each version
# carries its own feature spec hash; pinning the sha256 too stops a validly signed but different
# artifact from being swapped into a version folder.
PARAM_FEATURE_SPEC_HASHES = "feature_spec_hashes"
PARAM_ARTIFACT_SHA256S = "artifact_sha256s"

# Rows named in an error message; a 1000-row batch of NaNs should not produce a 1000-row message.
_MAX_ROWS_NAMED = 10


@dataclass(frozen=True)
class RuntimeSettings:
    """What one model instance needs to verify and load its version, parsed from config.pbtxt."""

    public_key_path: Path
    expected_feature_spec_hash: str
    expected_sha256: str


@dataclass(frozen=True)
class PolicyShape:
    """Feature and action counts of a policy, from its signed signature."""

    features: int
    actions: int


def parse_model_parameters(model_config: dict[str, Any], version: str) -> RuntimeSettings:
    """Read the trusted key path and this version's pinned hashes from Triton's model config (as JSON)."""
    raw = model_config.get("parameters") or {}
    params: dict[str, str] = {}
    for key, value in raw.items():
        params[key] = value.get("string_value", "") if isinstance(value, dict) else str(value)
    name = model_config.get("name", "<unnamed>")
    for required in (PARAM_PUBLIC_KEY_PATH, PARAM_FEATURE_SPEC_HASHES, PARAM_ARTIFACT_SHA256S):
        if not params.get(required):
            raise PolicyLoadError(
                f"model '{name}': config.pbtxt lacks parameter '{required}'; export the model with "
                "serving.model_repository.export_policy"
            )
    pinned: dict[str, str] = {}
    for key in (PARAM_FEATURE_SPEC_HASHES, PARAM_ARTIFACT_SHA256S):
        try:
            table = json.loads(params[key])
        except json.JSONDecodeError as exc:
            raise PolicyLoadError(f"model '{name}': parameter '{key}' is not JSON: {exc}") from exc
        if not isinstance(table, dict) or not isinstance(table.get(version), str):
            raise PolicyLoadError(
                f"model '{name}': parameter '{key}' has no entry for version {version}; "
                "the version folder was not written by export_policy"
            )
        pinned[key] = table[version]
    return RuntimeSettings(
        public_key_path=Path(params[PARAM_PUBLIC_KEY_PATH]),
        expected_feature_spec_hash=pinned[PARAM_FEATURE_SPEC_HASHES],
        expected_sha256=pinned[PARAM_ARTIFACT_SHA256S],
    )


def policy_shape(manifest: dict[str, Any]) -> PolicyShape:
    """Check the manifest's signature against the tensor contract; return D and A."""
    signature = manifest.get("signature")
    if not isinstance(signature, dict):
        raise PolicyLoadError("manifest has no 'signature' object (contracts.policy.PolicySignature)")
    inputs = {spec.get("name"): spec for spec in signature.get("inputs", ())}
    outputs = {spec.get("name"): spec for spec in signature.get("outputs", ())}
    expected = (
        (inputs, INPUT_NAME, "FP32", 1),
        (outputs, PROBABILITIES_NAME, "FP32", 1),
        (outputs, ACTION_NAME, "INT64", None),
    )
    for table, name, dtype, rank in expected:
        spec = table.get(name)
        if spec is None:
            raise PolicyLoadError(f"manifest signature lacks tensor '{name}'")
        if spec.get("dtype") != dtype:
            raise PolicyLoadError(f"manifest signature: tensor '{name}' is {spec.get('dtype')}, expected {dtype}")
        dims = list(spec.get("dims", ()))
        if rank is not None and (len(dims) != rank or dims[0] < 1):
            raise PolicyLoadError(f"manifest signature: tensor '{name}' dims {dims}, expected one positive dim")
    if signature.get("feature_spec_hash") != manifest.get("feature_spec_hash"):
        raise PolicyLoadError(
            f"manifest feature_spec_hash {manifest.get('feature_spec_hash')} differs from its signature's "
            f"{signature.get('feature_spec_hash')}"
        )
    if len(inputs) != 1 or len(outputs) != 2:
        raise PolicyLoadError(
            f"manifest signature has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
            f"expected [{INPUT_NAME!r}] and [{ACTION_NAME!r}, {PROBABILITIES_NAME!r}]"
        )
    return PolicyShape(features=int(inputs[INPUT_NAME]["dims"][0]), actions=int(outputs[PROBABILITIES_NAME]["dims"][0]))


def load_verified_policy(
    version_dir: Path,
    public_key_path: Path,
    expected_feature_spec_hash: str | None,
    *,
    expected_sha256: str | None = None,
    device: str = "cpu",
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Verify `model.ptc` in `version_dir` against the trusted key, then load it. Nothing unverified is loaded."""
    artifact = Path(version_dir) / ARTIFACT_FILE
    try:
        public_key_pem = Path(public_key_path).read_bytes()
    except OSError as exc:
        raise PolicyLoadError(f"trusted public key {public_key_path} unreadable: {exc}") from exc
    try:
        manifest = verify_artifact(
            artifact,
            public_key_pem,
            expected_feature_spec_hash=expected_feature_spec_hash,
            expected_sha256=expected_sha256,
        )
    except ArtifactVerificationError as exc:
        raise PolicyLoadError(f"artifact verification failed: {exc}") from exc
    policy_shape(manifest)
    try:
        module = torch.jit.load(str(artifact), map_location=device)
    except RuntimeError as exc:
        raise PolicyLoadError(f"{artifact}: not a loadable TorchScript archive: {exc}") from exc
    module.eval()
    logger.info(
        "loaded policy %s version %s (sha256 %s, feature spec %s) on %s",
        manifest.get("agent"),
        manifest.get("version"),
        manifest.get("sha256"),
        manifest.get("feature_spec_hash"),
        device,
    )
    return module, manifest


def observation_checksum(observations: np.ndarray) -> str:
    """SHA256 over the C-ordered float32 bytes: the same batch gives the same hex wherever it is computed."""
    return hashlib.sha256(np.ascontiguousarray(observations, dtype=np.float32).tobytes()).hexdigest()


def validate_observations(observations: Any, expected_features: int | None = None) -> np.ndarray:
    """Return the batch unchanged if it is a finite float32 [B, D] array; otherwise say what is wrong."""
    if not isinstance(observations, np.ndarray):
        raise PolicyInputError(f"observations must be a numpy array, got {type(observations).__name__}")
    if observations.ndim != 2:
        raise PolicyInputError(f"observations must be 2-D [batch, features], got shape {list(observations.shape)}")
    if observations.shape[0] == 0:
        raise PolicyInputError("observations batch is empty")
    if observations.dtype != np.float32:
        raise PolicyInputError(f"observations must be float32, got {observations.dtype}")
    if expected_features is not None and observations.shape[1] != expected_features:
        raise PolicyInputError(
            f"observations have {observations.shape[1]} features per row, the policy expects {expected_features}"
        )
    finite = np.isfinite(observations).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        named = ", ".join(str(i) for i in bad[:_MAX_ROWS_NAMED]) + (" ..." if bad.size > _MAX_ROWS_NAMED else "")
        raise PolicyInputError(f"observations contain NaN or inf in {bad.size} row(s): {named}")
    return observations


def run_policy(
    module: torch.jit.ScriptModule,
    observations: np.ndarray,
    *,
    expected_features: int | None = None,
    expected_actions: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass over the batch: (probabilities float32 [B, A], actions int64 [B])."""
    batch = validate_observations(observations, expected_features)
    device = _module_device(module)
    with torch.inference_mode():
        result = module(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
    if not (isinstance(result, tuple) and len(result) == 2):
        raise PolicyOutputError(f"policy must return (probabilities, action), got {type(result).__name__}")
    probabilities = result[0].detach().cpu().numpy()
    actions = result[1].detach().cpu().numpy()
    rows = batch.shape[0]
    if probabilities.dtype != np.float32 or probabilities.ndim != 2 or probabilities.shape[0] != rows:
        raise PolicyOutputError(
            f"probabilities must be float32 [{rows}, A], got {probabilities.dtype} {list(probabilities.shape)}"
        )
    if expected_actions is not None and probabilities.shape[1] != expected_actions:
        raise PolicyOutputError(
            f"probabilities have {probabilities.shape[1]} actions, signature says {expected_actions}"
        )
    if actions.dtype != np.int64 or actions.shape != (rows,):
        raise PolicyOutputError(f"action must be int64 [{rows}], got {actions.dtype} {list(actions.shape)}")
    return probabilities, actions


def _module_device(module: torch.jit.ScriptModule) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")
