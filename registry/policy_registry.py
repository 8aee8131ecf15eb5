"""The policy registry: MLflow registered models (one per agent), versions pinned by sha256, aliases.

Artifacts are logged as plain files into the training run (`<run>/artifacts/<agent>/`), never
through `mlflow.pytorch.log_model`, so that what is registered is byte-for-byte the file that was
signed, and each version's `source` points at that folder.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from contracts.policy import PolicySignature
from registry import verification
from registry.artifacts import artifact_files, load_verified_artifact
from registry.errors import (
    ArtifactVerificationError,
    PolicyNotFoundError,
    RegistrationError,
    RegistryError,
)
from registry.registered_policy import (
    ALIAS_CANDIDATE,
    ALIAS_LAST_KNOWN_GOOD,
    ALIAS_PRODUCTION,
    TAG_AGENT,
    TAG_DATASET_ID,
    TAG_GIT_COMMIT,
    RegisteredPolicy,
    policy_from_model_version,
    version_tags,
)
from registry.tracking import default_artifact_location, normalize_tracking_uri
from registry.training_run import TrainingRun

logger = logging.getLogger(__name__)

# Registered model names go into MLflow filter strings and artifact paths: keep them plain.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# MLflow's own tag: the UI shows it as the run's source version.
MLFLOW_GIT_COMMIT_TAG = "mlflow.source.git.commit"
_ALREADY_EXISTS = ErrorCode.Name(RESOURCE_ALREADY_EXISTS)
_DOES_NOT_EXIST = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


class PolicyRegistry:
    def __init__(self, tracking_uri: str, *, experiment: str = "marlops", artifact_location: str | None = None):
        self.tracking_uri = normalize_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.artifact_location = artifact_location or default_artifact_location(self.tracking_uri)
        # Registry URI given explicitly: MLflow otherwise falls back to process-global state.
        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self._experiment_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        return self._client

    # ---- runs -------------------------------------------------------------------------------

    @contextmanager
    def start_run(self, name: str, params: Mapping[str, object] | None = None) -> Iterator[TrainingRun]:
        """Open an MLflow run; FINISHED on normal exit, FAILED (and re-raised) on an exception."""
        run = self._create_run(name)
        if params:
            run.log_params(params)
        try:
            yield run
        except BaseException:
            self._client.set_terminated(run.run_id, status="FAILED")
            raise
        self._client.set_terminated(run.run_id, status="FINISHED")

    def _create_run(self, name: str) -> TrainingRun:
        experiment_id = self._ensure_experiment()
        with _mlflow_errors(RegistrationError, f"creating run {name!r}"):
            info = self._client.create_run(experiment_id, run_name=name).info
        logger.info("started MLflow run %s (%s) in experiment %s", info.run_id, name, self.experiment)
        return TrainingRun(client=self._client, run_id=info.run_id, experiment_id=experiment_id)

    def _ensure_experiment(self) -> str:
        if self._experiment_id is not None:
            return self._experiment_id
        existing = self._client.get_experiment_by_name(self.experiment)
        if existing is not None:
            experiment_id: str = existing.experiment_id
        else:
            try:
                experiment_id = self._client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location
                )
            except MlflowException as exc:
                # Losing a creation race to another process is fine: use the experiment it created.
                raced = (
                    self._client.get_experiment_by_name(self.experiment) if exc.error_code == _ALREADY_EXISTS else None
                )
                if raced is None:
                    raise RegistryError(f"cannot create MLflow experiment {self.experiment!r}: {exc.message}") from exc
                experiment_id = raced.experiment_id
        self._experiment_id = experiment_id
        return experiment_id

    # ---- registration ----------------------------------------------------------------------

    def register(
        self,
        agent: str,
        artifact: Path,
        *,
        signature: PolicySignature,
        metrics: Mapping[str, float],
        params: Mapping[str, str],
        dataset_id: str,
        git_commit: str,
        run_id: str | None = None,
        aliases: Sequence[str] = (ALIAS_CANDIDATE,),
    ) -> RegisteredPolicy:
        """Register a signed artifact as the next version of `agent`.

        The artifact's signed manifest must agree with `signature`, `dataset_id` and `git_commit`:
        the version's tags are what downloads are verified against.
        """
        _check_name(agent, "agent")
        if signature.agent != agent:
            raise RegistrationError(f"signature is for agent {signature.agent!r}, registering {agent!r}")
        manifest = _read_consistent_manifest(agent, artifact, signature, dataset_id, git_commit)

        run = self._open_run(run_id, agent)
        try:
            source, tags = self._log_to_run(
                run, agent, artifact, manifest, signature, metrics, params, dataset_id, git_commit
            )
        except BaseException:
            if run_id is None:
                self._client.set_terminated(run.run_id, status="FAILED")
            raise
        if run_id is None:
            self._client.set_terminated(run.run_id, status="FINISHED")

        self._ensure_registered_model(agent)
        with _mlflow_errors(RegistrationError, f"creating a version of {agent}"):
            version = self._client.create_model_version(
                agent, source=source, run_id=run.run_id, tags=tags, description=f"dataset {dataset_id}"
            )
        logger.info(
            "registered %s version %s (sha256 %s) from run %s", agent, version.version, tags["sha256"], run.run_id
        )
        for alias in aliases:
            if alias == ALIAS_PRODUCTION:
                self.promote(agent, str(version.version))  # keeps last-known-good pointing at the old production
            else:
                self.set_alias(agent, alias, str(version.version))
        return self.resolve(agent, str(version.version))

    def _log_to_run(
        self,
        run: TrainingRun,
        agent: str,
        artifact: Path,
        manifest: Mapping[str, Any],
        signature: PolicySignature,
        metrics: Mapping[str, float],
        params: Mapping[str, str],
        dataset_id: str,
        git_commit: str,
    ) -> tuple[str, dict[str, str]]:
        """Log params, metrics, tags and the three signed files; returns (version source URI, version tags)."""
        with _mlflow_errors(RegistrationError, f"listing artifacts of run {run.run_id}"):
            already = self._client.list_artifacts(run.run_id, agent)
        if already:
            # A second copy would overwrite the folder an earlier version's source points at.
            raise RegistrationError(
                f"run {run.run_id} already holds artifacts for {agent}; register one version per agent per run"
            )
        tags = version_tags(
            agent=agent,
            signature=signature,
            sha256=manifest["sha256"],
            dataset_id=dataset_id,
            git_commit=git_commit,
            artifact_name=artifact.name,
            artifact_path=agent,
            metrics=metrics,
        )
        run.log_params(params)
        run.log_metrics(metrics)
        # One run may register both agents, so per-agent tags carry the agent as a prefix.
        run_tags = {f"{agent}.{key}": value for key, value in tags.items() if key != TAG_AGENT}
        run_tags.update({TAG_GIT_COMMIT: git_commit, TAG_DATASET_ID: dataset_id, MLFLOW_GIT_COMMIT_TAG: git_commit})
        run.set_tags(run_tags)
        with _mlflow_errors(RegistrationError, f"logging artifact files of {artifact}"):
            for path in artifact_files(artifact):
                self._client.log_artifact(run.run_id, str(path), artifact_path=agent)
            run_artifact_uri = self._client.get_run(run.run_id).info.artifact_uri
        return f"{run_artifact_uri}/{agent}", tags

    def _open_run(self, run_id: str | None, agent: str) -> TrainingRun:
        if run_id is None:
            return self._create_run(f"register-{agent}")
        with _mlflow_errors(RegistrationError, f"looking up run {run_id}"):
            info = self._client.get_run(run_id).info
        return TrainingRun(client=self._client, run_id=info.run_id, experiment_id=info.experiment_id)

    def _ensure_registered_model(self, agent: str) -> None:
        try:
            self._client.create_registered_model(agent, tags={TAG_AGENT: agent}, description=f"marlops policy {agent}")
            logger.info("created registered model %s", agent)
        except MlflowException as exc:
            if exc.error_code != _ALREADY_EXISTS:
                raise RegistrationError(f"cannot create registered model {agent!r}: {exc.message}") from exc

    # ---- aliases ---------------------------------------------------------------------------

    def set_alias(self, agent: str, alias: str, version: str) -> RegisteredPolicy:
        """Point one alias at a version (number or alias). Use promote() for `production`: it keeps last-known-good."""
        policy = self.resolve(agent, version)
        with _mlflow_errors(RegistryError, f"setting alias {alias!r} on {agent}"):
            self._client.set_registered_model_alias(agent, alias, policy.version)
        logger.info("alias %s of %s -> version %s", alias, agent, policy.version)
        return self.resolve(agent, policy.version)

    def delete_alias(self, agent: str, alias: str) -> None:
        self._aliases(agent)  # PolicyNotFoundError for an unknown agent
        with _mlflow_errors(RegistryError, f"deleting alias {alias!r} of {agent}"):
            self._client.delete_registered_model_alias(agent, alias)

    def promote(self, agent: str, version: str) -> RegisteredPolicy:
        """Point `production` at `version` (a number or an alias); the previous production becomes `last-known-good`."""
        target = self.resolve(agent, version)
        previous = self._aliases(agent).get(ALIAS_PRODUCTION)
        if previous == target.version:
            logger.info("%s version %s is already production", agent, target.version)
            return target
        if previous is not None:
            self.set_alias(agent, ALIAS_LAST_KNOWN_GOOD, previous)
        return self.set_alias(agent, ALIAS_PRODUCTION, target.version)

    def rollback(self, agent: str) -> RegisteredPolicy:
        """Point `production` back at `last-known-good` and clear that alias (there is no older known-good one)."""
        aliases = self._aliases(agent)
        last_good = aliases.get(ALIAS_LAST_KNOWN_GOOD)
        if last_good is None:
            raise PolicyNotFoundError(
                f"{agent} has no {ALIAS_LAST_KNOWN_GOOD!r} alias to roll back to; {_describe(aliases)}"
            )
        self.set_alias(agent, ALIAS_PRODUCTION, last_good)
        self.delete_alias(agent, ALIAS_LAST_KNOWN_GOOD)
        logger.warning(
            "rolled %s production back from version %s to %s", agent, aliases.get(ALIAS_PRODUCTION), last_good
        )
        return self.resolve(agent, last_good)

    def set_version_tags(self, agent: str, version: str, tags: Mapping[str, str]) -> None:
        """Set tags on one version (a number or an alias); the tags marlops registered with stay as they are."""
        policy = self.resolve(agent, version)
        with _mlflow_errors(RegistryError, f"tagging {agent} version {policy.version}"):
            for key, value in tags.items():
                self._client.set_model_version_tag(agent, policy.version, key, value)

    def delete_version_tags(self, agent: str, version: str, keys: Sequence[str]) -> None:
        """Remove tags from one version; keys it does not carry are skipped."""
        policy = self.resolve(agent, version)
        with _mlflow_errors(RegistryError, f"deleting tags of {agent} version {policy.version}"):
            present = self._client.get_model_version(agent, policy.version).tags or {}
            for key in keys:
                if key in present:
                    self._client.delete_model_version_tag(agent, policy.version, key)

    # ---- lookup ----------------------------------------------------------------------------

    def aliases(self, agent: str) -> dict[str, str]:
        """alias -> version of `agent`; PolicyNotFoundError when nothing is registered under that name."""
        return self._aliases(agent)

    def resolve(self, agent: str, version_or_alias: str) -> RegisteredPolicy:
        """A version number ("3") or an alias ("production")."""
        aliases = self._aliases(agent)
        if version_or_alias.isdigit():
            version = str(int(version_or_alias))
        elif version_or_alias in aliases:
            version = aliases[version_or_alias]
        else:
            raise PolicyNotFoundError(f"{agent} has no alias {version_or_alias!r}; {_describe(aliases)}")
        try:
            model_version = self._client.get_model_version(agent, version)
        except MlflowException as exc:
            if exc.error_code != _DOES_NOT_EXIST:
                raise RegistryError(f"cannot read {agent} version {version}: {exc.message}") from exc
            existing = ", ".join(p.version for p in self.list_versions(agent)) or "none"
            raise PolicyNotFoundError(f"{agent} has no version {version}; versions: {existing}") from exc
        return policy_from_model_version(model_version, aliases)

    def list_versions(self, agent: str) -> list[RegisteredPolicy]:
        """Every version of `agent`, oldest first; empty when nothing is registered under that name."""
        _check_name(agent, "agent")
        try:
            aliases = self._aliases(agent)
        except PolicyNotFoundError:
            return []
        with _mlflow_errors(RegistryError, f"listing versions of {agent}"):
            found = self._client.search_model_versions(f"name = '{agent}'")
        return sorted((policy_from_model_version(v, aliases) for v in found), key=lambda p: int(p.version))

    def _aliases(self, agent: str) -> dict[str, str]:
        _check_name(agent, "agent")
        try:
            model = self._client.get_registered_model(agent)
        except MlflowException as exc:
            if exc.error_code != _DOES_NOT_EXIST:
                raise RegistryError(f"cannot read registered model {agent!r}: {exc.message}") from exc
            names = sorted(m.name for m in self._client.search_registered_models())
            raise PolicyNotFoundError(f"no registered policy named {agent!r}; registered: {names or 'none'}") from exc
        # Aliases come from the registered model: search results may omit them on model versions.
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    # ---- download --------------------------------------------------------------------------

    def download_verified(
        self, agent: str, version_or_alias: str, dst_dir: Path, public_pem: bytes
    ) -> tuple[Path, dict[str, Any]]:
        """Download a version's signed files into `dst_dir/<agent>/` and verify them before returning.

        Checks the Ed25519 signature of the manifest, the file's sha256 against both the manifest
        and the version's registered tag, the feature spec hash, and that the signed policy
        signature is the registered one. Raises ArtifactVerificationError otherwise.
        """
        policy = self.resolve(agent, version_or_alias)
        dst_dir.mkdir(parents=True, exist_ok=True)
        target = dst_dir / policy.artifact_path
        for stale in artifact_files(target / policy.artifact_name):
            # A file left by an earlier download must not stand in for one missing from the store.
            stale.unlink(missing_ok=True)
        with _mlflow_errors(RegistryError, f"downloading {agent} version {policy.version} from run {policy.run_id}"):
            self._client.download_artifacts(policy.run_id, policy.artifact_path, str(dst_dir))
        artifact = target / policy.artifact_name
        path, manifest = load_verified_artifact(
            artifact,
            public_pem,
            expected_sha256=policy.sha256,
            expected_feature_spec_hash=policy.feature_spec_hash,
            expected_agent=agent,
        )
        if manifest.get("signature") != json.loads(policy.signature.model_dump_json()):
            raise ArtifactVerificationError(
                f"{artifact}: the signed manifest's policy signature differs from the one registered "
                f"for version {policy.version}"
            )
        logger.info("downloaded and verified %s version %s to %s", agent, policy.version, path)
        return path, manifest


def _read_consistent_manifest(
    agent: str, artifact: Path, signature: PolicySignature, dataset_id: str, git_commit: str
) -> dict[str, Any]:
    """Read the artifact's manifest and check it against the registration arguments.

    The signature itself is verified by whoever loads the artifact (the signing key's public half
    is not the registry's business); here a mismatch would only create a version that no
    download could ever verify, so refuse it up front.
    """
    for path in artifact_files(artifact):
        if not path.is_file():
            raise RegistrationError(
                f"{path}: missing; register a signed artifact (registry.artifacts.write_signed_artifact)"
            )
    try:
        manifest: dict[str, Any] = json.loads(verification.manifest_path_for(artifact).read_bytes())
    except ValueError as exc:
        raise RegistrationError(f"{verification.manifest_path_for(artifact)}: not valid JSON: {exc}") from exc
    actual_sha = verification.sha256_file(artifact)
    expected: dict[str, object] = {
        "sha256": actual_sha,
        "artifact": artifact.name,
        "agent": agent,
        "feature_spec_hash": signature.feature_spec_hash,
        "signature": json.loads(signature.model_dump_json()),
        "dataset_id": dataset_id,
        "git_commit": git_commit,
    }
    wrong = [
        f"{key}: manifest {manifest.get(key)!r} != {value!r}"
        for key, value in expected.items()
        if manifest.get(key) != value
    ]
    if wrong:
        raise RegistrationError(f"{artifact}: signed manifest disagrees with the registration: " + "; ".join(wrong))
    return manifest


def _check_name(value: str, what: str) -> None:
    if not _NAME_PATTERN.match(value):
        raise RegistryError(f"{what} {value!r} is not a valid name (letters, digits, '_', '.', '-')")


def _describe(aliases: Mapping[str, str]) -> str:
    if not aliases:
        return "no aliases are set"
    return "aliases: " + ", ".join(f"{alias} -> version {version}" for alias, version in sorted(aliases.items()))


@contextmanager
def _mlflow_errors(error: type[RegistryError], doing: str) -> Iterator[None]:
    try:
        yield
    except MlflowException as exc:
        raise error(f"MLflow refused {doing}: {exc.message}") from exc
