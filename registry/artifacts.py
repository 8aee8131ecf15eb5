"""Signed policy artifacts on disk: `<agent>.ptc` + `<agent>.manifest.json` + `<agent>.manifest.sig` in one folder.

Two folders under the artifacts root (the project root by default):

  models/rl/candidates/<mlflow_run_id>/<agent>.ptc   every trained candidate, as signed at registration
  models/rl/production/<YYYY-MM-DD>[.<n>]/<agent>.ptc  what was promoted that day (`.2`, `.3`, ... for a second,
                                                      third promotion the same day), with its promotion.json

Neither is ever overwritten: a run id is unique, and each promotion gets a folder of its own
(`marlops.lifecycle.promotion`). The registered copies live in MLflow, pinned by sha256.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry import verification
from registry.errors import ArtifactVerificationError, ArtifactWriteError
from registry.keys import SigningKeys
from registry.manifest import build_manifest

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

ARTIFACT_SUFFIX = ".ptc"
MODELS_SUBDIR = Path("models") / "rl"
CANDIDATES_SUBDIR = MODELS_SUBDIR / "candidates"
PRODUCTION_SUBDIR = MODELS_SUBDIR / "production"
# A run id (or any folder name) becomes one path component: no separators, no "..", no hidden names.
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def candidate_dir_for(root: Path, run_id: str) -> Path:
    """`<root>/models/rl/candidates/<run_id>`: the signed artifacts of one training run."""
    if not _COMPONENT.match(run_id) or ".." in run_id:
        raise ArtifactWriteError(f"run id {run_id!r} cannot name a folder (letters, digits, '_', '.', '-')")
    return root / CANDIDATES_SUBDIR / run_id


def production_dir_for(root: Path, day: date, n: int = 1) -> Path:
    """`<root>/models/rl/production/<YYYY-MM-DD>` for the first promotion of `day`, `<YYYY-MM-DD>.<n>` for the n-th."""
    if n < 1:
        raise ValueError(f"promotion number must be >= 1, got {n}")
    name = day.isoformat() if n == 1 else f"{day.isoformat()}.{n}"
    return root / PRODUCTION_SUBDIR / name


def production_dirs_of(root: Path, day: date) -> list[Path]:
    """The production folders of `day` that exist, in promotion order (`<date>`, `<date>.2`, ...)."""
    found: list[Path] = []
    n = 1
    while (candidate := production_dir_for(root, day, n)).exists():
        found.append(candidate)
        n += 1
    return found


def artifact_path_in(directory: Path, agent: str) -> Path:
    return directory / f"{agent}{ARTIFACT_SUFFIX}"


def artifact_files(artifact: Path) -> tuple[Path, Path, Path]:
    """The three files that make one signed artifact, in the order they are published."""
    return artifact, verification.manifest_path_for(artifact), verification.signature_path_for(artifact)


def write_signed_artifact(
    module_path_or_bytes: Path | bytes | torch.jit.ScriptModule,
    *,
    directory: Path,
    agent: str,
    manifest: Mapping[str, Any],
    keys: SigningKeys,
) -> Path:
    """Write a TorchScript artifact with its signed manifest into `directory`; returns the `.ptc` path.

    `manifest` must carry `signature` (PolicySignature or its dict) and `dataset_id`; see
    `registry.manifest.build_manifest` for the fields filled in. Never replaces a different artifact:
    an existing `<agent>.ptc` with other bytes raises ArtifactWriteError (candidate folders are named
    by run id, so a clash is a bug). The same bytes again (a retried registration) are re-signed.
    """
    full_manifest = build_manifest(agent, manifest)
    payload = _module_bytes(module_path_or_bytes)
    target = artifact_path_in(directory, agent)
    _refuse_to_replace(target, payload)
    target.parent.mkdir(parents=True, exist_ok=True)
    private_key = keys.load_private()
    # Stage in the target folder so the final renames stay on one filesystem (atomic per file).
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".staging-") as staging:
        staged = Path(staging) / target.name
        staged.write_bytes(payload)
        signed = verification.sign_artifact(staged, full_manifest, private_key)
        _refuse_to_replace(target, payload)  # again: another writer may have been faster
        if target.exists():
            logger.info("re-signing the identical artifact %s", target)
        # Artifact first, signature last: a reader in between sees a mismatch and refuses (fails closed).
        for source, destination in zip(artifact_files(staged), artifact_files(target), strict=True):
            os.replace(source, destination)
    logger.info("wrote signed artifact %s (sha256 %s, %d bytes)", target, signed["sha256"], signed["size"])
    return target


def _refuse_to_replace(target: Path, payload: bytes) -> None:
    if target.exists() and (not target.is_file() or target.read_bytes() != payload):
        raise ArtifactWriteError(
            f"{target}: a different artifact is already there; refusing to overwrite it "
            "(candidate folders are per MLflow run id, production folders per promotion)"
        )


def load_verified_artifact(
    path: Path,
    keys_or_public_pem: SigningKeys | bytes,
    expected_sha256: str | None = None,
    expected_feature_spec_hash: str | None = None,
    *,
    expected_agent: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Verify a signed artifact; returns (path, manifest) or raises ArtifactVerificationError naming the problem."""
    public_pem = keys_or_public_pem.public_pem() if isinstance(keys_or_public_pem, SigningKeys) else keys_or_public_pem
    try:
        manifest = verification.verify_artifact(
            path,
            public_pem,
            expected_feature_spec_hash=expected_feature_spec_hash,
            expected_sha256=expected_sha256,
        )
    except verification.ArtifactVerificationError as exc:
        raise ArtifactVerificationError(str(exc)) from exc
    # The signature covers the manifest, not the file name: catch a renamed or swapped artifact.
    if manifest.get("artifact") != path.name:
        raise ArtifactVerificationError(f"{path}: signed manifest is for file {manifest.get('artifact')!r}")
    if expected_agent is not None and manifest.get("agent") != expected_agent:
        raise ArtifactVerificationError(
            f"{path}: signed for agent {manifest.get('agent')!r}, expected {expected_agent!r}"
        )
    return path, manifest


def _module_bytes(module: Path | bytes | torch.jit.ScriptModule) -> bytes:
    if isinstance(module, bytes):
        return module
    if isinstance(module, Path):
        if not module.is_file():
            raise ArtifactWriteError(f"{module}: TorchScript file does not exist")
        return module.read_bytes()
    import torch  # deferred: importing torch costs seconds and only this branch needs it

    if not isinstance(module, torch.jit.ScriptModule):
        raise ArtifactWriteError(
            f"expected a TorchScript file path, bytes, or torch.jit.ScriptModule, got {type(module).__name__}"
        )
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def copy_signed_artifact(artifact: Path, destination_dir: Path) -> Path:
    """Copy the three files of a signed artifact into `destination_dir`; returns the copied `.ptc`."""
    destination_dir.mkdir(parents=True, exist_ok=True)
    for source in artifact_files(artifact):
        if not source.is_file():
            raise ArtifactVerificationError(f"{source}: missing; refusing to copy an incomplete signed artifact")
        shutil.copy2(source, destination_dir / source.name)
    return destination_dir / artifact.name
