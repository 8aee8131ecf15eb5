"""marlops settings: environment over `.env` over defaults (flags over all), the names users already
use (MLFLOW_TRACKING_URI, DAGSTER_HOME, REDIS_URL, APCA_*), a user's dagster.yaml left alone, the token
CLI defaulting to the one token store, and `.env.example` documenting every variable."""

import argparse
import logging
import os
import re
from pathlib import Path

import pytest
import yaml

from gateway.process_settings import GatewayProcessSettings
from gateway.token_file import load_tokens
from gateway.tokens import hash_token
from marlops.demo import DAGSTER_YAML_MARKER, MANAGED_LOGGERS, dagster_env, write_dagster_instance
from marlops.paths import StatePaths
from marlops.settings import MarlopsSettings
from marlops.token_cli import add_token_parser

REPO = Path(__file__).resolve().parents[2]
VARIABLES = ("MARLOPS_HOME", "MARLOPS_STATE_URL", "MLFLOW_TRACKING_URI", "DAGSTER_HOME", "REDIS_URL",
             "MARLOPS_DIRECTIVE_BUS_URL", "APCA_API_BASE_URL", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY",
             "APCA_DATA_URL", "APCA_DATA_STREAM_URL", "APCA_DATA_FEED", "APCA_DATA_TIMEFRAME")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project directory as the working directory, with none of our variables set."""
    for name in list(os.environ):
        if name in VARIABLES or name.startswith("MARLOPS_"):
            monkeypatch.delenv(name)
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def test_settings_when_env_and_dotenv_both_set_then_env_wins_and_dotenv_fills_the_rest(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".env").write_text("MLFLOW_TRACKING_URI=http://dotenv:5000\nMARLOPS_STATE_URL=sqlite:///dotenv.db\n"
                                  "APCA_API_SECRET_KEY=dotenv-secret\nAPCA_DATA_URL=http://data.dotenv\n"
                                  "APCA_DATA_FEED=sip\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")

    settings = MarlopsSettings.load(project)

    assert settings.mlflow_tracking_uri == "http://env:5000"
    assert settings.state_url == "sqlite:///dotenv.db"
    assert settings.apca_data_url == "http://data.dotenv" and settings.apca_data_feed == "sip"
    assert settings.apca_api_secret_key is not None
    assert settings.apca_api_secret_key.get_secret_value() == "dotenv-secret"
    assert "dotenv-secret" not in repr(settings) and "dotenv-secret" not in str(settings)


def test_settings_when_flag_given_then_it_beats_env_and_dotenv(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / ".env").write_text("MLFLOW_TRACKING_URI=http://dotenv:5000\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert MarlopsSettings.load(project, mlflow_tracking_uri="http://flag:5000").mlflow_tracking_uri == "http://flag:5000"
    assert MarlopsSettings.load(project, mlflow_tracking_uri=None).mlflow_tracking_uri == "http://env:5000"


def test_settings_when_nothing_set_then_defaults(project: Path) -> None:
    settings = MarlopsSettings.load(project)
    assert settings.marlops_home == Path(".marlops")
    assert settings.mlflow_tracking_uri is None and settings.dagster_home is None
    assert settings.directive_bus_url is None and settings.apca_api_key_id is None


def test_settings_when_redis_url_and_bus_url_set_then_bus_url_wins(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://generic:6379/0")
    assert MarlopsSettings.load(project).directive_bus_url == "redis://generic:6379/0"
    monkeypatch.setenv("MARLOPS_DIRECTIVE_BUS_URL", "redis://bus:6379/1")
    assert MarlopsSettings.load(project).directive_bus_url == "redis://bus:6379/1"


def test_state_paths_when_mlflow_tracking_uri_set_then_it_is_the_registry_uri(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert StatePaths.from_env(project).mlflow_uri == f"sqlite:///{project / '.marlops' / 'mlflow.db'}"
    (project / ".env").write_text("MLFLOW_TRACKING_URI=http://dotenv-mlflow:5000\n")
    assert StatePaths.from_env(project).mlflow_uri == "http://dotenv-mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert StatePaths.from_env(project).mlflow_uri == "http://mlflow.example:5000"
    direct = StatePaths(root=project / "state", project_root=project)
    assert direct.mlflow_uri == "http://mlflow.example:5000"


def test_pipeline_context_when_mlflow_tracking_uri_set_then_registry_uses_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contracts.config import load_rl_config
    from marlops.context import PipelineContext

    tracking = f"sqlite:///{project / 'elsewhere' / 'users-mlflow.db'}"
    (project / "elsewhere").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("MARLOPS_HOME", str(project / "state"))

    ctx = PipelineContext.create(StatePaths.from_env(project), load_rl_config(REPO / "config" / "rl"))

    assert ctx.registry.tracking_uri == tracking
    assert (project / "elsewhere" / "users-mlflow.db").exists()
    assert not (project / "state" / "mlflow.db").exists()


def test_state_paths_when_marlops_home_in_dotenv_then_root_follows(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / ".env").write_text(f"MARLOPS_HOME={project / 'from-dotenv'}\n")
    assert StatePaths.from_env(project).root == project / "from-dotenv"
    monkeypatch.setenv("MARLOPS_HOME", str(project / "from-env"))
    paths = StatePaths.from_env(project)
    assert paths.root == project / "from-env"
    assert paths.token_store == project / "from-env" / "auth" / "tokens.yaml"


def test_dagster_home_when_user_sets_it_then_marlops_uses_it(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_home = project / "my-dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(user_home))
    paths = StatePaths.from_env(project)
    assert paths.dagster_home == user_home
    assert dagster_env(paths)["DAGSTER_HOME"] == str(user_home)
    monkeypatch.delenv("DAGSTER_HOME")
    assert StatePaths.from_env(project).dagster_home == project / ".marlops" / "dagster"


def test_write_dagster_instance_when_foreign_dagster_yaml_then_left_untouched_and_logged(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    user_home = project / "my-dagster"
    user_home.mkdir()
    foreign = user_home / "dagster.yaml"
    foreign.write_text("# my own instance\nrun_storage:\n  module: dagster_postgres\n")
    before = (foreign.read_bytes(), foreign.stat().st_mtime_ns)
    monkeypatch.setenv("DAGSTER_HOME", str(user_home))

    with caplog.at_level(logging.INFO, logger="marlops.demo"):
        written = write_dagster_instance(StatePaths.from_env(project))

    assert written == foreign
    assert (foreign.read_bytes(), foreign.stat().st_mtime_ns) == before
    assert "as is" in caplog.text and str(foreign) in caplog.text


def test_write_dagster_instance_when_own_or_absent_then_written_with_marker(project: Path) -> None:
    paths = StatePaths.from_env(project)
    target = write_dagster_instance(paths)
    text = target.read_text()
    assert text.startswith(DAGSTER_YAML_MARKER)
    assert yaml.safe_load(text)["python_logs"]["managed_python_loggers"] == MANAGED_LOGGERS
    target.write_text(text.replace("INFO", "DEBUG"))  # marlops's own file: rewritten
    assert write_dagster_instance(paths).read_text() == text


def test_write_dagster_instance_when_legacy_marlops_yaml_without_marker_then_rewritten(project: Path) -> None:
    paths = StatePaths.from_env(project)
    legacy = paths.dagster_home / "dagster.yaml"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(yaml.safe_dump({
        "python_logs": {"python_log_level": "INFO", "managed_python_loggers": MANAGED_LOGGERS},
        "telemetry": {"enabled": False}}, sort_keys=False))
    assert write_dagster_instance(paths).read_text().startswith(DAGSTER_YAML_MARKER)


def _token_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="marlops")
    add_token_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_token_cli_when_no_file_given_then_token_store_under_marlops_home(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MARLOPS_HOME", str(project / "home"))
    store = project / "home" / "auth" / "tokens.yaml"
    assert _token_cli("token", "list") == 1 and str(store) in capsys.readouterr().err

    assert _token_cli("token", "create", "--principal", "rita", "--role", "risk_officer") == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert str(store) in out.err and token not in out.err
    assert [(g.principal, g.role, g.token_sha256) for g in load_tokens(store)] == [
        ("rita", "risk_officer", hash_token(token))]
    assert token not in store.read_text()

    assert _token_cli("token", "list") == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["rita", "risk_officer", hash_token(token)[:8]]
    assert GatewayProcessSettings().token_store == store  # the gateway reads the same store


def test_token_cli_when_file_given_then_it_is_used_instead_of_the_store(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MARLOPS_HOME", str(project / "home"))
    other = project / "other.yaml"
    assert _token_cli("token", "create", "--principal", "tom", "--role", "trader", "--file", str(other)) == 0
    capsys.readouterr()
    assert len(load_tokens(other)) == 1 and not (project / "home" / "auth" / "tokens.yaml").exists()


def _documented(example: str) -> dict[str, str]:
    """variable -> the comment line right above it."""
    lines = example.splitlines()
    found: dict[str, str] = {}
    for i, line in enumerate(lines):
        match = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if match:
            found[match.group(1)] = lines[i - 1] if i else ""
    return found


def _env_names(model: type) -> set[str]:
    names: set[str] = set()
    prefix = model.model_config.get("env_prefix", "")  # type: ignore[attr-defined]
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{name}".upper())
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.update(str(choice) for choice in alias.choices)
    return names


def test_env_example_when_read_then_every_variable_documented_and_env_ignored() -> None:
    documented = _documented((REPO / ".env.example").read_text())
    from contracts.logs import LogSettings
    from marlops.playbooks.service import PlaybookSettings
    from monitoring.alert_context import AlertContextSettings

    # The alert webhook's and the playbook runner's own variables, plus the launcher's MARLOPS_ALERT_CONTEXT_URL and
    # MARLOPS_PLAYBOOKS_URL (read by
    # monitoring/alertmanager_launcher.py, not a settings field).
    expected = (_env_names(MarlopsSettings) | _env_names(GatewayProcessSettings) | _env_names(AlertContextSettings)
                | _env_names(LogSettings) | _env_names(PlaybookSettings)
                | {"MARLOPS_ALERT_CONTEXT_URL", "MARLOPS_PLAYBOOKS_URL"})
    assert expected - set(documented) == set()
    assert set(documented) - expected == set()
    for name, comment in documented.items():
        assert comment.startswith("# ") and len(comment) > 10, name
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
