"""Batched policy client: one Triton request carries the whole universe at one timestep.

A universe larger than the model's `max_batch_size` (Triton rejects such a request) is split into
chunks of at most that many rows, sent in order, and their outputs concatenated in order. The max
batch comes from the caller (`max_batch_size=`) or, by default, from Triton's model config, read
once per client at its first request.
"""

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
        max_batch_size: int | None = None,
    ) -> None:
        if max_batch_size is not None and max_batch_size < 0:
            raise InferenceError(f"max_batch_size must be >= 0 (0: the model does not batch), got {max_batch_size}")
        self.url = _strip_scheme(url)
        self.model_name = model_name
        self.protocol = protocol
        self.model_version = model_version
        self.timeout_s = timeout_s
        self._max_batch_size = max_batch_size  # None: read from Triton's model config at the first request
        self.requests_sent = 0  # Triton requests this client made (a chunked batch counts each chunk)
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

    @property
    def max_batch_size(self) -> int:
        """The most rows one request may carry (0: the model does not batch: one request per batch as given)."""
        if self._max_batch_size is None:
            self._max_batch_size = self._read_max_batch_size()
        return self._max_batch_size

    def infer(self, observations: np.ndarray) -> PolicyOutput:
        """Return probabilities [B, A] and actions [B] for the [B, D] batch: one request, or, when B exceeds the
        model's max batch, one request per chunk of at most max batch rows, outputs concatenated in order."""
        batch = _as_batch(observations)
        limit = self.max_batch_size
        if limit <= 0 or batch.shape[0] <= limit:
            return self._infer_one(batch)
        parts = [self._infer_one(batch[start:start + limit]) for start in range(0, batch.shape[0], limit)]
        return PolicyOutput(probabilities=np.concatenate([p.probabilities for p in parts]),
                            actions=np.concatenate([p.actions for p in parts]))

    def _read_max_batch_size(self) -> int:
        version = self.model_version or ""
        try:
            if self.protocol == "grpc":
                response = self._client.get_model_config(self.model_name, model_version=version,
                                                         client_timeout=self.timeout_s)
                value = int(response.config.max_batch_size)
            else:
                value = int(self._client.get_model_config(self.model_name, model_version=version)
                            .get("max_batch_size", 0))
        except InferenceServerException as exc:
            raise InferenceError(f"{self.target}: cannot read the model config: {exc.message() or exc}") from exc
        except OSError as exc:
            raise InferenceError(f"{self.target}: connection failed: {exc}") from exc
        logger.debug("%s: max_batch_size %d", self.target, value)
        return value

    def _infer_one(self, batch: np.ndarray) -> PolicyOutput:
        """One request carrying `batch`."""
        batch = np.ascontiguousarray(batch)
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
        self.requests_sent += 1
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
