"""Fixtures for serving unit tests: signed tiny policies and a stand-in for Triton's C++ python-backend classes."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from serving_triton_stubs import StubInferenceRequest, StubInferenceResponse, StubTensor, StubTritonError

from contracts.config import TritonConfig
from serving.model_repository import export_policy
from serving.testing import SignedPolicy, make_signed_policy
from serving.triton_process import pytriton_root

# Top-level names model.py puts in sys.modules when it imports its siblings.
_MODEL_FOLDER_MODULES = ("model", "policy_runtime", "errors", "verification")


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signed_policy(tmp_path: Path, signing_key: Ed25519PrivateKey) -> SignedPolicy:
    return make_signed_policy(tmp_path / "artifacts", signing_key, features=16, actions=5, seed=7)


@pytest.fixture
def observations() -> np.ndarray:
    return np.random.default_rng(11).normal(size=(100, 16)).astype(np.float32)


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The wheel's real triton_python_backend_utils.py, with the classes the stub process injects stubbed."""
    source = pytriton_root() / "tritonserver" / "backends" / "python" / "triton_python_backend_utils.py"
    spec = importlib.util.spec_from_file_location("triton_python_backend_utils", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.Tensor = StubTensor  # type: ignore[attr-defined]
    module.TritonError = StubTritonError  # type: ignore[attr-defined]
    module.InferenceResponse = StubInferenceResponse  # type: ignore[attr-defined]
    module.InferenceRequest = StubInferenceRequest  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


@pytest.fixture
def export(tmp_path: Path) -> Callable[..., Path]:
    """export_policy into tmp_path/'repository' with a CPU config; returns the version folder."""

    def _export(policy: SignedPolicy, version: int = 1, model_name: str = "symbol_agent", **triton: Any) -> Path:
        return export_policy(
            tmp_path / "repository",
            model_name,
            version,
            policy.artifact,
            policy.public_key_path,
            TritonConfig(**triton),
        )

    return _export


@pytest.fixture
def load_model_module(pb_utils: ModuleType) -> Iterator[Callable[[Path], ModuleType]]:
    """Import `<version_dir>/model.py` as Triton does; undo its sys.path and sys.modules changes afterwards."""
    saved_path = list(sys.path)
    saved_modules = {name: sys.modules.get(name) for name in _MODEL_FOLDER_MODULES}

    def _load(version_dir: Path) -> ModuleType:
        for name in _MODEL_FOLDER_MODULES:
            sys.modules.pop(name, None)
        spec = importlib.util.spec_from_file_location("model", version_dir / "model.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["model"] = module
        spec.loader.exec_module(module)
        return module

    yield _load
    sys.path[:] = saved_path
    for name, previous in saved_modules.items():
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
