"""`make demo` at a tiny size: the real `marlops demo` command, three candidates through the Dagster lifecycle
jobs, in a project directory of its own (its own .marlops, models/ and Triton repository)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_demo_when_run_tiny_then_every_candidate_has_a_lifecycle_outcome(tmp_path: Path) -> None:
    project = tmp_path / "project"
    config = project / "config" / "rl"
    shutil.copytree(REPO / "config" / "rl", config)
    serving = yaml.safe_load((config / "serving.yaml").read_text())
    serving["triton"]["model_repository"] = str(project / "triton_models")
    (config / "serving.yaml").write_text(yaml.safe_dump(serving))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARLOPS_", "DAGSTER_", "MLFLOW_"))}
    done = subprocess.run(
        [sys.executable, "-m", "marlops.cli", "--config-dir", str(config), "demo", "--symbols", "6", "--days", "200",
         "--replay-days", "8", "--iterations", "2"],
        cwd=project, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((project / ".marlops" / "demo" / "summary.json").read_text())
    lifecycle = {entry["candidate"]: entry for entry in summary["lifecycle"]}
    assert set(lifecycle) == {"good", "no-signal", "planted-defect"}
    for entry in lifecycle.values():
        assert entry["versions"]["symbol_agent"] and entry["outcome"] and "registration" in entry["stages_passed"]
        if entry["outcome"] != "production":
            assert entry["reason"], entry  # every stop says why
    assert lifecycle["no-signal"]["outcome"] == "blocked_at_validation"
    assert "Go/No-Go failed" in lifecycle["no-signal"]["reason"]
    if "validation" in lifecycle["good"]["stages_passed"]:  # the first candidate's staging replay is reported
        assert summary["decisions"] > 0 and summary["audit_chain_ok"]
    assert "lifecycle" in done.stdout
    assert not (project / "models" / "rl" / "production").exists() or lifecycle["good"]["outcome"] == "production"
