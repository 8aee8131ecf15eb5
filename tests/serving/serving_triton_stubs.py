"""Stand-ins for the classes Triton's stub process injects into triton_python_backend_utils (C++ in Triton)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2


class StubTensor:
    """Stand-in for c_python_backend_utils.Tensor (name + numpy data)."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class StubTritonError:
    def __init__(self, message: str) -> None:
        self._message = message

    def message(self) -> str:
        return self._message


class StubInferenceResponse:
    def __init__(self, output_tensors: list[StubTensor], error: StubTritonError | None = None) -> None:
        self._tensors = output_tensors
        self._error = error

    def output_tensors(self) -> list[StubTensor]:
        return self._tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> StubTritonError | None:
        return self._error


class StubInferenceRequest:
    def __init__(self, *tensors: StubTensor) -> None:
        self._tensors = list(tensors)

    def inputs(self) -> list[StubTensor]:
        return self._tensors


def triton_args(version_dir: Path, **overrides: str) -> dict[str, str]:
    """The `args` dict Triton passes to initialize, with model_config as Triton's JSON of config.pbtxt."""
    model_dir = version_dir.parent
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    args = {
        "model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
        "model_instance_kind": "CPU",
        "model_instance_name": f"{model_dir.name}_0_0",
        "model_instance_device_id": "0",
        "model_repository": str(model_dir),
        "model_version": version_dir.name,
        "model_name": model_dir.name,
    }
    args.update(overrides)
    return args
