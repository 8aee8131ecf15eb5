"""`python -m gateway` as its own process: secure by default, open only with --insecure-no-auth, broker
secrets only from the environment (never on the command line, never in the log). Also the process
settings' precedence: flag > environment > .env > default."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from child_process import stop_child

from gateway.__main__ import INSECURE_WARNING, gateway_settings, load_process_settings, redact_url
from paper_exchange.app import create_paper_exchange_app
from gateway.process_settings import GatewayProcessSettings
from gateway.serve import ServerHandle, free_port, serve_app_in_thread
from gateway.token_file import raw_token_path, read_token_file

REPO = Path(__file__).resolve().parents[2]
RISK_CONFIG = REPO / "config" / "rl" / "risk_overlays.yaml"
KEY_ID = "test-key-id-4711"
SECRET = "test-broker-secret-9f3c2a"  # what the exchange demands; must never show in the gateway's argv or log
GATEWAY_ENV_NAMES = ("MARLOPS_HOME", "APCA_API_BASE_URL", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MARLOPS_") and k not in GATEWAY_ENV_NAMES}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    home: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cmdline(self) -> str:
        return Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def _wait_ready(gw: GatewayProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            pytest.fail(f"gateway exited with {gw.proc.returncode} while starting:\n{gw.log()}")
        try:
            if httpx.get(gw.url + "/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling readiness
    pytest.fail(f"gateway not ready after {timeout_s:.0f}s:\n{gw.log()}")


@pytest.fixture
def exchange() -> Iterator[ServerHandle]:
    with serve_app_in_thread(create_paper_exchange_app(initial_cash=1_000_000.0, key_id=KEY_ID,
                                                       secret_key=SECRET)) as handle:
        yield handle


def _run_gateway(tmp_path: Path, exchange: ServerHandle, *args: str, port: int = 0) -> subprocess.Popen[bytes]:
    home = tmp_path / "home"
    log = (tmp_path / "gateway.log").open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "--port", str(port or free_port()), "--log-level", "info",
             "--risk-config", str(RISK_CONFIG), *args],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_clean_env(MARLOPS_HOME=str(home), APCA_API_BASE_URL=exchange.url, APCA_API_KEY_ID=KEY_ID,
                           APCA_API_SECRET_KEY=SECRET),
        )
    finally:
        log.close()


@pytest.fixture
def start_gateway(tmp_path: Path, exchange: ServerHandle) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> GatewayProcess:
        port = free_port()
        proc = _run_gateway(tmp_path, exchange, *args, port=port)
        started.append(proc)
        gw = GatewayProcess(proc, f"http://127.0.0.1:{port}", tmp_path / "gateway.log", tmp_path / "home")
        _wait_ready(gw)
        return gw

    yield start
    for proc in started:
        stop_child(proc)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _state(http: httpx.Client, token: str) -> str:
    response = http.get("/v1/state", headers=bearer(token))
    assert response.status_code == 200, response.text
    state: str = response.json()["trading_state"]
    return state


def test_operator_calls_when_default_config_then_tokens_required_and_roles_enforced(start_gateway) -> None:  # type: ignore[no-untyped-def]
    gw: GatewayProcess = start_gateway()
    tokens = {role: read_token_file(raw_token_path(gw.home / "tokens", role))
              for role in ("admin", "risk_officer", "trader")}
    store = gw.home / "auth" / "tokens.yaml"
    assert store.is_file() and all(token not in store.read_text() for token in tokens.values())
    with httpx.Client(base_url=gw.url, timeout=10.0) as http:
        before = _state(http, tokens["admin"])
        for path in ("/v1/kill-switch", "/v1/resume"):
            refused = http.post(path, json={"principal": "mallory", "reason": "no token"})
            assert refused.status_code == 401, (path, refused.text)
            assert _state(http, tokens["admin"]) == before

        killed = http.post("/v1/kill-switch", json={"principal": "local-trader", "reason": "drill"},
                           headers=bearer(tokens["trader"]))
        assert killed.status_code == 200 and killed.json()["trading_state"] == "HALTED"
        assert http.post("/v1/resume", json={"principal": "mallory", "reason": "x"}).status_code == 401
        trader_resume = http.post("/v1/resume", json={"principal": "local-trader", "reason": "mine"},
                                  headers=bearer(tokens["trader"]))
        assert trader_resume.status_code == 403
        assert _state(http, tokens["admin"]) == "HALTED"
        resumed = http.post("/v1/resume", json={"principal": "local-risk-officer", "reason": "drill over"},
                            headers=bearer(tokens["risk_officer"]))
        assert resumed.status_code == 200 and resumed.json()["trading_state"] == before

    cmdline, log = gw.cmdline(), gw.log()
    assert SECRET not in cmdline and SECRET not in log
    assert all(token not in log for token in tokens.values())
    assert "authentication ON" in log and "authentication is OFF" not in log


def test_start_when_restarted_then_token_store_and_raw_tokens_unchanged(start_gateway) -> None:  # type: ignore[no-untyped-def]
    first: GatewayProcess = start_gateway()
    files = [first.home / "auth" / "tokens.yaml",
             *(raw_token_path(first.home / "tokens", r) for r in ("admin", "risk_officer", "trader"))]
    before = {p: p.read_bytes() for p in files}
    stop_child(first.proc)

    second: GatewayProcess = start_gateway()

    assert {p: p.read_bytes() for p in files} == before
    token = read_token_file(raw_token_path(second.home / "tokens", "admin"))
    assert httpx.get(second.url + "/v1/whoami", headers=bearer(token)).json()["principal"] == "local-admin"


def test_start_when_insecure_no_auth_then_warning_logged_and_api_open(start_gateway) -> None:  # type: ignore[no-untyped-def]
    gw: GatewayProcess = start_gateway("--insecure-no-auth")
    who = httpx.get(gw.url + "/v1/whoami")
    assert who.status_code == 200 and who.json()["authenticated"] is False
    log = gw.log()
    # The log is a file, not a terminal: JSON lines (contracts.logs), one per record.
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert {"level": "WARNING", "logger": "gateway.main", "msg": INSECURE_WARNING, "service": "gateway"} in [
        {k: line.get(k) for k in ("level", "logger", "msg", "service")} for line in lines]
    assert not (gw.home / "auth" / "tokens.yaml").exists() and not (gw.home / "tokens").exists()
    assert SECRET not in gw.cmdline() and SECRET not in log


def test_start_when_tokens_file_empty_and_no_insecure_flag_then_refuses_with_clear_message(
    tmp_path: Path, exchange: ServerHandle
) -> None:
    empty = tmp_path / "tokens.yaml"
    empty.write_text("tokens: []\n")
    proc = _run_gateway(tmp_path, exchange, "--tokens-file", str(empty))
    try:
        assert proc.wait(timeout=60) == 2
    finally:
        stop_child(proc)
    log = (tmp_path / "gateway.log").read_text()
    assert "holds no API tokens" in log and "--insecure-no-auth" in log and "marlops token create" in log


@pytest.mark.parametrize("flag", ["--secret-key", "--key-id"])
def test_start_when_broker_key_on_command_line_then_refused_naming_the_variable(
    tmp_path: Path, exchange: ServerHandle, flag: str
) -> None:
    proc = _run_gateway(tmp_path, exchange, flag, "hunter2")
    try:
        assert proc.wait(timeout=60) == 2
    finally:
        stop_child(proc)
    log = (tmp_path / "gateway.log").read_text()
    assert f"{flag} is not accepted" in log and "APCA_API_" in log and "hunter2" not in log


# ---- process settings (in-process) ---------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("MARLOPS_") or name in GATEWAY_ENV_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_process_settings_when_flag_env_and_dotenv_then_flag_beats_env_beats_dotenv(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / ".env").write_text("MARLOPS_GATEWAY_PORT=7001\nMARLOPS_GATEWAY_HOST=0.0.0.0\n"
                                  "APCA_API_SECRET_KEY=from-dotenv\nAPCA_API_BASE_URL=http://dotenv:1\n"
                                  "MARLOPS_GATEWAY_AUDIT_TABLE=from_dotenv\n")
    monkeypatch.setenv("MARLOPS_GATEWAY_PORT", "7002")
    monkeypatch.setenv("MARLOPS_GATEWAY_HOST", "10.0.0.1")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "from-env")

    settings = load_process_settings(["--port", "7003", "--directive-bus", "redis://127.0.0.1:6379/0"])

    assert settings.port == 7003  # flag > env > .env
    assert settings.host == "10.0.0.1"  # env > .env
    assert settings.audit_table == "from_dotenv"  # .env > default
    assert settings.broker_url == "http://dotenv:1"
    assert settings.apca_api_secret_key.get_secret_value() == "from-env"
    assert settings.directive_bus_url == "redis://127.0.0.1:6379/0"
    assert not settings.insecure_no_auth  # default


def test_process_settings_when_defaults_then_token_store_and_audit_under_marlops_home(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert GatewayProcessSettings().token_store == project / ".marlops" / "auth" / "tokens.yaml"
    monkeypatch.setenv("MARLOPS_HOME", str(project / "elsewhere"))
    settings = GatewayProcessSettings()
    assert settings.token_store == project / "elsewhere" / "auth" / "tokens.yaml"
    assert settings.raw_tokens_dir == project / "elsewhere" / "tokens"
    assert settings.effective_audit_url == f"sqlite:///{project / 'elsewhere' / 'gateway' / 'audit.db'}"
    monkeypatch.setenv("MARLOPS_GATEWAY_INSECURE_NO_AUTH", "true")
    assert GatewayProcessSettings().insecure_no_auth


def test_process_settings_when_repr_or_str_then_broker_keys_hidden(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", "AKID-visible-nowhere")
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    settings = GatewayProcessSettings()
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in text and "AKID-visible-nowhere" not in text


def test_redact_url_when_password_in_url_then_masked() -> None:
    assert redact_url("postgresql+psycopg://u:pw@db:5432/x") == "postgresql+psycopg://u:***@db:5432/x"
    assert redact_url("redis://:pw@r:6379/0") == "redis://:***@r:6379/0"
    assert redact_url("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_gateway_settings_when_directive_bus_flag_then_gateway_subscribes_to_that_url(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    process = load_process_settings(["--broker-url", "http://127.0.0.1:5100", "--risk-config", str(RISK_CONFIG),
                                     "--directive-bus", "redis://127.0.0.1:6379/3", "--directive-channel", "dirs"])
    settings = gateway_settings(process, ())
    assert (settings.directive_bus_url, settings.directive_channel) == ("redis://127.0.0.1:6379/3", "dirs")
    assert settings.broker_secret_key == SECRET and settings.broker_base_url == "http://127.0.0.1:5100"
