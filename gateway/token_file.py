"""The API tokens file: who may call the gateway, with which role; tokens are stored hashed only.

    tokens:
      - principal: rita
        role: risk_officer
        token_sha256: 3f0c...   # gateway.tokens.hash_token(token); the token itself is never stored

YAML (.yaml/.yml, or any other suffix) or JSON (.json). `marlops token create` writes it.
"""

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import GatewayError
from gateway.settings import ROLES, ApiToken

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
