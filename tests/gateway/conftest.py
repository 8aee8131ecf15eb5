import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_builders import PAPER_HEADERS

from gateway.audit.store import AuditStore
from gateway.brokers.paper_exchange import create_paper_exchange_app
from gateway.serve import ServerHandle, serve_app_in_thread


@pytest.fixture
def paper_exchange() -> Iterator[ServerHandle]:
    """The real paper exchange on a free port, in a uvicorn thread."""
    handle = serve_app_in_thread(create_paper_exchange_app(initial_cash=1_000_000.0))
    yield handle
    handle.stop()


@pytest.fixture
def exchange_http(paper_exchange: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=paper_exchange.url, headers=PAPER_HEADERS, timeout=10.0) as client:
        yield client


@pytest.fixture
def audit_store(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit' / 'audit.db'}")
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    """An audit store on each backend: SQLite in tmp_path, and a throwaway table on the real PostgreSQL."""
    if request.param == "sqlite":
        s = AuditStore(f"sqlite:///{tmp_path / 'nested' / 'audit.db'}")
        yield s
        s.close()
        return
    url: str = request.getfixturevalue("postgres_url")
    s = AuditStore(url, table=f"gateway_audit_test_{uuid.uuid4().hex[:12]}")
    yield s
    s.drop()
    s.close()
