"""Batched policy client: one Triton request carries the whole universe at one timestep."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np
from tritonclient.utils import InferenceServerException

from serving.errors import InferenceError
from serving.triton_runtime.policy_runtime import ACTION_NAME, INPUT_NAME, PROBABILITIES_NAME

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyOutput:
    """Per-row action probabilities [B, A] float32 and recommended actions [B] int64."""

    probabilities: np.ndarray
    actions: np.ndarray


class PolicyClient:
    """Talks to one Triton model (optionally one pinned version) over gRPC or HTTP."""

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        protocol: Literal["grpc", "http"] = "grpc",
        model_version: str | None = None,
        timeout_s: float = 10,
    ) -> None:
        self.url = _strip_scheme(url)
        self.model_name = model_name
        self.protocol = protocol
        self.model_version = model_version
        self.timeout_s = timeout_s
        self._client: Any
        if protocol == "grpc":
            import tritonclient.grpc as grpcclient

            self._module: Any = grpcclient
            self._client = grpcclient.InferenceServerClient(url=self.url)
        elif protocol == "http":
            import tritonclient.http as httpclient

            self._module = httpclient
            self._client = httpclient.InferenceServerClient(
                url=self.url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            raise InferenceError(f"protocol must be 'grpc' or 'http', got {protocol!r}")

    @property
    def target(self) -> str:
        return f"model '{self.model_name}' version {self.model_version or '<latest>'} at {self.protocol}://{self.url}"

    def infer(self, observations: np.ndarray) -> PolicyOutput:
        """Send the [B, D] batch as one request; return probabilities [B, A] and actions [B]."""
        batch = _as_batch(observations)
        inputs = [self._module.InferInput(INPUT_NAME, list(batch.shape), "FP32")]
        inputs[0].set_data_from_numpy(batch)
        outputs = [self._requested_output(PROBABILITIES_NAME), self._requested_output(ACTION_NAME)]
        try:
            if self.protocol == "grpc":
                result = self._client.infer(
                    self.model_name,
                    inputs,
                    model_version=self.model_version or "",
                    outputs=outputs,
                    client_timeout=self.timeout_s,
                )
            else:
                result = self._client.infer(
                    self.model_name, inputs, model_version=self.model_version or "", outputs=outputs
                )
        except InferenceServerException as exc:
            raise InferenceError(f"{self.target}: {exc.message() or exc}") from exc
        except OSError as exc:  # the HTTP client surfaces refused/reset connections as socket errors
            raise InferenceError(f"{self.target}: connection failed: {exc}") from exc
        return self._output(result, batch.shape[0])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _requested_output(self, name: str) -> Any:
        if self.protocol == "http":
            return self._module.InferRequestedOutput(name, binary_data=True)
        return self._module.InferRequestedOutput(name)

    def _output(self, result: Any, rows: int) -> PolicyOutput:
        probabilities = result.as_numpy(PROBABILITIES_NAME)
        actions = result.as_numpy(ACTION_NAME)
        if probabilities is None or actions is None:
            raise InferenceError(f"{self.target}: response lacks '{PROBABILITIES_NAME}' or '{ACTION_NAME}'")
        if probabilities.dtype != np.float32 or probabilities.ndim != 2 or probabilities.shape[0] != rows:
            raise InferenceError(
                f"{self.target}: probabilities {probabilities.dtype} {list(probabilities.shape)}, "
                f"expected float32 [{rows}, A]"
            )
        # Triton reports the batched scalar action as [B, 1].
        if actions.dtype != np.int64 or actions.size != rows:
            raise InferenceError(
                f"{self.target}: action {actions.dtype} {list(actions.shape)}, expected int64 [{rows}, 1]"
            )
        return PolicyOutput(probabilities=probabilities, actions=actions.reshape(rows))


def _as_batch(observations: Any) -> np.ndarray:
    if not isinstance(observations, np.ndarray):
        raise InferenceError(f"observations must be a numpy array, got {type(observations).__name__}")
    if observations.ndim != 2 or observations.shape[0] == 0 or observations.shape[1] == 0:
        raise InferenceError(
            f"observations must be a non-empty 2-D [symbols, features] array, got {list(observations.shape)}"
        )
    if not np.issubdtype(observations.dtype, np.floating):
        raise InferenceError(f"observations must be floating point, got {observations.dtype}")
    return np.ascontiguousarray(observations, dtype=np.float32)


def _strip_scheme(url: str) -> str:
    if url.startswith("https://"):
        raise InferenceError(f"{url}: TLS is not configured in PolicyClient; use host:port of a plaintext endpoint")
    for scheme in ("grpc://", "http://"):
        if url.startswith(scheme):
            return url[len(scheme) :].rstrip("/")
    return url.rstrip("/")
