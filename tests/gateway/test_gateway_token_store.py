"""The marlops token store: bootstrapped once (hashes in the store, raw tokens in owner-only files),
never changed by a later start, and its raw tokens authenticate against a real gateway. Raw token
files readable by others are refused, like ssh refuses such a private key."""

import logging
import os
import stat
from pathlib import Path

import httpx
import pytest

from contracts.config import RiskOverlaysConfig
from gateway.app import create_app
from paper_exchange.app import create_paper_exchange_app
from gateway.serve import serve_app_in_thread
from gateway.settings import GatewaySettings
from gateway.token_file import (
    BOOTSTRAP_PRINCIPALS,
    TokenFileError,
    bootstrap_token_store,
    load_tokens,
    raw_token_path,
    read_token_file,
)
from gateway.tokens import hash_token


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(*dirs: Path) -> dict[str, tuple[bytes, int, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
            for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "marlops-home"


def test_bootstrap_when_store_absent_then_three_tokens_hashed_in_store_and_raw_in_private_files(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, raw_dir = home / "auth" / "tokens.yaml", home / "tokens"
    with caplog.at_level(logging.INFO, logger="gateway.token_file"):
        result = bootstrap_token_store(store, raw_dir)

    assert result.created and result.store == store
    assert {(g.principal, g.role) for g in result.grants} == {
        ("local-admin", "admin"), ("local-risk-officer", "risk_officer"), ("local-trader", "trader"),
        ("local-viewer", "viewer")}
    assert [(g.principal, g.role) for g in load_tokens(store)] == [(g.principal, g.role) for g in result.grants]
    assert _mode(raw_dir) == 0o700 and _mode(store) & 0o077 == 0
    store_text = store.read_text()
    for role in BOOTSTRAP_PRINCIPALS:
        path = raw_token_path(raw_dir, role)
        assert result.token_files[role] == path and _mode(path) == 0o600
        token = read_token_file(path)
        assert token not in store_text and hash_token(token) in store_text
        assert token not in caplog.text and str(path) in caplog.text
    assert sorted(p.name for p in raw_dir.iterdir()) == ["admin.token", "risk_officer.token", "trader.token",
                                                             "viewer.token"]


def test_bootstrap_when_called_again_then_nothing_changes(home: Path) -> None:
    store, raw_dir = home / "auth" / "tokens.yaml", home / "tokens"
    bootstrap_token_store(store, raw_dir)
    before = _snapshot(store.parent, raw_dir)

    again = bootstrap_token_store(store, raw_dir)

    assert not again.created and again.token_files == {} and len(again.grants) == 4
    assert _snapshot(store.parent, raw_dir) == before


def test_bootstrap_when_store_has_no_tokens_then_tokens_are_created(home: Path) -> None:
    store = home / "auth" / "tokens.yaml"
    store.parent.mkdir(parents=True)
    store.write_text("tokens: []\n")

    result = bootstrap_token_store(store, home / "tokens")

    assert result.created and len(load_tokens(store)) == 4


def test_bootstrap_when_umask_is_permissive_then_files_still_owner_only(home: Path) -> None:
    old = os.umask(0)
    try:
        bootstrap_token_store(home / "auth" / "tokens.yaml", home / "tokens")
    finally:
        os.umask(old)
    assert _mode(home / "tokens") == 0o700
    assert all(_mode(p) == 0o600 for p in (home / "tokens").iterdir())
    assert _mode(home / "auth" / "tokens.yaml") == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_read_token_file_when_group_or_world_readable_then_refused_like_ssh(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "trader.token"
    path.write_text("mgw_secret\n")
    path.chmod(mode)
    with pytest.raises(TokenFileError, match=rf"permissions {mode:04o} are too open.*chmod 600") as info:
        read_token_file(path)
    assert "mgw_secret" not in str(info.value)


def test_read_token_file_when_missing_or_empty_then_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read the token file"):
        read_token_file(tmp_path / "absent.token")
    empty = tmp_path / "empty.token"
    empty.touch(mode=0o600)
    with pytest.raises(TokenFileError, match="exactly one token"):
        read_token_file(empty)


def test_raw_token_when_bootstrapped_then_it_authenticates_against_gateway_started_with_store(home: Path) -> None:
    store, raw_dir = home / "auth" / "tokens.yaml", home / "tokens"
    bootstrap_token_store(store, raw_dir)
    tokens = {role: read_token_file(raw_token_path(raw_dir, role)) for role in BOOTSTRAP_PRINCIPALS}

    with serve_app_in_thread(create_paper_exchange_app(initial_cash=1_000_000.0)) as exchange:
        settings = GatewaySettings(risk=RiskOverlaysConfig(), audit_url=f"sqlite:///{home / 'audit.db'}",
                                   broker_base_url=exchange.url, api_tokens=load_tokens(store))
        with serve_app_in_thread(create_app(settings)) as gateway, httpx.Client(base_url=gateway.url) as http:
            assert http.get("/v1/whoami").status_code == 401
            for role, token in tokens.items():
                who = http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
                assert who.status_code == 200, who.text
                assert who.json()["principal"] == BOOTSTRAP_PRINCIPALS[role]  # type: ignore[index]
                assert who.json()["role"] == role


def test_read_local_token_when_roles_in_order_then_first_present_one_wins(tmp_path: Path) -> None:
    from gateway.token_file import read_local_token

    bootstrap_token_store(tmp_path / "auth" / "tokens.yaml", tmp_path / "tokens")
    (tmp_path / "tokens" / "viewer.token").unlink()  # a home bootstrapped before viewer tokens existed
    trader = (tmp_path / "tokens" / "trader.token").read_text().strip()
    assert read_local_token(tmp_path / "tokens", ("viewer", "trader", "admin")) == trader
    assert read_local_token(tmp_path / "tokens", ("viewer",)) is None
