"""The API tokens file: who may call the gateway, with which role; tokens are stored hashed only.

    tokens:
      - principal: rita
        role: risk_officer
        token_sha256: 3f0c...   # gateway.tokens.hash_token(token); the token itself is never stored

YAML (.yaml/.yml, or any other suffix) or JSON (.json). `marlops token create` writes it.

The token store shared by every marlops service is `<MARLOPS_HOME>/auth/tokens.yaml` (this format);
`bootstrap_token_store` fills an absent or empty one with an admin, a risk_officer and a trader
token whose raw values go to `<MARLOPS_HOME>/tokens/<role>.token` (0600, directory 0700), and
`read_token_file` reads such a file back, refusing one that others could read.
"""

import json
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import GatewayError
from gateway.settings import ROLES, ApiToken, Role
from gateway.tokens import new_token

logger = logging.getLogger(__name__)


class TokenFileError(GatewayError):
    """The tokens file cannot be read, or one of its entries is not a valid hashed grant."""


def _parse(path: Path, text: str) -> Any:
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TokenFileError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc


def _entry(path: Path, index: int, raw: Any) -> ApiToken:
    where = f"{path}: tokens[{index}]"
    if not isinstance(raw, dict):
        raise TokenFileError(f"{where}: expected a mapping with principal, role, token_sha256; got {raw!r:.80}")
    if "token" in raw:
        # A plaintext token in a file is a leaked token; refuse it rather than hash it silently.
        raise TokenFileError(
            f"{where} ({raw.get('principal', '?')!r}): has a plaintext 'token' field; tokens are stored "
            "hashed only. Remove the entry, treat that token as leaked, and create a new one with "
            "`marlops token create`"
        )
    try:
        return ApiToken.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors())
        raise TokenFileError(f"{where}: {problems} (roles: {', '.join(ROLES)}; token_sha256: 64 lower-case "
                             "hex digits)") from exc


def load_tokens(path: Path | str) -> tuple[ApiToken, ...]:
    """The grants in `path`; a missing file, a plaintext token, a bad role or a duplicate hash is an error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read the tokens file: {exc}") from exc
    document = _parse(path, text)
    if document is None:
        return ()
    if not isinstance(document, dict) or set(document) - {"tokens"}:
        raise TokenFileError(f"{path}: expected a mapping with one key, 'tokens' (a list of grants)")
    entries = document.get("tokens") or []
    if not isinstance(entries, list):
        raise TokenFileError(f"{path}: 'tokens' must be a list of grants")
    grants = tuple(_entry(path, i, raw) for i, raw in enumerate(entries))
    seen: dict[str, int] = {}
    for i, grant in enumerate(grants):
        if grant.token_sha256 in seen:
            first = seen[grant.token_sha256]
            raise TokenFileError(f"{path}: tokens[{i}]: the same token hash is already tokens[{first}]")
        seen[grant.token_sha256] = i
    logger.info("loaded %d API token(s) from %s", len(grants), path)
    return grants


def _dump(path: Path, grants: tuple[ApiToken, ...]) -> str:
    document = {"tokens": [g.model_dump() for g in grants]}
    if path.suffix == ".json":
        return json.dumps(document, indent=2) + "\n"
    return yaml.safe_dump(document, sort_keys=False)


def append_token(path: Path | str, grant: ApiToken) -> tuple[ApiToken, ...]:
    """Add `grant` to the file (created if absent) and return all grants now in it.

    Written to a temporary file and renamed over the old one, so a crash leaves either the old
    file or the new one; readable by the owner only (hashes are not secrets, but they do say who
    may act)."""
    path = Path(path)
    existing = load_tokens(path) if path.exists() else ()
    if any(g.token_sha256 == grant.token_sha256 for g in existing):
        raise TokenFileError(f"{path}: this token hash is already in the file")
    grants = (*existing, grant)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(_dump(path, grants))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("added a %s token for %s to %s", grant.role, grant.principal, path)
    return grants


# --- The local token store: bootstrap on first start, raw tokens in owner-only files ---------------

# The roles a fresh store gets a token for, and the principal each token speaks for.
BOOTSTRAP_PRINCIPALS: dict[Role, str] = {
    "admin": "local-admin",
    "risk_officer": "local-risk-officer",
    "trader": "local-trader",
    "viewer": "local-viewer",  # read-only: the alert context webhook, dashboards, status
}
RAW_TOKEN_SUFFIX = ".token"


@dataclass(frozen=True)
class BootstrapResult:
    """What `bootstrap_token_store` did. `created` is False when the store already held tokens (then
    nothing was written and `token_files` is empty). Never holds a raw token."""

    store: Path
    raw_dir: Path
    created: bool
    grants: tuple[ApiToken, ...]
    token_files: dict[str, Path] = field(default_factory=dict)


def raw_token_path(raw_dir: Path | str, role: str) -> Path:
    """Where the local raw token of `role` lives: `<raw_dir>/<role>.token`."""
    return Path(raw_dir) / f"{role}{RAW_TOKEN_SUFFIX}"


def _private_dir(path: Path) -> None:
    """Create `path` (and parents) owner-only (0700); tighten an existing one that is group/world-accessible."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("%s was accessible by group/others (%04o); restricting it to the owner (0700)", path, mode)
        os.chmod(path, 0o700)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` through a file that is 0600 from the moment it exists (os.open with the
    mode, O_EXCL, no chmod afterwards), then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_store(path: Path, grants: tuple[ApiToken, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, _dump(path, grants))


def bootstrap_token_store(store: Path | str, raw_dir: Path | str) -> BootstrapResult:
    """On first start (no store, or a store without any token) create one token each for admin,
    risk_officer, trader and viewer: only their SHA-256 goes into `store`; each raw token goes to
    `<raw_dir>/<role>.token`, owner-only (0600, in a 0700 directory). A store that already holds
    tokens is left exactly as it is (idempotent). Raw tokens are never logged; their paths are.

    The raw files are written before the store: a crash in between leaves no store, so the next
    start simply bootstraps again (replacing the raw files) instead of locking everyone out."""
    store, raw_dir = Path(store), Path(raw_dir)
    existing = load_tokens(store) if store.exists() else ()
    if existing:
        logger.info("token store %s holds %d token(s); not bootstrapping", store, len(existing))
        return BootstrapResult(store=store, raw_dir=raw_dir, created=False, grants=existing)
    _private_dir(raw_dir)
    _private_dir(store.parent)
    grants: list[ApiToken] = []
    files: dict[str, Path] = {}
    for role, principal in BOOTSTRAP_PRINCIPALS.items():
        token, grant = new_token(principal, role)
        path = raw_token_path(raw_dir, role)
        if path.exists():
            logger.warning("replacing %s: the token store %s had no tokens, so the old token there is void",
                           path, store)
        _write_private(path, token + "\n")
        grants.append(grant)
        files[role] = path
    _write_store(store, tuple(grants))
    for role, path in files.items():
        logger.warning("created a %s token for %s: its hash is in %s, the token itself in %s (owner-only)",
                       role, BOOTSTRAP_PRINCIPALS[role], store, path)
    return BootstrapResult(store=store, raw_dir=raw_dir, created=True, grants=tuple(grants), token_files=files)


def read_local_token(raw_dir: Path | str, roles: Sequence[str]) -> str | None:
    """The raw token of the first of `roles` that has a file in `raw_dir` (checked like `read_token_file`);
    None when none has. How local CLI processes find the token they act with."""
    for role in roles:
        path = raw_token_path(raw_dir, role)
        if path.is_file():
            return read_token_file(path)
    return None


def read_token_file(path: Path | str) -> str:
    """The raw token in `path`. Like ssh with a private key, refuses a file that someone other than
    its owner could read (group/world permission bits), or that belongs to another user."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read the token file: {exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise TokenFileError(f"{path}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise TokenFileError(
            f"{path}: permissions {mode:04o} are too open: a token file must be readable by its owner only. "
            f"This token may have been seen by others; run `chmod 600 {path}`, or better, create a new token "
            "and delete this one"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise TokenFileError(f"{path}: owned by uid {st.st_uid}, not by you (uid {os.getuid()}); refusing it")
    token = path.read_text(encoding="utf-8").strip()
    if not token or len(token.split()) != 1:
        raise TokenFileError(f"{path}: expected exactly one token on one line")
    return token
