import shutil
from pathlib import Path

import pytest

from marlops.cli import main

REPO = Path(__file__).resolve().parents[2]


def _config_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rl"
    shutil.copytree(REPO / "config" / "rl", target)
    return target


def test_config_validate_when_shipped_config_then_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config-dir", str(REPO / "config" / "rl"), "config", "validate"]) == 0
    assert "ok" in capsys.readouterr().out


def test_config_validate_when_bad_value_then_exit_two_naming_file_and_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = _config_copy(tmp_path)
    with (config / "risk_overlays.yaml").open("a") as fh:
        fh.write("max_gross_leverage: -1\n")
    assert main(["--config-dir", str(config), "config", "validate"]) == 2
    assert "risk_overlays.yaml" in caplog.text and "max_gross_leverage" in caplog.text


def test_demo_when_source_missing_then_exit_two_before_dagster_starts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARLOPS_HOME", str(tmp_path / "state"))
    assert main(["demo", "--source", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in caplog.text
    assert not (tmp_path / "state" / "logs" / "demo-dagster.log").exists()
