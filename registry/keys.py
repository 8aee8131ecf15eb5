"""Ed25519 keys that sign policy manifests.

Production sets `MARLOPS_SIGNING_KEY` (private key PEM, on the training side only) and
`MARLOPS_TRUSTED_PUBLIC_KEY` (public key PEM, everywhere artifacts are loaded). Without them a
development key pair is created once under a key directory.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from registry.errors import SigningKeyError

logger = logging.getLogger(__name__)

SIGNING_KEY_ENV = "MARLOPS_SIGNING_KEY"
TRUSTED_PUBLIC_KEY_ENV = "MARLOPS_TRUSTED_PUBLIC_KEY"
PRIVATE_KEY_FILENAME = "marlops_signing_key.pem"
PUBLIC_KEY_FILENAME = "marlops_signing_key.pub.pem"


@dataclass(frozen=True)
class SigningKeys:
    private_key_path: Path
    public_key_path: Path

    def load_private(self) -> Ed25519PrivateKey:
        try:
            data = self.private_key_path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"{self.private_key_path}: cannot read the signing key: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"{self.private_key_path}: not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{self.private_key_path}: signing key is {type(key).__name__}, expected Ed25519")
        return key

    def public_pem(self) -> bytes:
        return read_public_pem(self.public_key_path)


def read_public_pem(path: Path) -> bytes:
    """Read and validate an Ed25519 public key PEM; returns its bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the trusted public key: {exc}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SigningKeyError(f"{path}: not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: public key is {type(key).__name__}, expected Ed25519")
    return data


def load_trusted_public_pem(key_dir: Path, env: Mapping[str, str] | None = None) -> bytes:
    """The public key that verifiers trust, without ever creating a key (for serving / gateway hosts)."""
    environ = os.environ if env is None else env
    override = environ.get(TRUSTED_PUBLIC_KEY_ENV)
    return read_public_pem(Path(override) if override else key_dir / PUBLIC_KEY_FILENAME)


def load_or_create_signing_keys(key_dir: Path, env: Mapping[str, str] | None = None) -> SigningKeys:
    """Locate the signing key pair, creating a development pair in `key_dir` on first use.

    A path given by environment variable must exist: a production host never silently falls back
    to a freshly generated key, because artifacts signed by it would be refused everywhere else.
    """
    environ = os.environ if env is None else env
    private_override = environ.get(SIGNING_KEY_ENV)
    public_override = environ.get(TRUSTED_PUBLIC_KEY_ENV)
    private_path = Path(private_override) if private_override else key_dir / PRIVATE_KEY_FILENAME
    public_path = Path(public_override) if public_override else key_dir / PUBLIC_KEY_FILENAME

    if private_override and not private_path.is_file():
        raise SigningKeyError(f"{SIGNING_KEY_ENV}={private_path}: file does not exist")
    if public_override and not public_path.is_file():
        raise SigningKeyError(f"{TRUSTED_PUBLIC_KEY_ENV}={public_path}: file does not exist")

    if not private_path.exists():
        _create_private_key(private_path)
    else:
        _warn_if_readable_by_others(private_path)
    keys = SigningKeys(private_key_path=private_path, public_key_path=public_path)
    if not public_path.exists():
        _write_public_key(public_path, keys.load_private().public_key())
    _check_pair_matches(keys)
    return keys


def _create_private_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    # O_EXCL: when two processes start at once, exactly one creates the key and the other reads it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(path, 0o600)  # the umask may have narrowed os.open's mode, never widened it; make it exact
    logger.warning(
        "generated a development signing key; in production set %s (key written to %s)", SIGNING_KEY_ENV, path
    )


def _write_public_key(path: Path, public_key: Ed25519PublicKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = public_key.public_bytes(
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(pem)
    os.replace(tmp, path)
    logger.info("wrote the trusted public key to %s", path)


def _warn_if_readable_by_others(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("%s: signing key is accessible to group/others (mode %o); chmod 600 it", path, mode)


def _check_pair_matches(keys: SigningKeys) -> None:
    derived = (
        keys.load_private()
        .public_key()
        .public_bytes(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
    )
    trusted = serialization.load_pem_public_key(keys.public_pem())
    assert isinstance(trusted, Ed25519PublicKey)  # public_pem() already refused anything else
    if trusted.public_bytes(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw) != derived:
        raise SigningKeyError(
            f"{keys.public_key_path} is not the public half of {keys.private_key_path}; "
            "artifacts signed with this key would be refused by verifiers trusting that public key"
        )
