"""PolicyRegistry against a real MLflow sqlite store with real signed TorchScript files."""

import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from registry_test_values import DATASET_ID, FEATURE_SPEC_HASH, GIT_COMMIT

from contracts.policy import PolicyRef, PolicySignature
from registry import verification
from registry.artifacts import load_verified_artifact
from registry.errors import ArtifactVerificationError, PolicyNotFoundError, RegistrationError, RegistryError
from registry.keys import SigningKeys, load_or_create_signing_keys
from registry.policy_registry import PolicyRegistry
from registry.registered_policy import RegisteredPolicy

WriteArtifact = Callable[[torch.jit.ScriptModule, date], Path]


def _register(
    registry: PolicyRegistry,
    artifact: Path,
    signature: PolicySignature,
    *,
    sharpe: float,
    run_id: str | None = None,
    aliases: tuple[str, ...] = ("candidate",),
) -> RegisteredPolicy:
    return registry.register(
        "symbol_agent",
        artifact,
        signature=signature,
        metrics={"sharpe": sharpe, "max_drawdown": 0.12},
        params={"seed": "7", "iterations": "3"},
        dataset_id=DATASET_ID,
        git_commit=GIT_COMMIT,
        run_id=run_id,
        aliases=aliases,
    )


@pytest.fixture
def two_versions(
    policy_registry: PolicyRegistry,
    signed_artifact: WriteArtifact,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
    symbol_signature: PolicySignature,
) -> tuple[RegisteredPolicy, RegisteredPolicy]:
    first = _register(policy_registry, signed_artifact(tiny_modules[0], date(2026, 9, 1)), symbol_signature, sharpe=1.1)
    second = _register(
        policy_registry, signed_artifact(tiny_modules[1], date(2026, 10, 1)), symbol_signature, sharpe=1.4
    )
    return first, second


def _stored_folder(policy: RegisteredPolicy) -> Path:
    """The MLflow artifact-store folder a version's source points at (a file:// URI here)."""
    parsed = urlparse(policy.source)
    assert parsed.scheme == "file", policy.source
    return Path(parsed.path)


def test_register_when_two_versions_then_numbered_with_tags_metrics_and_files(
    policy_registry: PolicyRegistry,
    two_versions: tuple[RegisteredPolicy, RegisteredPolicy],
    symbol_signature: PolicySignature,
) -> None:
    first, second = two_versions
    assert (first.version, second.version) == ("1", "2")
    assert second.ref() == PolicyRef(agent="symbol_agent", version="2")
    assert first.sha256 != second.sha256
    assert second.metrics == {"sharpe": 1.4, "max_drawdown": 0.12}
    assert second.signature == symbol_signature
    assert (second.dataset_id, second.git_commit, second.feature_spec_hash) == (
        DATASET_ID,
        GIT_COMMIT,
        FEATURE_SPEC_HASH,
    )
    # candidate follows the newest registration
    assert first.aliases == ("candidate",)
    assert policy_registry.resolve("symbol_agent", "1").aliases == ()
    assert policy_registry.resolve("symbol_agent", "candidate").version == "2"

    stored = policy_registry.client.get_model_version("symbol_agent", "2")
    assert stored.tags["sha256"] == second.sha256
    assert json.loads(stored.tags["signature"]) == json.loads(symbol_signature.model_dump_json())
    assert stored.source == second.source and stored.source.endswith("/symbol_agent")
    run = policy_registry.client.get_run(second.run_id)
    assert run.data.metrics["sharpe"] == 1.4
    assert run.data.params == {"seed": "7", "iterations": "3"}
    assert run.data.tags["symbol_agent.sha256"] == second.sha256
    assert run.data.tags["git_commit"] == GIT_COMMIT
    folder = _stored_folder(second)
    assert sorted(p.name for p in folder.iterdir()) == [
        "symbol_agent.manifest.json",
        "symbol_agent.manifest.sig",
        "symbol_agent.ptc",
    ]
    assert verification.sha256_file(folder / "symbol_agent.ptc") == second.sha256


def test_register_when_started_from_another_folder_then_artifacts_stay_next_to_the_database(
    policy_registry: PolicyRegistry,
    signed_artifact: WriteArtifact,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
    symbol_signature: PolicySignature,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    policy = _register(
        policy_registry, signed_artifact(tiny_modules[0], date(2026, 9, 1)), symbol_signature, sharpe=1.0
    )
    assert _stored_folder(policy).is_relative_to(tmp_path / "state" / "mlartifacts")
    assert list(elsewhere.iterdir()) == []


def test_register_when_training_run_given_then_iteration_metrics_and_version_share_the_run(
    policy_registry: PolicyRegistry,
    signed_artifact: WriteArtifact,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
    symbol_signature: PolicySignature,
) -> None:
    artifact = signed_artifact(tiny_modules[0], date(2026, 9, 1))
    with policy_registry.start_run("mappo-train", {"learning_rate": "0.0003"}) as run:
        for step, loss in enumerate((0.9, 0.5, 0.3)):
            run.log_metric("policy_loss", loss, step=step)
        policy = _register(policy_registry, artifact, symbol_signature, sharpe=1.2, run_id=run.run_id)

    assert policy.run_id == run.run_id
    history = policy_registry.client.get_metric_history(run.run_id, "policy_loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.3)]
    stored_run = policy_registry.client.get_run(run.run_id)
    assert stored_run.info.status == "FINISHED"
    assert stored_run.data.params == {"learning_rate": "0.0003", "seed": "7", "iterations": "3"}


def test_start_run_when_body_raises_then_run_marked_failed(policy_registry: PolicyRegistry) -> None:
    with pytest.raises(RuntimeError, match="diverged"):
        with policy_registry.start_run("mappo-train") as run:
            raise RuntimeError("training diverged")
    assert policy_registry.client.get_run(run.run_id).info.status == "FAILED"


def test_register_when_same_agent_twice_in_one_run_then_refused(
    policy_registry: PolicyRegistry,
    signed_artifact: WriteArtifact,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
    symbol_signature: PolicySignature,
) -> None:
    artifact = signed_artifact(tiny_modules[0], date(2026, 9, 1))
    with policy_registry.start_run("mappo-train") as run:
        _register(policy_registry, artifact, symbol_signature, sharpe=1.2, run_id=run.run_id)
        with pytest.raises(RegistrationError, match="already holds artifacts for symbol_agent"):
            _register(policy_registry, artifact, symbol_signature, sharpe=1.2, run_id=run.run_id)
    assert [p.version for p in policy_registry.list_versions("symbol_agent")] == ["1"]


def test_register_when_manifest_disagrees_with_arguments_then_refused_naming_the_field(
    policy_registry: PolicyRegistry,
    signed_artifact: WriteArtifact,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
    symbol_signature: PolicySignature,
) -> None:
    artifact = signed_artifact(tiny_modules[0], date(2026, 9, 1))
    with pytest.raises(RegistrationError, match="dataset_id: manifest 'bars-2026-01-02_2026-10-30' != 'other-dataset'"):
        policy_registry.register(
            "symbol_agent",
            artifact,
            signature=symbol_signature,
            metrics={},
            params={},
            dataset_id="other-dataset",
            git_commit=GIT_COMMIT,
        )
    assert policy_registry.list_versions("symbol_agent") == []


def test_register_when_signature_file_missing_then_refused_as_unsigned(
    policy_registry: PolicyRegistry,
    signed_artifact: WriteArtifact,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
    symbol_signature: PolicySignature,
) -> None:
    artifact = signed_artifact(tiny_modules[0], date(2026, 9, 1))
    verification.signature_path_for(artifact).unlink()
    with pytest.raises(RegistrationError, match=r"symbol_agent\.manifest\.sig: missing; register a signed artifact"):
        _register(policy_registry, artifact, symbol_signature, sharpe=1.0)


def test_register_when_signature_is_for_other_agent_then_refused(
    policy_registry: PolicyRegistry,
    signed_artifact: WriteArtifact,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
    symbol_signature: PolicySignature,
) -> None:
    artifact = signed_artifact(tiny_modules[0], date(2026, 9, 1))
    with pytest.raises(RegistrationError, match="signature is for agent 'symbol_agent', registering 'master_agent'"):
        policy_registry.register(
            "master_agent",
            artifact,
            signature=symbol_signature,
            metrics={},
            params={},
            dataset_id=DATASET_ID,
            git_commit=GIT_COMMIT,
        )


def test_promote_when_versions_promoted_in_turn_then_previous_production_becomes_last_known_good(
    policy_registry: PolicyRegistry, two_versions: tuple[RegisteredPolicy, RegisteredPolicy]
) -> None:
    first = policy_registry.promote("symbol_agent", "1")
    assert first.aliases == ("production",)
    with pytest.raises(PolicyNotFoundError):
        policy_registry.resolve("symbol_agent", "last-known-good")

    second = policy_registry.promote("symbol_agent", "candidate")

    assert second.version == "2"
    assert second.aliases == ("candidate", "production")
    assert policy_registry.resolve("symbol_agent", "production").version == "2"
    assert policy_registry.resolve("symbol_agent", "last-known-good").version == "1"
    assert [(p.version, p.aliases) for p in policy_registry.list_versions("symbol_agent")] == [
        ("1", ("last-known-good",)),
        ("2", ("candidate", "production")),
    ]


def test_promote_when_version_already_production_then_last_known_good_unchanged(
    policy_registry: PolicyRegistry, two_versions: tuple[RegisteredPolicy, RegisteredPolicy]
) -> None:
    policy_registry.promote("symbol_agent", "1")
    policy_registry.promote("symbol_agent", "2")
    again = policy_registry.promote("symbol_agent", "2")
    assert again.version == "2"
    assert policy_registry.resolve("symbol_agent", "last-known-good").version == "1"


def test_register_when_production_alias_requested_then_previous_production_kept_as_last_known_good(
    policy_registry: PolicyRegistry,
    signed_artifact: WriteArtifact,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
    symbol_signature: PolicySignature,
) -> None:
    _register(
        policy_registry,
        signed_artifact(tiny_modules[0], date(2026, 9, 1)),
        symbol_signature,
        sharpe=1.0,
        aliases=("production",),
    )
    second = _register(
        policy_registry,
        signed_artifact(tiny_modules[1], date(2026, 10, 1)),
        symbol_signature,
        sharpe=1.3,
        aliases=("candidate", "production"),
    )
    assert second.aliases == ("candidate", "production")
    assert policy_registry.resolve("symbol_agent", "last-known-good").version == "1"


def test_rollback_when_last_known_good_exists_then_production_moves_back(
    policy_registry: PolicyRegistry, two_versions: tuple[RegisteredPolicy, RegisteredPolicy]
) -> None:
    policy_registry.promote("symbol_agent", "1")
    policy_registry.promote("symbol_agent", "2")

    restored = policy_registry.rollback("symbol_agent")

    assert restored.version == "1"
    assert policy_registry.resolve("symbol_agent", "production").version == "1"
    with pytest.raises(PolicyNotFoundError, match="has no alias 'last-known-good'"):
        policy_registry.resolve("symbol_agent", "last-known-good")


def test_rollback_when_no_last_known_good_then_policy_not_found(
    policy_registry: PolicyRegistry, two_versions: tuple[RegisteredPolicy, RegisteredPolicy]
) -> None:
    policy_registry.promote("symbol_agent", "1")
    with pytest.raises(PolicyNotFoundError, match="no 'last-known-good' alias to roll back to"):
        policy_registry.rollback("symbol_agent")
    assert policy_registry.resolve("symbol_agent", "production").version == "1"


def test_resolve_when_unknown_alias_then_error_names_existing_aliases(
    policy_registry: PolicyRegistry, two_versions: tuple[RegisteredPolicy, RegisteredPolicy]
) -> None:
    policy_registry.promote("symbol_agent", "1")
    with pytest.raises(PolicyNotFoundError) as caught:
        policy_registry.resolve("symbol_agent", "staging")
    assert str(caught.value) == (
        "symbol_agent has no alias 'staging'; aliases: candidate -> version 2, production -> version 1"
    )


def test_resolve_when_unknown_version_then_error_lists_versions(
    policy_registry: PolicyRegistry, two_versions: tuple[RegisteredPolicy, RegisteredPolicy]
) -> None:
    with pytest.raises(PolicyNotFoundError, match="symbol_agent has no version 9; versions: 1, 2"):
        policy_registry.resolve("symbol_agent", "9")


def test_resolve_when_unknown_agent_then_error_lists_registered_policies(
    policy_registry: PolicyRegistry, two_versions: tuple[RegisteredPolicy, RegisteredPolicy]
) -> None:
    with pytest.raises(
        PolicyNotFoundError, match=r"no registered policy named 'master_agent'; registered: \['symbol_agent'\]"
    ):
        policy_registry.resolve("master_agent", "production")
    assert policy_registry.list_versions("master_agent") == []


def test_resolve_when_agent_name_would_inject_a_filter_then_refused(policy_registry: PolicyRegistry) -> None:
    with pytest.raises(RegistryError, match="is not a valid name"):
        policy_registry.list_versions("x' OR name != '")


def test_registry_when_reopened_on_same_uri_then_versions_and_aliases_persist(
    policy_registry: PolicyRegistry, two_versions: tuple[RegisteredPolicy, RegisteredPolicy]
) -> None:
    policy_registry.promote("symbol_agent", "2")
    reopened = PolicyRegistry(policy_registry.tracking_uri)
    assert reopened.resolve("symbol_agent", "production") == policy_registry.resolve("symbol_agent", "2")


def test_download_verified_when_untampered_then_torchscript_loads_and_computes_the_same(
    policy_registry: PolicyRegistry,
    two_versions: tuple[RegisteredPolicy, RegisteredPolicy],
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
    signing_keys: SigningKeys,
    tmp_path: Path,
) -> None:
    policy_registry.promote("symbol_agent", "2")

    path, manifest = policy_registry.download_verified(
        "symbol_agent", "production", tmp_path / "dl", signing_keys.public_pem()
    )

    assert path == tmp_path / "dl" / "symbol_agent" / "symbol_agent.ptc"
    assert manifest["sha256"] == two_versions[1].sha256
    assert manifest["dataset_id"] == DATASET_ID
    loaded = torch.jit.load(str(path))
    observation = torch.linspace(-1.0, 1.0, 8).reshape(2, 4)
    assert torch.equal(loaded(observation), tiny_modules[1](observation))


def test_download_verified_when_stored_artifact_tampered_then_refused(
    policy_registry: PolicyRegistry,
    two_versions: tuple[RegisteredPolicy, RegisteredPolicy],
    signing_keys: SigningKeys,
    tmp_path: Path,
) -> None:
    stored = _stored_folder(two_versions[1]) / "symbol_agent.ptc"
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(ArtifactVerificationError, match="does not match the signed manifest.*artifact tampered"):
        policy_registry.download_verified("symbol_agent", "2", tmp_path / "dl", signing_keys.public_pem())


def test_download_verified_when_stored_manifest_tampered_then_refused(
    policy_registry: PolicyRegistry,
    two_versions: tuple[RegisteredPolicy, RegisteredPolicy],
    signing_keys: SigningKeys,
    tmp_path: Path,
) -> None:
    stored = _stored_folder(two_versions[1]) / "symbol_agent.manifest.json"
    manifest = json.loads(stored.read_bytes())
    manifest["dataset_id"] = "forged"
    stored.write_bytes(verification.canonical_manifest_bytes(manifest))
    with pytest.raises(ArtifactVerificationError, match="signature does not verify with the trusted key"):
        policy_registry.download_verified("symbol_agent", "2", tmp_path / "dl", signing_keys.public_pem())


def test_download_verified_when_stored_signature_missing_then_refused_even_after_an_earlier_good_download(
    policy_registry: PolicyRegistry,
    two_versions: tuple[RegisteredPolicy, RegisteredPolicy],
    signing_keys: SigningKeys,
    tmp_path: Path,
) -> None:
    policy_registry.download_verified("symbol_agent", "2", tmp_path / "dl", signing_keys.public_pem())
    (_stored_folder(two_versions[1]) / "symbol_agent.manifest.sig").unlink()
    with pytest.raises(ArtifactVerificationError, match="signature file missing; refusing an unsigned artifact"):
        policy_registry.download_verified("symbol_agent", "2", tmp_path / "dl", signing_keys.public_pem())


def test_download_verified_when_files_swapped_for_another_signed_version_then_refused(
    policy_registry: PolicyRegistry,
    two_versions: tuple[RegisteredPolicy, RegisteredPolicy],
    signing_keys: SigningKeys,
    tmp_path: Path,
) -> None:
    first, second = two_versions
    for name in ("symbol_agent.ptc", "symbol_agent.manifest.json", "symbol_agent.manifest.sig"):
        shutil.copyfile(_stored_folder(first) / name, _stored_folder(second) / name)
    with pytest.raises(ArtifactVerificationError, match=f"is not the registered {second.sha256}"):
        policy_registry.download_verified("symbol_agent", "2", tmp_path / "dl", signing_keys.public_pem())


def test_download_verified_when_signed_by_another_key_then_refused(
    policy_registry: PolicyRegistry,
    two_versions: tuple[RegisteredPolicy, RegisteredPolicy],
    tmp_path: Path,
) -> None:
    stranger = load_or_create_signing_keys(tmp_path / "stranger-keys", env={})
    with pytest.raises(ArtifactVerificationError, match="signature does not verify with the trusted key"):
        policy_registry.download_verified("symbol_agent", "1", tmp_path / "dl", stranger.public_pem())


def test_load_verified_when_downloaded_file_tampered_afterwards_then_refused(
    policy_registry: PolicyRegistry,
    two_versions: tuple[RegisteredPolicy, RegisteredPolicy],
    signing_keys: SigningKeys,
    tmp_path: Path,
) -> None:
    path, _ = policy_registry.download_verified("symbol_agent", "1", tmp_path / "dl", signing_keys.public_pem())
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ArtifactVerificationError, match="artifact tampered"):
        load_verified_artifact(path, signing_keys, expected_sha256=two_versions[0].sha256)


def test_training_run_when_more_params_than_one_mlflow_batch_then_all_logged(policy_registry: PolicyRegistry) -> None:
    params = {f"env.symbol_{i:03d}.cap": str(i) for i in range(150)}
    with policy_registry.start_run("mappo-train", params) as run:
        run.log_metrics({f"reward.symbol_{i:03d}": float(i) for i in range(150)}, step=4)
    stored = policy_registry.client.get_run(run.run_id).data
    assert stored.params == params
    assert len(stored.metrics) == 150 and stored.metrics["reward.symbol_149"] == 149.0
