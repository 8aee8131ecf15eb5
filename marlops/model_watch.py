"""Production's outputs judged live, bar by bar, by the lifecycle's model-anomaly rules (marlops.lifecycle.health:
NaN or out-of-range probabilities, a collapsed action distribution, an error rate) over the last `window_bars`
decided bars, exported as `marlops_model_anomaly_active{code}` for the ModelAnomaly alert, whose playbook rolls
production back to last-known-good (marlops/playbooks) after confirming it from the recorded bars."""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Gauge

from marlops.lifecycle.health import (
    MODEL_ACTION_COLLAPSE,
    MODEL_ERROR_RATE,
    MODEL_OUTPUT_NAN,
    MODEL_OUTPUT_RANGE,
    Anomaly,
    AnomalyRules,
    model_anomalies,
)
from marlops.lifecycle.records import BarRecord

CODES = (MODEL_OUTPUT_NAN, MODEL_OUTPUT_RANGE, MODEL_ACTION_COLLAPSE, MODEL_ERROR_RATE)


class ModelAnomalyWatch:
    def __init__(self, registry: CollectorRegistry, rules: AnomalyRules) -> None:
        self._rules = rules
        self._bars: deque[BarRecord] = deque(maxlen=rules.window_bars)
        self.active = Gauge("marlops_model_anomaly_active",
                            "1 while production's outputs over the last bars show this anomaly", ["code"],
                            registry=registry)
        for code in CODES:  # every series exists from the start: the alert can tell 0 from missing
            self.active.labels(code).set(0)

    def observe(self, bar: BarRecord) -> tuple[Anomaly, ...]:
        self._bars.append(bar)
        found = model_anomalies(list(self._bars), self._rules, variants=("production",))
        codes = {a.code for a in found}
        for code in CODES:
            self.active.labels(code).set(1 if code in codes else 0)
        return found
