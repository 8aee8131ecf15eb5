"""Writing and verifying signed artifacts in the candidate and production layout, on real files."""

import io
import json
from datetime import date
from pathlib import Path

import pytest
import torch
from registry_test_values import DATASET_ID, FEATURE_SPEC_HASH, GIT_COMMIT

from contracts.policy import PolicySignature
from registry import verification
from registry.artifacts import (
    candidate_dir_for,
    copy_signed_artifact,
    load_verified_artifact,
    production_dir_for,
    production_dirs_of,
    write_signed_artifact,
)
from registry.errors import (
    ArtifactVerificationError,
    ArtifactWriteError,
    ManifestError,
    RegistryError,
)
from registry.keys import SigningKeys, load_or_create_signing_keys
from registry.manifest import REQUIRED_MANIFEST_KEYS

DAY = date(2026, 3, 2)
RUN_ID = "0123456789abcdef0123456789abcdef"


def _manifest(signature: PolicySignature, /, **changes: object) -> dict[str, object]:
    return {"signature": signature, "dataset_id": DATASET_ID, "git_commit": GIT_COMMIT} | changes


def _script_bytes(module: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def test_write_when_script_module_given_then_candidate_layout_and_complete_signed_manifest(
    tmp_path: Path,
    signing_keys: SigningKeys,
    symbol_signature: PolicySignature,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
) -> None:
    path = write_signed_artifact(
        tiny_modules[0],
        directory=candidate_dir_for(tmp_path, RUN_ID),
        agent="symbol_agent",
        manifest=_manifest(symbol_signature),
        keys=signing_keys,
    )

    assert path == tmp_path / "models" / "rl" / "candidates" / RUN_ID / "symbol_agent.ptc"
    assert not (tmp_path / "models" / "rl" / "production").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "symbol_agent.manifest.json",
        "symbol_agent.manifest.sig",
        "symbol_agent.ptc",
    ]  # the staging folder is gone
    verified_path, manifest = load_verified_artifact(
        path, signing_keys.public_pem(), expected_feature_spec_hash=FEATURE_SPEC_HASH, expected_agent="symbol_agent"
    )
    assert verified_path == path
    assert set(REQUIRED_MANIFEST_KEYS) <= set(manifest)
    assert manifest["agent"] == "symbol_agent"
    assert manifest["feature_spec_hash"] == FEATURE_SPEC_HASH
    assert PolicySignature.model_validate(manifest["signature"]) == symbol_signature
    assert (manifest["dataset_id"], manifest["git_commit"]) == (DATASET_ID, GIT_COMMIT)
    assert manifest["created_at"].endswith("+00:00")
    observation = torch.ones(1, 4)
    assert torch.equal(torch.jit.load(str(path))(observation), tiny_modules[0](observation))


def test_write_when_bytes_or_file_given_then_stored_byte_for_byte(
    tmp_path: Path,
    signing_keys: SigningKeys,
    symbol_signature: PolicySignature,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
) -> None:
    payload = _script_bytes(tiny_modules[1])
    source = tmp_path / "exported.pt"
    source.write_bytes(payload)

    from_bytes = write_signed_artifact(
        payload,
        directory=tmp_path / "a",
        agent="symbol_agent",
        manifest=_manifest(symbol_signature),
        keys=signing_keys,
    )
    from_file = write_signed_artifact(
        source,
        directory=tmp_path / "b",
        agent="symbol_agent",
        manifest=_manifest(symbol_signature),
        keys=signing_keys,
    )

    assert from_bytes.read_bytes() == payload
    assert from_file.read_bytes() == payload


def test_write_when_other_artifact_already_in_the_folder_then_refused_and_original_untouched(
    tmp_path: Path,
    signing_keys: SigningKeys,
    symbol_signature: PolicySignature,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
) -> None:
    kwargs = {
        "directory": candidate_dir_for(tmp_path, RUN_ID),
        "agent": "symbol_agent",
        "manifest": _manifest(symbol_signature),
        "keys": signing_keys,
    }
    path = write_signed_artifact(tiny_modules[0], **kwargs)  # type: ignore[arg-type]
    before = [f.read_bytes() for f in (path, verification.manifest_path_for(path), verification.signature_path_for(path))]

    with pytest.raises(ArtifactWriteError, match="a different artifact is already there; refusing to overwrite"):
        write_signed_artifact(tiny_modules[1], **kwargs)  # type: ignore[arg-type]

    after = [f.read_bytes() for f in (path, verification.manifest_path_for(path), verification.signature_path_for(path))]
    assert after == before
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "symbol_agent.manifest.json",
        "symbol_agent.manifest.sig",
        "symbol_agent.ptc",
    ]


def test_write_when_same_bytes_again_then_re_signed_and_still_verifies(
    tmp_path: Path,
    signing_keys: SigningKeys,
    symbol_signature: PolicySignature,
    tiny_modules: tuple[torch.jit.ScriptModule, torch.jit.ScriptModule],
) -> None:
    kwargs = {
        "directory": candidate_dir_for(tmp_path, RUN_ID),
        "agent": "symbol_agent",
        "manifest": _manifest(symbol_signature),
        "keys": signing_keys,
    }
    write_signed_artifact(tiny_modules[0], **kwargs)  # type: ignore[arg-type]
    path = write_signed_artifact(tiny_modules[0], **kwargs)  # type: ignore[arg-type]
    _, manifest = load_verified_artifact(path, signing_keys)
    assert manifest["sha256"] == verification.sha256_file(path)
    assert path.read_bytes() == _script_bytes(tiny_modules[0])


@pytest.mark.parametrize("run_id", ["", "..", "../escape", "a/b", ".hidden"])
def test_candidate_dir_when_run_id_is_no_plain_name_then_refused(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(ArtifactWriteError, match="cannot name a folder"):
        candidate_dir_for(tmp_path, run_id)


def test_production_dir_when_nth_promotion_of_a_day_then_date_and_suffix(tmp_path: Path) -> None:
    base = tmp_path / "models" / "rl" / "production"
    assert production_dir_for(tmp_path, DAY) == base / "2026-03-02"
    assert production_dir_for(tmp_path, DAY, 3) == base / "2026-03-02.3"
    assert production_dirs_of(tmp_path, DAY) == []
    for n in (1, 2):
        production_dir_for(tmp_path, DAY, n).mkdir(parents=True)
    assert production_dirs_of(tmp_path, DAY) == [base / "2026-03-02", base / "2026-03-02.2"]
    with pytest.raises(ValueError, match=">= 1"):
        production_dir_for(tmp_path, DAY, 0)


def test_write_when_git_commit_omitted_then_filled_from_working_tree(
    tmp_path: Path, signing_keys: SigningKeys, symbol_signature: PolicySignature, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARLOPS_GIT_COMMIT", "feedface")
    path = write_signed_artifact(
        b"not-a-real-module",
        directory=candidate_dir_for(tmp_path, RUN_ID),
        agent="symbol_agent",
        manifest={"signature": symbol_signature, "dataset_id": DATASET_ID},
        keys=signing_keys,
    )
    assert json.loads(verification.manifest_path_for(path).read_bytes())["git_commit"] == "feedface"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset_id": ""}, "dataset_id must be a non-empty string"),
        ({"sha256": "0" * 64}, r"manifest keys \['sha256'\] are computed from the artifact file"),
        ({"feature_spec_hash": "e" * 64}, "manifest feature_spec_hash e+ != signature feature_spec_hash f+"),
        ({"agent": "master_agent"}, "manifest agent 'master_agent' != artifact agent 'symbol_agent'"),
        ({"signature": None}, "policy signature is missing"),
        ({"signature": {"agent": "symbol_agent"}}, "invalid policy signature"),
        ({"extra": object()}, "manifest value of 'extra' is not JSON-serialisable"),
    ],
)
def test_write_when_manifest_invalid_then_manifest_error_names_the_problem(
    tmp_path: Path,
    signing_keys: SigningKeys,
    symbol_signature: PolicySignature,
    change: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(ManifestError, match=message):
        write_signed_artifact(
            b"module",
            directory=candidate_dir_for(tmp_path, RUN_ID),
            agent="symbol_agent",
            manifest=_manifest(symbol_signature, **change),
            keys=signing_keys,
        )
    assert not (tmp_path / "models").exists()


def test_write_when_signature_is_for_other_agent_then_refused(
    tmp_path: Path, signing_keys: SigningKeys, symbol_signature: PolicySignature
) -> None:
    with pytest.raises(ManifestError, match="signature is for agent 'symbol_agent', artifact is for 'master_agent'"):
        write_signed_artifact(
            b"module",
            directory=candidate_dir_for(tmp_path, RUN_ID),
            agent="master_agent",
            manifest=_manifest(symbol_signature),
            keys=signing_keys,
        )


def test_write_when_source_file_missing_then_write_error_names_it(
    tmp_path: Path, signing_keys: SigningKeys, symbol_signature: PolicySignature
) -> None:
    with pytest.raises(ArtifactWriteError, match="missing.pt: TorchScript file does not exist"):
        write_signed_artifact(
            tmp_path / "missing.pt",
            directory=candidate_dir_for(tmp_path, RUN_ID),
            agent="symbol_agent",
            manifest=_manifest(symbol_signature),
            keys=signing_keys,
        )


@pytest.fixture
def written(tmp_path: Path, signing_keys: SigningKeys, symbol_signature: PolicySignature) -> Path:
    return write_signed_artifact(
        b"torchscript-bytes",
        directory=candidate_dir_for(tmp_path, RUN_ID),
        agent="symbol_agent",
        manifest=_manifest(symbol_signature),
        keys=signing_keys,
    )


def test_load_verified_when_artifact_tampered_then_error_is_catchable_as_both_error_types(
    written: Path, signing_keys: SigningKeys
) -> None:
    written.write_bytes(b"torchscript-bytez")
    with pytest.raises(ArtifactVerificationError, match="artifact tampered") as caught:
        load_verified_artifact(written, signing_keys)
    assert isinstance(caught.value, RegistryError)
    assert isinstance(caught.value, verification.ArtifactVerificationError)


def test_load_verified_when_manifest_edited_then_signature_check_refuses(
    written: Path, signing_keys: SigningKeys
) -> None:
    manifest_path = verification.manifest_path_for(written)
    manifest_path.write_bytes(manifest_path.read_bytes().replace(DATASET_ID.encode(), b"forged-dataset"))
    with pytest.raises(ArtifactVerificationError, match="signature does not verify"):
        load_verified_artifact(written, signing_keys)


def test_load_verified_when_signature_missing_then_refused_as_unsigned(
    written: Path, signing_keys: SigningKeys
) -> None:
    verification.signature_path_for(written).unlink()
    with pytest.raises(ArtifactVerificationError, match="signature file missing; refusing an unsigned artifact"):
        load_verified_artifact(written, signing_keys)


def test_load_verified_when_files_renamed_then_refused(written: Path, signing_keys: SigningKeys) -> None:
    renamed = written.with_name("master_agent.ptc")
    for source, suffix in (
        (written, ".ptc"),
        (verification.manifest_path_for(written), ".manifest.json"),
        (verification.signature_path_for(written), ".manifest.sig"),
    ):
        source.rename(written.parent / f"master_agent{suffix}")
    with pytest.raises(ArtifactVerificationError, match="signed manifest is for file 'symbol_agent.ptc'"):
        load_verified_artifact(renamed, signing_keys)


def test_load_verified_when_expectations_differ_then_refused(written: Path, signing_keys: SigningKeys) -> None:
    with pytest.raises(ArtifactVerificationError, match="feature spec hash"):
        load_verified_artifact(written, signing_keys, expected_feature_spec_hash="e" * 64)
    with pytest.raises(ArtifactVerificationError, match="is not the registered"):
        load_verified_artifact(written, signing_keys, expected_sha256="0" * 64)
    with pytest.raises(ArtifactVerificationError, match="signed for agent 'symbol_agent', expected 'master_agent'"):
        load_verified_artifact(written, signing_keys, expected_agent="master_agent")


def test_load_verified_when_other_key_trusted_then_refused(written: Path, tmp_path: Path) -> None:
    stranger = load_or_create_signing_keys(tmp_path / "stranger", env={})
    with pytest.raises(ArtifactVerificationError, match="signature does not verify with the trusted key"):
        load_verified_artifact(written, stranger.public_pem())


def test_copy_signed_artifact_when_complete_then_copy_verifies_and_when_incomplete_then_refused(
    written: Path, signing_keys: SigningKeys, tmp_path: Path
) -> None:
    copied = copy_signed_artifact(written, tmp_path / "model_repo" / "1")
    assert load_verified_artifact(copied, signing_keys)[1]["sha256"] == verification.sha256_file(written)
    verification.signature_path_for(written).unlink()
    with pytest.raises(ArtifactVerificationError, match="missing; refusing to copy an incomplete signed artifact"):
        copy_signed_artifact(written, tmp_path / "model_repo" / "2")
