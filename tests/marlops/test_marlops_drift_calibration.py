"""`marlops drift-calibrate` (the command docs/data_safety.md's figures come from), run at a tiny size."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from marlops.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_drift_calibrate_when_run_tiny_then_report_counts_false_alarms_and_detection_delays(tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    subprocess.run([sys.executable, "-m", "marlops.cli", "drift-calibrate", "--seeds", "1", "--train-bars", "200",
                    "--bars", "40", "--symbols", "4", "--json", str(out)], cwd=REPO, check=True, timeout=300,
                   capture_output=True)
    report = json.loads(out.read_text())
    assert report["bars_monitored"] == 40 and report["seeds"] == [1]
    assert report["false_halts_per_1000_bars"] >= 0 and report["false_alerts_per_1000_bars"] >= 0
    keys = set(json.loads((REPO / "config/rl/feature_drift_thresholds.json").read_text())["key_features"])
    assert set(report["detection_delay_bars"]) == keys
    for key, by_shift in report["detection_delay_bars"].items():
        planted = by_shift["8.0"]
        assert planted["runs"] == 1 and planted["missed"] == 0, key  # an 8-sigma shift is always caught
        assert 1 <= planted["max"] <= 3, (key, planted)


def test_drift_calibrate_when_seeds_malformed_then_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    # In process (the test above runs the real command in a process; a second start would cost ~10 s of imports):
    # main() logs the error (a process's stderr) and returns the exit code.
    with caplog.at_level(logging.ERROR):
        code = main(["--config-dir", str(REPO / "config" / "rl"), "drift-calibrate", "--seeds", "one"])
    assert code == 2 and "--seeds must be comma-separated integers, got 'one'" in caplog.text
