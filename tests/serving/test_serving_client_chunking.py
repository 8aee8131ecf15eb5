"""PolicyClient splits a universe larger than the model's max batch into chunks, against the real tritonserver.

One server per module, serving a tiny policy exported with max_batch_size 4: a 10-row universe needs 3 requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.config import TritonConfig
from serving.client import PolicyClient
from serving.errors import InferenceError
from serving.model_repository import export_policy
from serving.testing import SignedPolicy, make_signed_policy
from serving.triton_process import TritonServer, pick_free_ports

pytestmark = pytest.mark.integration

FEATURES = 16
MAX_BATCH = 4


@dataclass(frozen=True)
class Served:
    server: TritonServer
    policy: SignedPolicy


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("chunking")
    policy = make_signed_policy(root / "artifacts", Ed25519PrivateKey.generate(), features=FEATURES, actions=5, seed=5)
    repository = root / "repository"
    export_policy(repository, "symbol_agent", 1, policy.artifact, policy.public_key_path,
                  TritonConfig(max_batch_size=MAX_BATCH))
    http, grpc, metrics = pick_free_ports(3)
    with TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics, workdir=root / "work") as server:
        server.load_model("symbol_agent")
        yield Served(server=server, policy=policy)


def _universe(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)


def _url(served: Served, protocol: str) -> str:
    return served.server.grpc_url if protocol == "grpc" else served.server.http_url


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_when_universe_exceeds_max_batch_then_chunks_in_order_equal_in_process(served: Served,
                                                                                      protocol: str) -> None:
    batch = _universe(10, seed=1)
    with PolicyClient(_url(served, protocol), "symbol_agent", protocol=protocol, model_version="1") as client:  # type: ignore[arg-type]
        output = client.infer(batch)
        assert client.max_batch_size == MAX_BATCH  # read from Triton's model config
        assert client.requests_sent == 3  # 4 + 4 + 2 rows
    with torch.inference_mode():
        probabilities, actions = served.policy.module(torch.from_numpy(batch))
    assert output.probabilities.shape == (10, 5) and output.actions.shape == (10,)
    np.testing.assert_allclose(output.probabilities, probabilities.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(output.actions, actions.numpy())


def test_infer_when_universe_fits_max_batch_then_one_request(served: Served) -> None:
    with PolicyClient(served.server.grpc_url, "symbol_agent", model_version="1") as client:
        assert client.infer(_universe(MAX_BATCH, seed=2)).actions.shape == (MAX_BATCH,)
        assert client.requests_sent == 1


def test_infer_when_caller_states_max_batch_then_uses_it_without_asking_triton(served: Served) -> None:
    batch = _universe(7, seed=3)
    with PolicyClient(served.server.grpc_url, "symbol_agent", model_version="1", max_batch_size=2) as client:
        chunked = client.infer(batch)
        assert client.requests_sent == 4  # 2 + 2 + 2 + 1
    with PolicyClient(served.server.grpc_url, "symbol_agent", model_version="1") as client:
        whole = client.infer(batch)
    np.testing.assert_allclose(whole.probabilities, chunked.probabilities, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(whole.actions, chunked.actions)


def test_infer_when_one_request_exceeds_max_batch_then_triton_refuses_it(served: Served) -> None:
    # What the chunking exists for: a client told a larger max batch sends 10 rows in one request.
    with PolicyClient(served.server.grpc_url, "symbol_agent", model_version="1", max_batch_size=1000) as client:
        with pytest.raises(InferenceError, match=f"batch-size must be <= {MAX_BATCH}"):
            client.infer(_universe(10, seed=4))


def test_client_when_max_batch_negative_then_refused() -> None:
    with pytest.raises(InferenceError, match="max_batch_size must be >= 0"):
        PolicyClient("127.0.0.1:1", "symbol_agent", max_batch_size=-1)
