"""Fixtures shared by every test package."""

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from redis_server import REDIS_URL, PrivateRedis, redis_unreachable_reason

from gateway.serve import ServerHandle, serve_app_in_thread
from marlops.chaos_procs import BROKER_HEADERS
from paper_exchange.app import create_paper_exchange_app

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that start real servers (marked `integration`) run first, each kept whole, the rest after: with
    `make test`'s workers a long module started last would leave the other worker idle at the end."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("integration") else 1)


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


@pytest.fixture
def machine_redis() -> str:
    """The machine's Redis URL (MARLOPS_TEST_REDIS_URL, default 127.0.0.1:6379/0); the test skips, saying why,
    without it."""
    why = redis_unreachable_reason(REDIS_URL)
    if why is not None:
        pytest.skip(why)
    return REDIS_URL


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server on a free port, not started yet (the test starts, kills and restarts it); killed at the
    end. The test skips without a redis-server binary."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path / "redis")
    yield server
    server.kill()


@pytest.fixture
def paper_exchange() -> Iterator[ServerHandle]:
    """The real paper exchange on a free port, in a uvicorn thread (gateway and paper_exchange tests)."""
    handle = serve_app_in_thread(create_paper_exchange_app(initial_cash=1_000_000.0))
    yield handle
    handle.stop()


@pytest.fixture
def exchange_http(paper_exchange: ServerHandle) -> Iterator[httpx.Client]:
    """An HTTP client of `paper_exchange` with the paper account's keys."""
    with httpx.Client(base_url=paper_exchange.url, headers=BROKER_HEADERS, timeout=10.0) as client:
        yield client
