"""One registered policy version as marlops sees it, rebuilt from an MLflow model version's tags."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion

from contracts.base import Frozen
from contracts.policy import PolicyRef, PolicySignature
from registry.errors import RegistryError
from registry.manifest import parse_signature

ALIAS_CANDIDATE = "candidate"
ALIAS_PRODUCTION = "production"
ALIAS_LAST_KNOWN_GOOD = "last-known-good"

TAG_AGENT = "agent"
TAG_GIT_COMMIT = "git_commit"
TAG_DATASET_ID = "dataset_id"
TAG_SHA256 = "sha256"
TAG_FEATURE_SPEC_HASH = "feature_spec_hash"
TAG_SIGNATURE = "signature"
TAG_ARTIFACT_NAME = "artifact_name"
TAG_ARTIFACT_PATH = "artifact_path"
# Model versions have no metrics of their own; mirroring them as tags lets a listing show them.
METRIC_TAG_PREFIX = "metric."

REQUIRED_VERSION_TAGS: tuple[str, ...] = (
    TAG_AGENT,
    TAG_GIT_COMMIT,
    TAG_DATASET_ID,
    TAG_SHA256,
    TAG_FEATURE_SPEC_HASH,
    TAG_SIGNATURE,
    TAG_ARTIFACT_NAME,
    TAG_ARTIFACT_PATH,
)


class RegisteredPolicy(Frozen):
    agent: str
    version: str
    run_id: str
    sha256: str
    feature_spec_hash: str
    source: str
    aliases: tuple[str, ...]
    signature: PolicySignature
    dataset_id: str
    git_commit: str
    artifact_name: str
    artifact_path: str  # folder inside the run's artifacts that holds the three signed files
    metrics: dict[str, float]
    created_at: datetime

    def ref(self) -> PolicyRef:
        return PolicyRef.model_validate({"agent": self.agent, "version": self.version})


def version_tags(
    *,
    agent: str,
    signature: PolicySignature,
    sha256: str,
    dataset_id: str,
    git_commit: str,
    artifact_name: str,
    artifact_path: str,
    metrics: Mapping[str, float],
) -> dict[str, str]:
    tags = {
        TAG_AGENT: agent,
        TAG_GIT_COMMIT: git_commit,
        TAG_DATASET_ID: dataset_id,
        TAG_SHA256: sha256,
        TAG_FEATURE_SPEC_HASH: signature.feature_spec_hash,
        TAG_SIGNATURE: signature.model_dump_json(),
        TAG_ARTIFACT_NAME: artifact_name,
        TAG_ARTIFACT_PATH: artifact_path,
    }
    tags.update({f"{METRIC_TAG_PREFIX}{key}": repr(float(value)) for key, value in metrics.items()})
    return tags


def policy_from_model_version(version: ModelVersion, aliases: Mapping[str, str]) -> RegisteredPolicy:
    """Rebuild a RegisteredPolicy; `aliases` maps alias -> version for the whole registered model."""
    tags: dict[str, str] = dict(version.tags or {})
    missing = [tag for tag in REQUIRED_VERSION_TAGS if tag not in tags]
    where = f"{version.name} version {version.version}"
    if missing:
        raise RegistryError(f"{where} was not registered by marlops: missing version tags {missing}")
    metrics: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                metrics[key[len(METRIC_TAG_PREFIX) :]] = float(value)
            except ValueError as exc:
                raise RegistryError(f"{where}: tag {key}={value!r} is not a number") from exc
    return RegisteredPolicy(
        agent=tags[TAG_AGENT],
        version=str(version.version),
        run_id=version.run_id or "",
        sha256=tags[TAG_SHA256],
        feature_spec_hash=tags[TAG_FEATURE_SPEC_HASH],
        source=version.source or "",
        aliases=tuple(sorted(alias for alias, v in aliases.items() if v == str(version.version))),
        signature=parse_signature(tags[TAG_SIGNATURE], where=where),
        dataset_id=tags[TAG_DATASET_ID],
        git_commit=tags[TAG_GIT_COMMIT],
        artifact_name=tags[TAG_ARTIFACT_NAME],
        artifact_path=tags[TAG_ARTIFACT_PATH],
        metrics=metrics,
        created_at=datetime.fromtimestamp((version.creation_timestamp or 0) / 1000, tz=UTC),
    )
