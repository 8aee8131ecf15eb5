"""The real tritonserver (nvidia-pytriton wheel) serving exported, signed TorchScript policies.

One server per module: each start costs seconds and each loaded version a stub process that imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from contracts.config import RiskOverlaysConfig, TritonConfig
from contracts.decisions import MasterDirective
from contracts.features import MASTER_FEATURES, SYMBOL_FEATURES
from contracts.policy import DIRECTIVE_MODES
from serving.client import PolicyClient
from serving.directive_bus import InProcessDirectiveBus
from serving.errors import InferenceError, ModelLoadError
from serving.master_service import MasterAgentService
from serving.model_repository import export_policy
from serving.testing import SignedPolicy, make_signed_policy
from serving.triton_process import TritonServer, pick_free_ports

pytestmark = pytest.mark.integration

D = len(SYMBOL_FEATURES)
UNIVERSE = 100


@dataclass(frozen=True)
class Deployment:
    server: TritonServer
    v1: SignedPolicy
    v2: SignedPolicy
    master: SignedPolicy


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("triton")
    key = Ed25519PrivateKey.generate()
    v1 = make_signed_policy(root / "v1", key, features=D, actions=5, version="1", seed=1)
    v2 = make_signed_policy(root / "v2", key, features=D, actions=5, version="2", seed=2, feature_spec_hash="b" * 64)
    master = make_signed_policy(
        root / "master", key, agent="master_agent", features=len(MASTER_FEATURES), actions=3, seed=3
    )
    tampered = make_signed_policy(root / "tampered", key, features=D, actions=5, seed=4)
    repository = root / "repository"
    triton = TritonConfig(max_batch_size=256)
    export_policy(repository, "symbol_agent", 1, v1.artifact, v1.public_key_path, triton)
    export_policy(repository, "symbol_agent", 2, v2.artifact, v2.public_key_path, triton)
    export_policy(repository, "master_agent", 1, master.artifact, master.public_key_path, triton)
    tampered_dir = export_policy(repository, "tampered_agent", 1, tampered.artifact, tampered.public_key_path, triton)
    _flip_byte(tampered_dir / "model.ptc", offset=200)
    http, grpc, metrics = pick_free_ports(3)
    with TritonServer(
        repository, http_port=http, grpc_port=grpc, metrics_port=metrics, workdir=root / "work"
    ) as server:
        server.load_model("symbol_agent")
        yield Deployment(server=server, v1=v1, v2=v2, master=master)


def _flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        original = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([original ^ 0xFF]))


def _universe(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(UNIVERSE, D)).astype(np.float32)


def _in_process(policy: SignedPolicy, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        probabilities, actions = policy.module(torch.from_numpy(batch))
    return probabilities.numpy(), actions.numpy()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_when_universe_of_100_in_one_request_then_equals_in_process_torchscript(
    deployment: Deployment, protocol: str
) -> None:
    server = deployment.server
    url = server.grpc_url if protocol == "grpc" else server.http_url
    batch = _universe(seed=21)
    with PolicyClient(url, "symbol_agent", protocol=protocol, model_version="1") as client:  # type: ignore[arg-type]
        output = client.infer(batch)
    expected_probabilities, expected_actions = _in_process(deployment.v1, batch)
    assert output.probabilities.shape == (UNIVERSE, 5) and output.actions.shape == (UNIVERSE,)
    assert output.actions.dtype == np.int64
    np.testing.assert_allclose(output.probabilities, expected_probabilities, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(output.actions, expected_actions)


def test_infer_when_two_versions_loaded_then_each_addressable_and_unpinned_gets_highest(
    deployment: Deployment,
) -> None:
    server = deployment.server
    assert server.is_model_ready("symbol_agent", 1) and server.is_model_ready("symbol_agent", 2)
    batch = _universe(seed=22)
    outputs = {}
    for version in ("1", "2", None):
        with PolicyClient(server.grpc_url, "symbol_agent", model_version=version) as client:
            outputs[version] = client.infer(batch).probabilities
    np.testing.assert_allclose(outputs["1"], _in_process(deployment.v1, batch)[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outputs["2"], _in_process(deployment.v2, batch)[0], rtol=1e-6, atol=1e-7)
    assert not np.allclose(outputs["1"], outputs["2"])
    np.testing.assert_array_equal(outputs[None], outputs["2"])


def test_load_model_when_model_ptc_tampered_then_fails_naming_verification(deployment: Deployment) -> None:
    with pytest.raises(
        ModelLoadError,
        match=r"(?s)'tampered_agent' failed to load: .*artifact verification failed: "
        r".*sha256 .* artifact tampered",
    ):
        deployment.server.load_model("tampered_agent")
    assert not deployment.server.is_model_ready("tampered_agent")


def test_infer_when_rows_not_finite_then_error_names_rows_and_server_keeps_serving(deployment: Deployment) -> None:
    batch = _universe(seed=23)
    batch[[5, 77], 3] = np.nan
    with PolicyClient(deployment.server.grpc_url, "symbol_agent", model_version="1") as client:
        with pytest.raises(InferenceError, match=r"NaN or inf in 2 row\(s\): 5, 77"):
            client.infer(batch)
        assert client.infer(_universe(seed=24)).actions.shape == (UNIVERSE,)


def test_infer_when_feature_count_wrong_then_triton_rejects_with_expected_shape(deployment: Deployment) -> None:
    with PolicyClient(deployment.server.http_url, "symbol_agent", protocol="http", model_version="1") as client:
        with pytest.raises(InferenceError, match=rf"Expected \[-1,{D}\], got \[3,{D - 1}\]"):
            client.infer(np.zeros((3, D - 1), np.float32))


def test_metrics_when_batches_served_then_success_counted_per_version(deployment: Deployment) -> None:
    with PolicyClient(deployment.server.grpc_url, "symbol_agent", model_version="2") as client:
        client.infer(_universe(seed=25))
    text = httpx.get(deployment.server.metrics_url, timeout=5).text
    successes = {
        (sample.labels["model"], sample.labels["version"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if family.name == "nv_inference_request_success"  # the parser renames counter samples to *_total
    }
    assert successes[("symbol_agent", "2")] >= 1


def test_master_service_when_served_by_triton_then_directive_follows_policy_and_unload_works(
    deployment: Deployment,
) -> None:
    server = deployment.server
    server.load_model("master_agent")
    bus = InProcessDirectiveBus()
    received: list[MasterDirective] = []
    bus.subscribe(received.append)
    observation = np.random.default_rng(26).normal(size=(1, len(MASTER_FEATURES))).astype(np.float32)
    timestep = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
    with PolicyClient(server.grpc_url, "master_agent", model_version="1") as client:
        service = MasterAgentService(
            client.infer, bus, RiskOverlaysConfig(), every_bars=5, ttl_seconds=864000.0, policy_version="m1"
        )
        directive = service.step(timestep, 10, observation, regime_shift=False)
    expected_mode = DIRECTIVE_MODES[int(_in_process(deployment.master, observation)[1][0])]
    assert directive is not None and directive.mode == expected_mode
    assert received == [directive]
    server.unload_model("master_agent")
    assert not server.is_model_ready("master_agent")
    assert server.is_model_ready("symbol_agent", 1)
