from __future__ import annotations

import numpy as np
import pytest

from serving.client import PolicyClient
from serving.errors import InferenceError
from serving.triton_process import pick_free_ports


@pytest.mark.parametrize(
    ("batch", "reason"),
    [
        (np.zeros((16,), np.float32), r"non-empty 2-D \[symbols, features\] array, got \[16\]"),
        (np.zeros((0, 16), np.float32), r"got \[0, 16\]"),
        (np.zeros((4, 16), np.int64), "must be floating point, got int64"),
        ([[0.0, 1.0]], "must be a numpy array, got list"),
    ],
)
def test_infer_when_batch_malformed_then_inference_error_before_any_request(batch: object, reason: str) -> None:
    (port,) = pick_free_ports(1)
    with PolicyClient(f"127.0.0.1:{port}", "symbol_agent") as client:
        with pytest.raises(InferenceError, match=reason):
            client.infer(batch)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_when_server_unreachable_then_inference_error_names_target(protocol: str) -> None:
    (port,) = pick_free_ports(1)
    client = PolicyClient(f"127.0.0.1:{port}", "symbol_agent", protocol=protocol, model_version="2", timeout_s=2)  # type: ignore[arg-type]
    try:
        with pytest.raises(InferenceError, match=f"model 'symbol_agent' version 2 at {protocol}://127.0.0.1:{port}"):
            client.infer(np.zeros((3, 16), np.float32))
    finally:
        client.close()


def test_client_when_url_is_https_then_refused_clearly() -> None:
    with pytest.raises(InferenceError, match="TLS is not configured"):
        PolicyClient("https://triton.example:8001", "symbol_agent")
