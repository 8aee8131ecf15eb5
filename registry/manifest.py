"""The manifest signed next to every policy artifact: who it is, what it expects, where it came from."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.policy import PolicySignature
from registry.errors import ManifestError
from registry.git import current_git_commit

logger = logging.getLogger(__name__)

REQUIRED_MANIFEST_KEYS: tuple[str, ...] = (
    "agent",
    "feature_spec_hash",
    "signature",
    "git_commit",
    "dataset_id",
    "created_at",
)
# Written by verification.sign_artifact from the file itself; a caller-supplied value would be a lie.
COMPUTED_MANIFEST_KEYS: tuple[str, ...] = ("sha256", "size", "artifact")


def build_manifest(agent: str, fields: Mapping[str, Any], *, git_cwd: Path | None = None) -> dict[str, Any]:
    """Complete and check a manifest before signing.

    Fills `agent`, `feature_spec_hash` (from the signature), `git_commit` (from the working tree)
    and `created_at` (now, UTC) when absent; refuses contradictions and missing `dataset_id`.
    """
    manifest = dict(fields)
    computed = sorted(set(manifest) & set(COMPUTED_MANIFEST_KEYS))
    if computed:
        raise ManifestError(f"manifest keys {computed} are computed from the artifact file; do not pass them")
    if manifest.setdefault("agent", agent) != agent:
        raise ManifestError(f"manifest agent {manifest['agent']!r} != artifact agent {agent!r}")

    signature = parse_signature(manifest.get("signature"), where="manifest")
    if signature.agent != agent:
        raise ManifestError(f"manifest signature is for agent {signature.agent!r}, artifact is for {agent!r}")
    manifest["signature"] = signature.model_dump(mode="json")
    if manifest.setdefault("feature_spec_hash", signature.feature_spec_hash) != signature.feature_spec_hash:
        raise ManifestError(
            f"manifest feature_spec_hash {manifest['feature_spec_hash']} != "
            f"signature feature_spec_hash {signature.feature_spec_hash}"
        )

    dataset_id = manifest.get("dataset_id")
    if not isinstance(dataset_id, str) or not dataset_id:
        raise ManifestError(f"manifest dataset_id must be a non-empty string, got {dataset_id!r}")
    if "git_commit" not in manifest:
        manifest["git_commit"] = current_git_commit(git_cwd)
    manifest.setdefault("created_at", datetime.now(UTC).isoformat())

    for key, value in manifest.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"manifest value of {key!r} is not JSON-serialisable: {exc}") from exc
    return manifest


def parse_signature(value: object, *, where: str) -> PolicySignature:
    if value is None:
        raise ManifestError(f"{where}: policy signature is missing")
    if isinstance(value, PolicySignature):
        return value
    try:
        if isinstance(value, str):
            return PolicySignature.model_validate_json(value)
        return PolicySignature.model_validate(value)
    except ValidationError as exc:
        raise ManifestError(f"{where}: invalid policy signature: {exc}") from exc
