"""Triton python-backend adapter for one signed policy version; the logic lives in policy_runtime.

Runs only inside Triton (`triton_python_backend_utils` exists only there; unit tests stub it).
Copied by the export into `<repository>/<model>/<version>/` next to policy_runtime.py, errors.py
and verification.py, which it imports as top-level modules from its own folder.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import numpy as np  # noqa: E402
import policy_runtime  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from errors import PolicyInputError, PolicyLoadError, PolicyRuntimeError  # noqa: E402

logger = logging.getLogger(__name__)


class _TritonLogHandler(logging.Handler):
    """Sends records to Triton's log, so they carry Triton's timestamps and obey --log-verbose."""

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            pb_utils.Logger.log_error(message)
        elif record.levelno >= logging.WARNING:
            pb_utils.Logger.log_warn(message)
        elif record.levelno >= logging.INFO:
            pb_utils.Logger.log_info(message)
        else:
            pb_utils.Logger.log_verbose(message)


def _route_logs_to_triton() -> None:
    if not hasattr(pb_utils, "Logger"):
        return
    handler = _TritonLogHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for name in (__name__, policy_runtime.__name__):
        named = logging.getLogger(name)
        if not any(isinstance(h, _TritonLogHandler) for h in named.handlers):
            named.addHandler(handler)
        # Triton decides what is shown (--log-verbose for debug), so let everything through.
        named.setLevel(logging.DEBUG)


class TritonPythonModel:
    """One instance serves one verified policy version; every request gets exactly one response."""

    def initialize(self, args: dict[str, Any]) -> None:
        _route_logs_to_triton()
        model_config = json.loads(args["model_config"])
        self.model_name = args.get("model_name", model_config.get("name", "<unnamed>"))
        self.version = str(args["model_version"])
        settings = policy_runtime.parse_model_parameters(model_config, self.version)
        device = self._device(args)
        version_dir = Path(args["model_repository"]) / self.version
        # Raising here fails the load; Triton returns this message to the load request.
        self.module, self.manifest = policy_runtime.load_verified_policy(
            version_dir,
            settings.public_key_path,
            settings.expected_feature_spec_hash,
            expected_sha256=settings.expected_sha256,
            device=device,
        )
        self.shape = policy_runtime.policy_shape(self.manifest)
        configured = self._configured_features(model_config)
        # -1: the model's versions were trained on different observation versions (v1/v2 widths); each version
        # checks its own signed width on every request (validate_observations), so a v1 row never reaches a v2 policy.
        if configured not in (-1, self.shape.features):
            raise PolicyLoadError(
                f"config.pbtxt declares {configured} observation features, the signed policy expects "
                f"{self.shape.features}; re-export the model"
            )
        logger.info(
            "model %s version %s ready: %d features -> %d actions on %s",
            self.model_name,
            self.version,
            self.shape.features,
            self.shape.actions,
            device,
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        pending: list[tuple[int, np.ndarray]] = []
        for index, request in enumerate(requests):
            try:
                observations = self._observations(request)
            except PolicyInputError as exc:
                responses[index] = _error_response(str(exc))
                continue
            logger.debug(
                "model %s v%s request %d: %d rows, observation checksum %s",
                self.model_name,
                self.version,
                index,
                observations.shape[0],
                policy_runtime.observation_checksum(observations),
            )
            pending.append((index, observations))
        if pending:
            self._run(pending, responses)
        return responses

    def finalize(self) -> None:
        logger.info("model %s version %s unloading", self.model_name, self.version)

    def _run(self, pending: list[tuple[int, np.ndarray]], responses: list[Any]) -> None:
        # Dynamic batching may hand over several requests: one forward pass, then split by rows.
        batch = pending[0][1] if len(pending) == 1 else np.concatenate([obs for _, obs in pending])
        try:
            probabilities, actions = policy_runtime.run_policy(
                self.module, batch, expected_features=self.shape.features, expected_actions=self.shape.actions
            )
        except (PolicyRuntimeError, RuntimeError) as exc:  # torch raises RuntimeError subclasses
            logger.error("model %s v%s forward pass failed: %s", self.model_name, self.version, exc)
            for index, _ in pending:
                responses[index] = _error_response(f"policy forward pass failed: {exc}")
            return
        start = 0
        for index, observations in pending:
            stop = start + observations.shape[0]
            responses[index] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(policy_runtime.PROBABILITIES_NAME, probabilities[start:stop]),
                    # The module's [B] int64; config.pbtxt reshapes it to dims [1] for clients.
                    pb_utils.Tensor(policy_runtime.ACTION_NAME, actions[start:stop]),
                ]
            )
            start = stop

    def _observations(self, request: Any) -> np.ndarray:
        tensor = pb_utils.get_input_tensor_by_name(request, policy_runtime.INPUT_NAME)
        if tensor is None:
            raise PolicyInputError(f"request has no input tensor '{policy_runtime.INPUT_NAME}'")
        return policy_runtime.validate_observations(tensor.as_numpy(), self.shape.features)

    @staticmethod
    def _device(args: dict[str, Any]) -> str:
        if args.get("model_instance_kind") != "GPU":
            return "cpu"
        import torch

        if not torch.cuda.is_available():
            raise PolicyLoadError("instance_group is KIND_GPU but torch in the Triton stub sees no CUDA device")
        return f"cuda:{args.get('model_instance_device_id', '0')}"

    @staticmethod
    def _configured_features(model_config: dict[str, Any]) -> int:
        for spec in model_config.get("input", ()):
            if spec.get("name") == policy_runtime.INPUT_NAME:
                dims = [int(d) for d in spec.get("dims", ())]
                if len(dims) == 1:
                    return dims[0]
                raise PolicyLoadError(f"config.pbtxt input '{policy_runtime.INPUT_NAME}' dims {dims}, expected [D]")
        raise PolicyLoadError(f"config.pbtxt declares no input '{policy_runtime.INPUT_NAME}'")


def _error_response(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
