from collections.abc import Iterator

import httpx
import pytest
from exchange_builders import PAPER_HEADERS

from gateway.serve import ServerHandle, serve_app_in_thread
from paper_exchange.app import create_paper_exchange_app


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
