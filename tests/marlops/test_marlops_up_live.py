"""`marlops up --live` refuses to start, with the way forward, when Alpaca keys, tickers or a routed policy are missing."""

from pathlib import Path

import pytest

from marlops.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "APCA_API_BASE_URL", "MARLOPS_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MARLOPS_HOME", str(tmp_path / ".marlops"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _up(*extra: str) -> int:
    return main(["--config-dir", str(REPO / "config" / "rl"), "up", "--live", "--no-dagster", "--no-mlflow", *extra])


def test_up_live_when_no_alpaca_keys_then_exit_1_naming_the_variables(project: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    assert _up("--tickers", "AAPL") == 1
    assert "APCA_API_KEY_ID" in caplog.text and "APCA_API_SECRET_KEY" in caplog.text
    assert not (project / ".marlops" / "up.json").exists()


def test_up_live_when_keys_in_dotenv_but_no_tickers_then_exit_1_asking_for_them(
        project: Path, caplog: pytest.LogCaptureFixture) -> None:
    (project / ".env").write_text("APCA_API_KEY_ID=PKTEST\nAPCA_API_SECRET_KEY=not-a-real-secret\n")
    assert _up() == 1
    assert "--tickers" in caplog.text
    assert "not-a-real-secret" not in caplog.text


def test_up_live_when_nothing_is_routed_then_exit_1_saying_how_to_route(
        project: Path, caplog: pytest.LogCaptureFixture) -> None:
    (project / ".env").write_text("APCA_API_KEY_ID=PKTEST\nAPCA_API_SECRET_KEY=not-a-real-secret\n")
    assert _up("--tickers", "AAPL,MSFT") == 1
    assert "marlops route set" in caplog.text
    assert not (project / ".marlops" / "up.json").exists()
