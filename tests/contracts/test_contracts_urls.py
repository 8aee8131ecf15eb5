"""contracts.urls.redact_url: passwords never reach a log line or an alert text."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.urls import UNPARSABLE_URL, redact_url


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://user:s3cret@127.0.0.1:6379/0", "redis://user:***@127.0.0.1:6379/0"),
    ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://default:s3cret@cache.example.com:6380/2?ssl_cert_reqs=none",
     "rediss://default:***@cache.example.com:6380/2?ssl_cert_reqs=none"),
    ("postgresql+psycopg://u:pw@db:5432/x", "postgresql+psycopg://u:***@db:5432/x"),
    ("redis://user:p@ss@host:6379/0", "redis://user:***@host:6379/0"),  # '@' inside the password
    ("redis://user:pa/ss@host:6379/0", "redis://user:***@host:6379/0"),  # '/' inside the password
    ("redis://user:pa#ss@host/0", "redis://user:***@host/0"),  # '#' inside the password
    ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
])
def test_redact_url_when_password_present_then_replaced_by_stars(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url) and "pw@" not in redact_url(url)


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0",
    "redis://user@127.0.0.1:6379/0",  # a user name is no secret
    "sqlite:///a/b.db",
    "sqlite:////abs/path/audit.db",
    "http://127.0.0.1:5100",
    "redis://host:6379/0?client_name=a@b",  # '@' only in the query
    "unix:///run/redis.sock",
    "",
    "not a url",
])
def test_redact_url_when_no_credentials_then_unchanged(url: str) -> None:
    assert redact_url(url) == url


@pytest.mark.parametrize("value", ["http://[::1", "redis://user:s3cret@[::1/0", None, 42, b"redis://u:p@h"])
def test_redact_url_when_unparsable_then_placeholder_and_never_raises(value: Any) -> None:
    assert redact_url(value) == UNPARSABLE_URL == "<unparsable url>"
