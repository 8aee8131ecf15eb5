from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.config import load_rl_config
from marlops.bench import with_model_repository
from marlops.paths import StatePaths
from marlops.pipeline import PipelineContext

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pipeline_ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineContext]:
    """A pipeline context whose every store lives in a temp dir (MLflow, keys, artifacts, Triton repo)."""
    root = tmp_path_factory.mktemp("marlops")
    paths = StatePaths(root=root / "state", project_root=root).ensure()
    config = with_model_repository(load_rl_config(REPO / "config" / "rl"), root / "triton_models")
    yield PipelineContext.create(paths, config)
