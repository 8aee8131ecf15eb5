"""Fixtures shared by every test package."""

import functools

import pytest
import sqlalchemy as sa

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@functools.cache
def postgres_unreachable_reason(url: str = POSTGRES_URL) -> str | None:
    """None when PostgreSQL answers at `url`, else why not (tests skip with it)."""
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except (sa.exc.SQLAlchemyError, ImportError) as exc:  # unreachable or no driver: skip with the reason
        return f"PostgreSQL at {url} not reachable: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"


@pytest.fixture
def postgres_url() -> str:
    """The real PostgreSQL of this machine (127.0.0.1:5432, db `test`); the test skips, saying why, without it."""
    why = postgres_unreachable_reason()
    if why is not None:
        pytest.skip(why)
    return POSTGRES_URL
