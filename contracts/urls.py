"""URLs as logs, alerts and exception texts may show them: any password replaced by `***`.

    redact_url("redis://user:s3cret@redis:6379/0")   # "redis://user:***@redis:6379/0"
    redact_url("redis://:s3cret@redis:6379/0")       # "redis://:***@redis:6379/0"
    redact_url("sqlite:///a/b.db")                   # unchanged: no credentials

Pure stdlib and never raises: whatever cannot be read as a URL becomes `<unparsable url>`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["UNPARSABLE_URL", "redact_url"]

UNPARSABLE_URL = "<unparsable url>"
_MASK = "***"
_AUTHORITY_END = "/?#"


def _redact_userinfo(userinfo: str) -> str:
    """`user:pass` -> `user:***`; a userinfo without a password stays as it is."""
    user, sep, _password = userinfo.partition(":")
    return f"{user}:{_MASK}" if sep else userinfo


def _port_then_query_at(netloc: str, tail: str) -> bool:
    """`host:6379/0?name=a@b`: a numeric port, and the '@' only in the query or fragment (no credentials)."""
    port = netloc.rpartition(":")[2]
    cut = min((i for i in (tail.find("?"), tail.find("#")) if i >= 0), default=len(tail))
    return port.isdigit() and "@" not in tail[:cut]


def redact_url(url: str) -> str:
    """`url` with the password of its `user:pass@` part replaced by `***`; URLs without one are returned
    unchanged (character for character). Never raises: an unparsable value gives `<unparsable url>`."""
    try:
        if not isinstance(url, str):
            return UNPARSABLE_URL
        urlsplit(url)  # refuses what is no URL at all (e.g. a broken [IPv6] host)
        if "@" not in url:
            return url
        marker = url.find("://")
        start = marker + 3 if marker >= 0 else (2 if url.startswith("//") else 0)
        head, rest = url[:start], url[start:]
        end = min((i for i in (rest.find(c) for c in _AUTHORITY_END) if i >= 0), default=len(rest))
        netloc, tail = rest[:end], rest[end:]
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            redacted = _redact_userinfo(userinfo)
            return url if redacted == userinfo else f"{head}{redacted}@{hostport}{tail}"
        if ":" in netloc and "@" in tail and not _port_then_query_at(netloc, tail):
            # A password holding '/', '?' or '#' (unescaped) ends the authority early: `user:pa/ss@host`.
            # Secrets first: everything up to the last '@' is taken for the userinfo.
            userinfo, _, after = rest.rpartition("@")
            return f"{head}{_redact_userinfo(userinfo)}@{after}"
        return url
    except Exception:  # noqa: BLE001 - a log helper must never raise
        return UNPARSABLE_URL
