"""The latencies the gateway measures, each kept twice: as a Prometheus histogram (bucketed, for
dashboards and alerts) and as a window of recent samples (exact percentiles for GET /v1/latency and
the benchmark report).

  decision           timestep received -> decisions accepted (overlay, risk, intents durable)
  action_to_order    intent durable -> broker acknowledged (first answer to the submit)
  order_to_fill      broker acknowledged -> order filled (complete; partial fills wait for the rest)
  timestep_settle    timestep received -> every order of it has its final answer
  directive          master published a directive -> the gateway holds it (directive propagation)
"""

import threading
from collections import deque
from typing import Any, Literal

import numpy as np

from gateway.metrics import GatewayMetrics

LatencyKind = Literal["decision", "action_to_order", "order_to_fill", "timestep_settle", "directive"]
WINDOW = 10_000


class LatencyRecorder:
    def __init__(self, metrics: GatewayMetrics, window: int = WINDOW) -> None:
        self._histograms = {
            "decision": metrics.decision_seconds,
            "action_to_order": metrics.action_to_order_seconds,
            "order_to_fill": metrics.order_to_fill_seconds,
            "timestep_settle": metrics.timestep_settle_seconds,
            "directive": metrics.directive_propagation_seconds,
        }
        self._samples: dict[str, deque[float]] = {kind: deque(maxlen=window) for kind in self._histograms}
        self._lock = threading.Lock()

    def observe(self, kind: LatencyKind, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self._histograms[kind].observe(seconds)
        with self._lock:
            self._samples[kind].append(seconds)

    def summary(self, last: int | None = None) -> dict[str, Any]:
        """Per kind: count and p50/p90/p99/max in milliseconds over the recent window, or over its newest `last`
        samples (None when empty)."""
        with self._lock:
            samples = {kind: np.fromiter(values, dtype=float) for kind, values in self._samples.items()}
        if last is not None:
            samples = {kind: values[-last:] for kind, values in samples.items()}
        out: dict[str, Any] = {"window": WINDOW}
        for kind, values in samples.items():
            if values.size == 0:
                out[kind] = {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
                continue
            ms = values * 1000.0
            p50, p90, p99 = np.percentile(ms, [50, 90, 99])
            out[kind] = {"count": int(ms.size), "p50": float(p50), "p90": float(p90), "p99": float(p99),
                         "max": float(ms.max())}
        return out
