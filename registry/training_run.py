"""A handle on one MLflow run, so training logs per-iteration metrics into the run it later registers from."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from registry.errors import RegistryError

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRun:
    client: MlflowClient
    run_id: str
    experiment_id: str

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now_ms = int(time.time() * 1000)
        entries = [Metric(key, float(value), now_ms, step) for key, value in metrics.items()]
        self._log_batch(metrics=entries)

    def log_params(self, params: Mapping[str, object]) -> None:
        self._log_batch(params=[Param(key, str(value)) for key, value in params.items()])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._log_batch(tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def _log_batch(
        self,
        *,
        metrics: list[Metric] | None = None,
        params: list[Param] | None = None,
        tags: list[RunTag] | None = None,
    ) -> None:
        # MLflow caps one batch at 1000 metrics and 100 params/tags; larger dicts go in slices.
        slices: list[tuple[list[Metric], list[Param], list[RunTag]]] = []
        for start in range(0, len(metrics or []), MAX_METRICS_PER_BATCH):
            slices.append(((metrics or [])[start : start + MAX_METRICS_PER_BATCH], [], []))
        for start in range(0, len(params or []), MAX_PARAMS_TAGS_PER_BATCH):
            slices.append(([], (params or [])[start : start + MAX_PARAMS_TAGS_PER_BATCH], []))
        for start in range(0, len(tags or []), MAX_PARAMS_TAGS_PER_BATCH):
            slices.append(([], [], (tags or [])[start : start + MAX_PARAMS_TAGS_PER_BATCH]))
        for metric_slice, param_slice, tag_slice in slices:
            try:
                self.client.log_batch(self.run_id, metrics=metric_slice, params=param_slice, tags=tag_slice)
            except MlflowException as exc:
                # A param logged twice with a different value lands here: MLflow params are write-once.
                raise RegistryError(f"run {self.run_id}: MLflow refused the write: {exc.message}") from exc
