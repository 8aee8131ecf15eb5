"""Where the inference time goes, measured against the bench's own running Triton, on the same observations:
one batched request vs one request per symbol, gRPC vs HTTP, a universe larger than the model's max batch
(chunked by serving.client.PolicyClient), and the same TorchScript file called in process (the floor).

Calls are interleaved per observation batch (gRPC, HTTP, per-symbol, in process), so a slow moment of the
machine hits every variant alike; every figure and every ratio comes from this one pass.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from serving.client import PolicyClient

logger = logging.getLogger(__name__)


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return {"p50": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
    return {"p50": float(np.percentile(array, 50)), "p99": float(np.percentile(array, 99)),
            "mean": float(array.mean()), "max": float(array.max())}


def _timed(call: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    call(*args)
    return (time.perf_counter() - t0) * 1000


def ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else math.inf


def compare_inference(*, grpc_url: str, http_url: str, model: str, version: str, artifact: Path,
                      batches: list[np.ndarray], universe_rows: int, per_symbol_batches: int = 20,
                      universe_repeats: int = 10, warmup: int = 3) -> dict[str, Any]:
    """Timings in ms of each variant over `batches` ([symbols, D] each) and a `universe_rows`-row batch built
    by tiling them; ratios of their p50s and p99s."""
    module = torch.jit.load(str(artifact), map_location="cpu").eval()
    grpc = PolicyClient(grpc_url, model, protocol="grpc", model_version=version)
    http = PolicyClient(http_url, model, protocol="http", model_version=version)
    timings: dict[str, list[float]] = {"batched_grpc": [], "batched_http": [], "per_symbol_grpc": [],
                                       "inprocess_torchscript": [], "universe_chunked_grpc": []}
    try:
        with torch.inference_mode():
            def floor(x: np.ndarray) -> None:
                module(torch.from_numpy(x))

            def per_symbol(x: np.ndarray) -> None:
                for row in range(x.shape[0]):
                    grpc.infer(x[row:row + 1])

            for x in batches[:warmup]:  # connections, the first request of each client, torch's first call
                grpc.infer(x), http.infer(x), floor(x)
            for i, x in enumerate(batches):
                timings["batched_grpc"].append(_timed(grpc.infer, x))
                timings["batched_http"].append(_timed(http.infer, x))
                timings["inprocess_torchscript"].append(_timed(floor, x))
                if i < per_symbol_batches:
                    timings["per_symbol_grpc"].append(_timed(per_symbol, x))
            stacked = np.concatenate(batches)
            reps = -(-universe_rows // stacked.shape[0])
            universe = np.ascontiguousarray(np.tile(stacked, (reps, 1))[:universe_rows])
            before = grpc.requests_sent
            for _ in range(universe_repeats):
                timings["universe_chunked_grpc"].append(_timed(grpc.infer, universe))
            universe_requests = (grpc.requests_sent - before) / universe_repeats
            max_batch = grpc.max_batch_size
    finally:
        grpc.close()
        http.close()
    result: dict[str, Any] = {f"{name}_ms": percentiles(values) for name, values in timings.items()}
    p = {name: result[f"{name}_ms"] for name in timings}
    result.update({
        "symbols_per_batch": int(batches[0].shape[0]),
        "batches": len(batches),
        "per_symbol_batches": min(per_symbol_batches, len(batches)),
        "per_symbol_requests_per_batch": int(batches[0].shape[0]),
        "universe_rows": universe_rows,
        "universe_requests_per_call": universe_requests,
        "max_batch_size": max_batch,
        "ratios": {
            "per_symbol_over_batched_grpc_p50": ratio(p["per_symbol_grpc"]["p50"], p["batched_grpc"]["p50"]),
            "per_symbol_over_batched_grpc_p99": ratio(p["per_symbol_grpc"]["p99"], p["batched_grpc"]["p99"]),
            "http_over_grpc_p50": ratio(p["batched_http"]["p50"], p["batched_grpc"]["p50"]),
            "http_over_grpc_p99": ratio(p["batched_http"]["p99"], p["batched_grpc"]["p99"]),
            "batched_grpc_over_inprocess_p50": ratio(p["batched_grpc"]["p50"], p["inprocess_torchscript"]["p50"]),
            "batched_grpc_over_inprocess_p99": ratio(p["batched_grpc"]["p99"], p["inprocess_torchscript"]["p99"]),
            "universe_chunked_over_batched_grpc_p50": ratio(p["universe_chunked_grpc"]["p50"],
                                                            p["batched_grpc"]["p50"]),
        },
        "definition": "each figure: wall time of one client call as the trading service makes it (per_symbol: "
                      "one request per row, sequentially, for the whole batch); same observation batches for "
                      "every variant; universe: those rows tiled to universe_rows, split by the client into "
                      "requests of at most max_batch_size rows",
    })
    return result


_COUNTER = re.compile(r'^(nv_inference_request_success|nv_inference_count)\{model="([^"]+)",version="([^"]+)"\} (\S+)$')


def triton_counts(metrics_url: str, model: str) -> dict[str, float]:
    """Triton's own counters for `model` (all versions): successful requests and inferences (rows)."""
    text = httpx.get(metrics_url, timeout=5.0).text
    counts = {"requests": 0.0, "rows": 0.0}
    for line in text.splitlines():
        match = _COUNTER.match(line)
        if match and match.group(2) == model:
            counts["requests" if match.group(1) == "nv_inference_request_success" else "rows"] += float(match.group(4))
    return counts
