import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from marlops.cli import _MODULE_COMMANDS, build_parser, main

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


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


@pytest.mark.parametrize("command", sorted(_MODULE_COMMANDS))
def test_build_parser_when_only_one_module_command_then_that_command_is_registered_under_its_name(command: str) -> None:
    commands = _commands(build_parser(only=command))
    assert command in commands and not (set(_MODULE_COMMANDS) - {command}) & commands
    assert set(_MODULE_COMMANDS) <= _commands(build_parser())  # help and unknown commands see every command


def test_main_when_a_light_command_runs_then_torch_is_not_imported() -> None:
    # `marlops route --help` must not pay for torch (the master's and the trading service's modules import it).
    probe = ("import sys\nfrom marlops.cli import main\ntry:\n    main(['route', '--help'])\nexcept SystemExit:\n"
             "    pass\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
