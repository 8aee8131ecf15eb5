"""One Triton model holding policies of HybridRLObservation v1 and v2 (different observation widths)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from contracts.config import TritonConfig
from registry.verification import sign_artifact
from serving.errors import ExportError
from serving.model_repository import export_policy, exported_versions
from serving.testing import TinyPolicy, policy_signature, write_public_key

WIDTH = {1: 15, 2: 17}


def _signed(directory: Path, key: Ed25519PrivateKey, *, observation_version: int, features: int, seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    artifact = directory / "symbol_agent.ptc"
    torch.jit.script(TinyPolicy(features, 5).eval()).save(str(artifact))
    spec_hash = f"{observation_version}{seed}".ljust(64, "a")
    sign_artifact(artifact, {"agent": "symbol_agent", "feature_spec_hash": spec_hash,
                             "feature_spec": {"version": observation_version},
                             "signature": policy_signature("symbol_agent", features, 5, spec_hash).model_dump(mode="json")},
                  key)
    return artifact


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _input_dims(repository: Path) -> list[int]:
    config = text_format.Parse((repository / "symbol_agent" / "config.pbtxt").read_text().split("\n", 1)[1],
                               mc.ModelConfig())
    return list(config.input[0].dims)


def test_export_when_v1_and_v2_policies_share_a_model_then_config_width_is_variable(tmp_path: Path,
                                                                                   key: Ed25519PrivateKey) -> None:
    public = write_public_key(key, tmp_path / "trusted.pub.pem")
    repository = tmp_path / "repository"
    triton = TritonConfig(max_batch_size=64)
    export_policy(repository, "symbol_agent", 1, _signed(tmp_path / "a", key, observation_version=1,
                                                         features=WIDTH[1], seed=1), public, triton)
    assert _input_dims(repository) == [WIDTH[1]]
    export_policy(repository, "symbol_agent", 2, _signed(tmp_path / "b", key, observation_version=2,
                                                         features=WIDTH[2], seed=2), public, triton)
    assert exported_versions(repository, "symbol_agent") == [1, 2]
    assert _input_dims(repository) == [-1]


def test_export_when_same_observation_version_differs_in_width_then_refused(tmp_path: Path,
                                                                           key: Ed25519PrivateKey) -> None:
    public = write_public_key(key, tmp_path / "trusted.pub.pem")
    repository = tmp_path / "repository"
    triton = TritonConfig(max_batch_size=64)
    export_policy(repository, "symbol_agent", 1, _signed(tmp_path / "a", key, observation_version=2,
                                                         features=WIDTH[2], seed=1), public, triton)
    with pytest.raises(ExportError, match="differ from version 2"):
        export_policy(repository, "symbol_agent", 2, _signed(tmp_path / "b", key, observation_version=2,
                                                             features=WIDTH[2] + 1, seed=2), public, triton)
    assert exported_versions(repository, "symbol_agent") == [1]
