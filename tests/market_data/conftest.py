"""The local Alpaca-compatible server (market_data.alpaca_server) for the alpaca-py and AlpacaBarSource tests.

A test module using these sets N_DAYS (days of synthetic bars), WARMUP (bars released before the clock's start)
and MAX_PAGE_SIZE (bars per REST page); the fixtures read them from the requesting module. The server's test hooks
(/_sim/advance, /_sim/withhold, /_sim/state) need the same key headers as REST: `sim_headers`."""

from collections.abc import Iterator

import pandas as pd
import pytest

from gateway.serve import ServerHandle, serve_app_in_thread
from market_data.alpaca_server import LOCAL_KEY_ID, LOCAL_SECRET_KEY, create_app
from market_data.source import load_market


@pytest.fixture(scope="module")
def bars(request: pytest.FixtureRequest) -> pd.DataFrame:
    return load_market("synthetic:planted-alpha", n_symbols=3, n_days=request.module.N_DAYS)


@pytest.fixture()
def start(request: pytest.FixtureRequest, bars: pd.DataFrame) -> pd.Timestamp:
    return pd.Timestamp(sorted(bars["timestamp"].unique())[request.module.WARMUP])


@pytest.fixture()
def server(request: pytest.FixtureRequest, bars: pd.DataFrame, start: pd.Timestamp) -> Iterator[ServerHandle]:
    """The server over `bars` in a uvicorn thread on a free port, its clock at `start`; stopped afterwards."""
    with serve_app_in_thread(create_app(bars, start=start, max_page_size=request.module.MAX_PAGE_SIZE)) as handle:
        yield handle


@pytest.fixture()
def sim_headers() -> dict[str, str]:
    """The key headers the server's REST endpoints and /_sim test hooks require (the local default pair)."""
    return {"APCA-API-KEY-ID": LOCAL_KEY_ID, "APCA-API-SECRET-KEY": LOCAL_SECRET_KEY}
