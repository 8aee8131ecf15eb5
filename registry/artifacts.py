"""Signed policy artifacts on disk: `<root>/models/rl/production/<YYYY-MM-DD>/<agent>.ptc` + manifest + sig."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, date, datetime
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
PRODUCTION_SUBDIR = Path("models") / "rl" / "production"


def artifact_path_for(root: Path, agent: str, day: date) -> Path:
    return root / PRODUCTION_SUBDIR / day.isoformat() / f"{agent}{ARTIFACT_SUFFIX}"


def artifact_files(artifact: Path) -> tuple[Path, Path, Path]:
    """The three files that make one signed artifact, in the order they are published."""
    return artifact, verification.manifest_path_for(artifact), verification.signature_path_for(artifact)


def write_signed_artifact(
    module_path_or_bytes: Path | bytes | torch.jit.ScriptModule,
    *,
    root: Path,
    agent: str,
    manifest: Mapping[str, Any],
    keys: SigningKeys,
    day: date | None = None,
) -> Path:
    """Write a TorchScript artifact with its signed manifest; returns the `.ptc` path.

    `manifest` must carry `signature` (PolicySignature or its dict) and `dataset_id`; see
    `registry.manifest.build_manifest` for the fields filled in. An artifact already at the path
    (a re-run on the same day) is replaced: registered copies live in MLflow, pinned by sha256.
    """
    full_manifest = build_manifest(agent, manifest)
    target = artifact_path_for(root, agent, day or datetime.now(UTC).date())
    target.parent.mkdir(parents=True, exist_ok=True)
    private_key = keys.load_private()
    # Stage in the target folder so the final renames stay on one filesystem (atomic per file).
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".staging-") as staging:
        staged = Path(staging) / target.name
        staged.write_bytes(_module_bytes(module_path_or_bytes))
        signed = verification.sign_artifact(staged, full_manifest, private_key)
        if target.exists():
            logger.info("replacing signed artifact %s", target)
        # Artifact first, signature last: a reader in between sees a mismatch and refuses (fails closed).
        for source, destination in zip(artifact_files(staged), artifact_files(target), strict=True):
            os.replace(source, destination)
    logger.info("wrote signed artifact %s (sha256 %s, %d bytes)", target, signed["sha256"], signed["size"])
    return target


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
