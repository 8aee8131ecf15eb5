"""model.py driven the way Triton drives it, with the C++ backend classes stubbed (see conftest)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from serving_triton_stubs import StubInferenceRequest, StubTensor, triton_args

from serving.testing import SignedPolicy
from serving.triton_runtime.policy_runtime import observation_checksum


@pytest.fixture
def version_dir(export: Callable[..., Path], signed_policy: SignedPolicy) -> Path:
    return export(signed_policy, version=1)


def _initialized(load_model_module: Callable[[Path], ModuleType], version_dir: Path, **overrides: str) -> object:
    model_module = load_model_module(version_dir)
    model = model_module.TritonPythonModel()
    model.initialize(triton_args(version_dir, **overrides))
    return model


def _reference(policy: SignedPolicy, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        probabilities, actions = policy.module(torch.from_numpy(batch))
    return probabilities.numpy(), actions.numpy()


def test_execute_when_requests_batched_then_one_matching_response_per_request(
    load_model_module: Callable[[Path], ModuleType],
    version_dir: Path,
    signed_policy: SignedPolicy,
    observations: np.ndarray,
) -> None:
    model = _initialized(load_model_module, version_dir)
    first, second = observations[:60], observations[60:]
    responses = model.execute(  # type: ignore[attr-defined]
        [
            StubInferenceRequest(StubTensor("observations", first)),
            StubInferenceRequest(StubTensor("observations", second)),
        ]
    )
    assert len(responses) == 2
    for response, batch in zip(responses, (first, second), strict=True):
        assert not response.has_error()
        tensors = {t.name(): t.as_numpy() for t in response.output_tensors()}
        expected_probabilities, expected_actions = _reference(signed_policy, batch)
        np.testing.assert_array_equal(tensors["probabilities"], expected_probabilities)
        np.testing.assert_array_equal(tensors["action"], expected_actions)
        assert tensors["action"].dtype == np.int64 and tensors["action"].shape == (batch.shape[0],)


def test_execute_when_one_request_has_nan_then_only_that_request_gets_error(
    load_model_module: Callable[[Path], ModuleType], version_dir: Path, observations: np.ndarray
) -> None:
    model = _initialized(load_model_module, version_dir)
    bad = observations[:10].copy()
    bad[7, 3] = np.nan
    responses = model.execute(  # type: ignore[attr-defined]
        [
            StubInferenceRequest(StubTensor("observations", observations[10:20])),
            StubInferenceRequest(StubTensor("observations", bad)),
            StubInferenceRequest(StubTensor("wrong_name", observations[:5])),
        ]
    )
    assert [r.has_error() for r in responses] == [False, True, True]
    assert responses[1].error().message() == "observations contain NaN or inf in 1 row(s): 7"
    assert responses[2].error().message() == "request has no input tensor 'observations'"
    assert responses[0].output_tensors()[0].as_numpy().shape == (10, 5)


def test_execute_when_batch_served_then_checksum_logged_at_debug(
    load_model_module: Callable[[Path], ModuleType],
    version_dir: Path,
    observations: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = _initialized(load_model_module, version_dir)
    with caplog.at_level(logging.DEBUG, logger="model"):
        model.execute([StubInferenceRequest(StubTensor("observations", observations))])  # type: ignore[attr-defined]
    checksums = [r for r in caplog.records if r.levelno == logging.DEBUG and "observation checksum" in r.getMessage()]
    assert len(checksums) == 1
    assert checksums[0].getMessage().endswith(observation_checksum(observations))


def test_initialize_when_model_ptc_tampered_then_load_fails_naming_verification(
    load_model_module: Callable[[Path], ModuleType], version_dir: Path
) -> None:
    with (version_dir / "model.ptc").open("r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    model_module = load_model_module(version_dir)
    with pytest.raises(model_module.PolicyLoadError, match="artifact verification failed: .*artifact tampered"):
        model_module.TritonPythonModel().initialize(triton_args(version_dir))


def test_initialize_when_config_dims_disagree_with_signature_then_load_fails(
    load_model_module: Callable[[Path], ModuleType], version_dir: Path
) -> None:
    config = version_dir.parent / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: 16", "dims: 12"))
    model_module = load_model_module(version_dir)
    with pytest.raises(
        model_module.PolicyLoadError, match="declares 12 observation features, the signed policy expects 16"
    ):
        model_module.TritonPythonModel().initialize(triton_args(version_dir))


def test_initialize_when_gpu_instance_without_cuda_then_load_fails_clearly(
    load_model_module: Callable[[Path], ModuleType], version_dir: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA; the test covers CPU-only hosts")
    model_module = load_model_module(version_dir)
    with pytest.raises(model_module.PolicyLoadError, match="KIND_GPU but torch in the Triton stub sees no CUDA"):
        model_module.TritonPythonModel().initialize(triton_args(version_dir, model_instance_kind="GPU"))
