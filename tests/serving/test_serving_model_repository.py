from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from contracts.config import TritonConfig
from serving.errors import ArtifactRejectedError, ExportError
from serving.model_repository import export_policy, exported_versions, remove_version
from serving.testing import SignedPolicy, make_signed_policy, write_public_key


def _parsed_config(version_dir: Path) -> mc.ModelConfig:
    # text_format.Parse rejects unknown fields and wrong types, as Triton's own parser does.
    return text_format.Parse((version_dir.parent / "config.pbtxt").read_text(), mc.ModelConfig())


def test_export_policy_when_artifact_verified_then_version_folder_is_self_contained(
    export: Callable[..., Path], signed_policy: SignedPolicy
) -> None:
    version_dir = export(signed_policy, version=3)
    assert version_dir.name == "3"
    assert sorted(p.name for p in version_dir.iterdir()) == [
        "errors.py",
        "model.manifest.json",
        "model.manifest.sig",
        "model.ptc",
        "model.py",
        "policy_runtime.py",
        "verification.py",
    ]
    assert (version_dir / "model.ptc").read_bytes() == signed_policy.artifact.read_bytes()
    assert not [p for p in version_dir.parent.iterdir() if p.name.startswith(".")]


def test_export_policy_when_written_then_config_matches_signature_and_triton_settings(
    export: Callable[..., Path], signed_policy: SignedPolicy
) -> None:
    version_dir = export(
        signed_policy,
        version=1,
        max_batch_size=256,
        max_queue_delay_microseconds=250,
        instance_kind="KIND_GPU",
        instance_count=2,
    )
    config = _parsed_config(version_dir)
    assert (config.name, config.backend, config.max_batch_size) == ("symbol_agent", "python", 256)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("observations", mc.TYPE_FP32, [16])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("probabilities", mc.TYPE_FP32, [5]),
        ("action", mc.TYPE_INT64, [1]),
    ]
    action = config.output[1]
    assert action.HasField("reshape") and list(action.reshape.shape) == []
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 2)]
    assert list(config.version_policy.specific.versions) == [1]
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert parameters["public_key_path"] == str(signed_policy.public_key_path.resolve())
    assert json.loads(parameters["feature_spec_hashes"]) == {"1": signed_policy.manifest["feature_spec_hash"]}
    assert json.loads(parameters["artifact_sha256s"]) == {"1": signed_policy.manifest["sha256"]}


def test_export_policy_when_second_version_exported_then_config_lists_both(
    export: Callable[..., Path], signed_policy: SignedPolicy, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    retrained = make_signed_policy(tmp_path / "retrained", signing_key, version="2", seed=8, feature_spec_hash="e" * 64)
    export(signed_policy, version=1)
    version_dir = export(retrained, version=2)
    config = _parsed_config(version_dir)
    assert list(config.version_policy.specific.versions) == [1, 2]
    hashes = json.loads(config.parameters["feature_spec_hashes"].string_value)
    assert hashes == {"1": signed_policy.manifest["feature_spec_hash"], "2": "e" * 64}
    assert exported_versions(tmp_path / "repository", "symbol_agent") == [1, 2]


def test_export_policy_when_artifact_tampered_then_refused_and_nothing_written(
    export: Callable[..., Path], signed_policy: SignedPolicy, tmp_path: Path
) -> None:
    with signed_policy.artifact.open("ab") as fh:
        fh.write(b"backdoor")
    with pytest.raises(ArtifactRejectedError, match=r"refusing to export .*sha256 .* artifact tampered"):
        export(signed_policy, version=1)
    assert not (tmp_path / "repository" / "symbol_agent").exists()


def test_export_policy_when_key_untrusted_then_refused(signed_policy: SignedPolicy, tmp_path: Path) -> None:
    stranger = write_public_key(Ed25519PrivateKey.generate(), tmp_path / "stranger.pem")
    with pytest.raises(ArtifactRejectedError, match="signature does not verify with the trusted key"):
        export_policy(tmp_path / "repo", "symbol_agent", 1, signed_policy.artifact, stranger, TritonConfig())


def test_export_policy_when_feature_spec_hash_unexpected_then_refused(
    signed_policy: SignedPolicy, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactRejectedError, match="feature spec hash .* != expected " + "0" * 64):
        export_policy(
            tmp_path / "repo",
            "symbol_agent",
            1,
            signed_policy.artifact,
            signed_policy.public_key_path,
            TritonConfig(),
            expected_feature_spec_hash="0" * 64,
        )


def test_export_policy_when_version_holds_other_artifact_then_refused(
    export: Callable[..., Path], signed_policy: SignedPolicy, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    other = make_signed_policy(tmp_path / "other", signing_key, seed=99)
    export(signed_policy, version=1)
    with pytest.raises(ExportError, match="versions are immutable"):
        export(other, version=1)


def test_export_policy_when_same_artifact_exported_again_then_idempotent(
    export: Callable[..., Path], signed_policy: SignedPolicy
) -> None:
    first = export(signed_policy, version=1)
    (first / "model.py").write_text("# stale runtime\n")
    again = export(signed_policy, version=1)
    assert again == first
    assert "class TritonPythonModel" in (first / "model.py").read_text()


def test_export_policy_when_versions_disagree_on_tensors_then_refused(
    export: Callable[..., Path], signed_policy: SignedPolicy, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    wider = make_signed_policy(tmp_path / "wider", signing_key, features=20)
    export(signed_policy, version=1)
    with pytest.raises(ExportError, match=r"version 1 tensors observations:FP32\[16\].* differ from version 2"):
        export(wider, version=2)
    assert exported_versions(tmp_path / "repository", "symbol_agent") == [1]


@pytest.mark.parametrize(
    ("model_name", "version", "reason"),
    [("bad name", 1, "not a valid Triton model name"), ("symbol_agent", 0, "integer >= 1, got 0")],
)
def test_export_policy_when_name_or_version_invalid_then_export_error(
    signed_policy: SignedPolicy, tmp_path: Path, model_name: str, version: int, reason: str
) -> None:
    with pytest.raises(ExportError, match=reason):
        export_policy(
            tmp_path / "repo",
            model_name,
            version,
            signed_policy.artifact,
            signed_policy.public_key_path,
            TritonConfig(),
        )


def test_remove_version_when_two_exported_then_config_lists_the_other_only(
    export: Callable[..., Path], signed_policy: SignedPolicy, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    canary = make_signed_policy(tmp_path / "canary", signing_key, version="2", seed=8)
    export(signed_policy, version=1)
    version_dir = export(canary, version=2)
    left = remove_version(tmp_path / "repository", "symbol_agent", 2, signed_policy.public_key_path, TritonConfig())
    assert left == [1] and not version_dir.exists()
    config = _parsed_config(version_dir)
    assert list(config.version_policy.specific.versions) == [1]
    assert list(json.loads(config.parameters["artifact_sha256s"].string_value)) == ["1"]


def test_remove_version_when_version_absent_then_export_error(signed_policy: SignedPolicy, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no exported version 4 of model symbol_agent"):
        remove_version(tmp_path / "repository", "symbol_agent", 4, signed_policy.public_key_path, TritonConfig())
