from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from store_backends import BACKENDS, store_on_backend

from contracts.config import RiskOverlaysConfig
from gateway.app import create_app
from gateway.audit.store import AuditStore
from gateway.directives import DirectiveSource
from gateway.serve import ServerHandle, serve_app_in_thread
from gateway.settings import GatewaySettings


@pytest.fixture
def make_gateway(tmp_path: Path, paper_exchange: ServerHandle) -> Iterator[Callable[..., ServerHandle]]:
    """Starts real gateways (uvicorn threads) over the paper exchange: `factory(directive_source=None, **overrides)`
    with overrides of GatewaySettings; the audit is one SQLite file in tmp_path, so a restarted gateway reads the same
    trail. Every gateway still running is stopped afterwards."""
    handles: list[ServerHandle] = []

    def factory(directive_source: DirectiveSource | None = None, **overrides: Any) -> ServerHandle:
        settings = GatewaySettings(**{
            "risk": RiskOverlaysConfig(),
            "audit_url": f"sqlite:///{tmp_path / 'gateway' / 'audit.db'}",
            "broker_base_url": paper_exchange.url,
            "fill_wait_s": 0.2,
            **overrides,
        })
        handle = serve_app_in_thread(create_app(settings, directive_source=directive_source))
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        if handle.running:
            handle.stop()


@pytest.fixture
def audit_store(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit' / 'audit.db'}")
    yield store
    store.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    """An audit store on each backend: SQLite in tmp_path, and a throwaway table on the real PostgreSQL."""
    yield from store_on_backend(request, AuditStore, tmp_path / "nested" / "audit.db", "gateway_audit_test")
