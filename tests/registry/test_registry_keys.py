"""Signing key creation, reuse and environment overrides, on real files."""

import logging
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from registry.errors import SigningKeyError
from registry.keys import (
    PRIVATE_KEY_FILENAME,
    PUBLIC_KEY_FILENAME,
    SIGNING_KEY_ENV,
    TRUSTED_PUBLIC_KEY_ENV,
    load_or_create_signing_keys,
    load_trusted_public_pem,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_load_or_create_when_first_use_then_pair_written_private_0600_and_warning_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="registry.keys"):
        keys = load_or_create_signing_keys(tmp_path / "keys", env={})

    assert keys.private_key_path == tmp_path / "keys" / PRIVATE_KEY_FILENAME
    assert keys.public_key_path == tmp_path / "keys" / PUBLIC_KEY_FILENAME
    assert _mode(keys.private_key_path) == 0o600
    assert _mode(keys.public_key_path) & 0o022 == 0  # nobody else may replace the trusted key
    assert "generated a development signing key; in production set MARLOPS_SIGNING_KEY" in caplog.text
    signature = keys.load_private().sign(b"payload")
    public = serialization.load_pem_public_key(keys.public_pem())
    assert isinstance(public, Ed25519PublicKey)
    public.verify(signature, b"payload")  # raises InvalidSignature if the pair does not match


def test_load_or_create_when_called_again_then_same_key_and_no_new_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_or_create_signing_keys(tmp_path, env={})
    private_before = first.private_key_path.read_bytes()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="registry.keys"):
        second = load_or_create_signing_keys(tmp_path, env={})
    assert second == first
    assert second.private_key_path.read_bytes() == private_before
    assert _mode(second.private_key_path) == 0o600
    assert "generated" not in caplog.text


def test_load_or_create_when_public_key_deleted_then_rederived_from_private(tmp_path: Path) -> None:
    keys = load_or_create_signing_keys(tmp_path, env={})
    public_before = keys.public_pem()
    keys.public_key_path.unlink()
    assert load_or_create_signing_keys(tmp_path, env={}).public_pem() == public_before


def test_load_or_create_when_env_names_existing_keys_then_they_are_used_and_nothing_created(tmp_path: Path) -> None:
    production = load_or_create_signing_keys(tmp_path / "vault", env={})
    env = {SIGNING_KEY_ENV: str(production.private_key_path), TRUSTED_PUBLIC_KEY_ENV: str(production.public_key_path)}

    keys = load_or_create_signing_keys(tmp_path / "dev", env=env)

    assert keys == production
    assert not (tmp_path / "dev").exists()


def test_load_or_create_when_env_key_file_missing_then_error_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(SigningKeyError, match=f"{SIGNING_KEY_ENV}={missing}: file does not exist"):
        load_or_create_signing_keys(tmp_path / "dev", env={SIGNING_KEY_ENV: str(missing)})
    assert not (tmp_path / "dev").exists()


def test_load_or_create_when_public_key_is_from_another_pair_then_refused(tmp_path: Path) -> None:
    mine = load_or_create_signing_keys(tmp_path / "mine", env={})
    other = load_or_create_signing_keys(tmp_path / "other", env={})
    env = {TRUSTED_PUBLIC_KEY_ENV: str(other.public_key_path)}
    with pytest.raises(SigningKeyError, match="is not the public half of"):
        load_or_create_signing_keys(mine.private_key_path.parent, env=env)


def test_load_private_when_key_is_not_ed25519_then_refused(tmp_path: Path) -> None:
    path = tmp_path / PRIVATE_KEY_FILENAME
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    with pytest.raises(SigningKeyError, match="expected Ed25519"):
        load_or_create_signing_keys(tmp_path, env={})


def test_load_trusted_public_pem_when_no_key_exists_then_error_and_no_key_created(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot read the trusted public key"):
        load_trusted_public_pem(tmp_path, env={})
    assert list(tmp_path.iterdir()) == []


def test_load_trusted_public_pem_when_env_set_then_reads_that_file(tmp_path: Path) -> None:
    keys = load_or_create_signing_keys(tmp_path / "vault", env={})
    pem = load_trusted_public_pem(tmp_path / "elsewhere", env={TRUSTED_PUBLIC_KEY_ENV: str(keys.public_key_path)})
    assert pem == keys.public_pem()
