from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.verification import sign_artifact
from serving.testing import SignedPolicy, make_signed_policy, write_public_key
from serving.triton_runtime import policy_runtime
from serving.triton_runtime.errors import PolicyInputError, PolicyLoadError, PolicyOutputError


def _version_dir(policy: SignedPolicy, target: Path) -> Path:
    """The three signed files under the names a model version folder uses."""
    target.mkdir(parents=True)
    for source, name in (
        (policy.artifact, "model.ptc"),
        (policy.artifact.with_suffix(".manifest.json"), "model.manifest.json"),
        (policy.artifact.with_suffix(".manifest.sig"), "model.manifest.sig"),
    ):
        (target / name).write_bytes(source.read_bytes())
    return target


def test_load_verified_policy_when_artifact_intact_then_module_matches_source(
    signed_policy: SignedPolicy, tmp_path: Path, observations: np.ndarray
) -> None:
    version_dir = _version_dir(signed_policy, tmp_path / "1")
    module, manifest = policy_runtime.load_verified_policy(
        version_dir,
        signed_policy.public_key_path,
        signed_policy.manifest["feature_spec_hash"],
        expected_sha256=signed_policy.manifest["sha256"],
    )
    probabilities, actions = policy_runtime.run_policy(module, observations)
    with torch.inference_mode():
        expected_probabilities, expected_actions = signed_policy.module(torch.from_numpy(observations))
    assert manifest["sha256"] == signed_policy.manifest["sha256"]
    np.testing.assert_array_equal(probabilities, expected_probabilities.numpy())
    np.testing.assert_array_equal(actions, expected_actions.numpy())


def test_load_verified_policy_when_artifact_tampered_then_load_error_names_sha256(
    signed_policy: SignedPolicy, tmp_path: Path
) -> None:
    version_dir = _version_dir(signed_policy, tmp_path / "1")
    with (version_dir / "model.ptc").open("ab") as fh:
        fh.write(b"\x00")
    with pytest.raises(PolicyLoadError, match=r"artifact verification failed: .*sha256 .* artifact tampered"):
        policy_runtime.load_verified_policy(version_dir, signed_policy.public_key_path, None)


def test_load_verified_policy_when_signed_by_untrusted_key_then_load_error(
    signed_policy: SignedPolicy, tmp_path: Path
) -> None:
    version_dir = _version_dir(signed_policy, tmp_path / "1")
    other_key = write_public_key(Ed25519PrivateKey.generate(), tmp_path / "other.pub.pem")
    with pytest.raises(PolicyLoadError, match="signature does not verify with the trusted key"):
        policy_runtime.load_verified_policy(version_dir, other_key, None)


def test_load_verified_policy_when_feature_spec_hash_differs_then_load_error(
    signed_policy: SignedPolicy, tmp_path: Path
) -> None:
    version_dir = _version_dir(signed_policy, tmp_path / "1")
    with pytest.raises(PolicyLoadError, match="feature spec hash .* != expected " + "f" * 64):
        policy_runtime.load_verified_policy(version_dir, signed_policy.public_key_path, "f" * 64)


def test_load_verified_policy_when_public_key_missing_then_load_error_names_path(
    signed_policy: SignedPolicy, tmp_path: Path
) -> None:
    version_dir = _version_dir(signed_policy, tmp_path / "1")
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(PolicyLoadError, match=f"trusted public key {missing} unreadable"):
        policy_runtime.load_verified_policy(version_dir, missing, None)


def test_load_verified_policy_when_signature_lacks_action_tensor_then_load_error(
    signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    policy = make_signed_policy(tmp_path / "a", signing_key)
    manifest = {k: v for k, v in policy.manifest.items() if k not in ("sha256", "size", "artifact")}
    manifest["signature"] = dict(manifest["signature"], outputs=manifest["signature"]["outputs"][:1])
    sign_artifact(policy.artifact, manifest, signing_key)
    version_dir = _version_dir(policy, tmp_path / "1")
    with pytest.raises(PolicyLoadError, match="manifest signature lacks tensor 'action'"):
        policy_runtime.load_verified_policy(version_dir, policy.public_key_path, None)


@pytest.mark.parametrize(
    ("batch", "reason"),
    [
        (np.zeros((4,), np.float32), r"must be 2-D \[batch, features\], got shape \[4\]"),
        (np.zeros((0, 16), np.float32), "batch is empty"),
        (np.zeros((4, 16), np.float64), "must be float32, got float64"),
        (np.zeros((4, 15), np.float32), "15 features per row, the policy expects 16"),
        ([[0.0] * 16], "must be a numpy array, got list"),
    ],
)
def test_run_policy_when_batch_malformed_then_input_error_names_problem(
    signed_policy: SignedPolicy, batch: object, reason: str
) -> None:
    with pytest.raises(PolicyInputError, match=reason):
        policy_runtime.run_policy(signed_policy.module, batch, expected_features=16)  # type: ignore[arg-type]


def test_run_policy_when_rows_not_finite_then_error_names_rows(
    signed_policy: SignedPolicy, observations: np.ndarray
) -> None:
    observations[[3, 42], 0] = [np.nan, np.inf]
    with pytest.raises(PolicyInputError, match=r"NaN or inf in 2 row\(s\): 3, 42$"):
        policy_runtime.run_policy(signed_policy.module, observations)


def test_run_policy_when_module_breaks_contract_then_output_error(tmp_path: Path) -> None:
    class OnlyProbabilities(torch.nn.Module):
        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return torch.softmax(observations, dim=-1)

    module = torch.jit.script(OnlyProbabilities())
    with pytest.raises(PolicyOutputError, match=r"must return \(probabilities, action\), got Tensor"):
        policy_runtime.run_policy(module, np.zeros((2, 3), np.float32))


def test_run_policy_when_action_count_differs_from_signature_then_output_error(signed_policy: SignedPolicy) -> None:
    with pytest.raises(PolicyOutputError, match="probabilities have 5 actions, signature says 3"):
        policy_runtime.run_policy(signed_policy.module, np.zeros((2, 16), np.float32), expected_actions=3)


def test_observation_checksum_when_same_values_in_other_layout_then_same_hex() -> None:
    batch = np.arange(32, dtype=np.float32).reshape(4, 8)
    fortran = np.asfortranarray(batch)
    assert policy_runtime.observation_checksum(batch) == policy_runtime.observation_checksum(fortran)
    assert policy_runtime.observation_checksum(batch) != policy_runtime.observation_checksum(batch + 1)


def _config(**parameters: str) -> dict[str, object]:
    return {"name": "symbol_agent", "parameters": {k: {"string_value": v} for k, v in parameters.items()}}


def test_parse_model_parameters_when_version_pinned_then_settings_for_that_version() -> None:
    config = _config(
        public_key_path="/keys/trusted.pem",
        feature_spec_hashes=json.dumps({"1": "a" * 64, "2": "b" * 64}),
        artifact_sha256s=json.dumps({"1": "c" * 64, "2": "d" * 64}),
    )
    settings = policy_runtime.parse_model_parameters(config, "2")
    assert settings == policy_runtime.RuntimeSettings(Path("/keys/trusted.pem"), "b" * 64, "d" * 64)


def test_parse_model_parameters_when_version_not_pinned_then_load_error() -> None:
    config = _config(
        public_key_path="/keys/trusted.pem",
        feature_spec_hashes=json.dumps({"1": "a" * 64}),
        artifact_sha256s=json.dumps({"1": "c" * 64}),
    )
    with pytest.raises(PolicyLoadError, match="'feature_spec_hashes' has no entry for version 3"):
        policy_runtime.parse_model_parameters(config, "3")


def test_parse_model_parameters_when_key_path_missing_then_load_error_names_parameter() -> None:
    with pytest.raises(PolicyLoadError, match="config.pbtxt lacks parameter 'public_key_path'"):
        policy_runtime.parse_model_parameters(_config(), "1")
