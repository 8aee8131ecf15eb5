"""Dagster resources: thin handles on marlops settings. The environment is chosen in definitions.py."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource

from contracts.config import RLConfig, load_rl_config
from data_checks.acknowledgements import Acknowledgements, resolve_acknowledgements
from marlops.lifecycle.context import LifecycleContext, lifecycle_context
from marlops.paths import StatePaths
from marlops.pipeline import PipelineContext, TrainingSettings


class MarlopsResource(ConfigurableResource):  # type: ignore[misc]
    """Where state lives and which config/rl directory is in force."""

    project_root: str = "."
    config_dir: str = "config/rl"
    state_dir: str = ""  # empty: $MARLOPS_HOME or <project_root>/.marlops

    def paths(self) -> StatePaths:
        root = Path(self.project_root).resolve()
        paths = StatePaths.from_env(root)
        if self.state_dir:
            paths = StatePaths(root=Path(self.state_dir).resolve(), project_root=root)
        return paths.ensure()

    def rl_config(self) -> RLConfig:
        return load_rl_config(Path(self.project_root) / self.config_dir)

    def pipeline_context(self) -> PipelineContext:
        return PipelineContext.create(self.paths(), self.rl_config())

    @contextmanager
    def lifecycle(self) -> Iterator[LifecycleContext]:
        with lifecycle_context(self.pipeline_context()) as lc:
            yield lc


class MarketDataResource(ConfigurableResource):  # type: ignore[misc]
    """`source`: "synthetic", "synthetic:<preset>", or a path to CSV/Parquet bars."""

    # The default market has a planted, learnable signal: a policy that learns it passes Go/No-Go, so the job
    # runs end to end on embedded defaults. Point `source` at real files to train on real data.
    source: str = "synthetic:planted-alpha"
    seed: int = 7
    n_symbols: int = 20
    n_days: int = 504  # two years of daily bars
    replay_days: int = 30
    # Reviewed flagged rows to let through the bars check (data_checks/acknowledgements.py), relative to the project
    # root; empty: config/data/acknowledgements.yaml when it exists, else none.
    acknowledgements: str = ""

    def reviewed_rows(self, project_root: str) -> Acknowledgements | None:
        path = Path(self.acknowledgements) if self.acknowledgements else None
        if path is not None and not path.is_absolute():
            path = Path(project_root) / path
        return resolve_acknowledgements(path, project_root)


class TrainingResource(ConfigurableResource):  # type: ignore[misc]
    seed: int = 7
    iterations: int = 80
    hidden: int = 64
    # Drills only: plant a defect the canary must catch (agents/fault_drill.py); recorded in the MLflow run.
    fault_drill: str = ""

    def settings(self) -> TrainingSettings:
        return TrainingSettings(seed=self.seed, iterations=self.iterations, hidden=self.hidden,
                                fault_drill=self.fault_drill)
