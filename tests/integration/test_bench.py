"""`make bench` (`marlops bench`) runs end to end at a tiny size and writes a report whose ratios come from one run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_bench_when_run_tiny_then_report_with_latencies_and_ratios_from_the_same_run(tmp_path: Path) -> None:
    env = {**os.environ, "MARLOPS_HOME": str(tmp_path / ".marlops")}
    done = subprocess.run([sys.executable, "-m", "marlops.cli", "--config-dir", str(REPO / "config" / "rl"), "bench",
                           "--symbols", "5", "--steps", "3"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / ".marlops" / "bench" / "report.json").read_text())
    assert report["symbols"] == 5 and report["timesteps_measured"] == 3
    for key in ("decision_latency_ms", "triton_inference_ms", "inprocess_inference_ms"):
        assert report[key]["p50"] > 0 and report[key]["p99"] >= report[key]["p50"]
    assert report["ratio_p50_decision_over_inprocess"] == pytest.approx(
        report["decision_latency_ms"]["p50"] / report["inprocess_inference_ms"]["p50"])
    assert report["decision_latency_ms"]["p50"] >= report["triton_inference_ms"]["p50"]
