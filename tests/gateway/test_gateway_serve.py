import socket

import httpx
import pytest
from fastapi import FastAPI

from gateway.serve import ServerStartError, free_port, serve_app_in_thread


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def test_serve_when_port_zero_then_bound_port_reported_and_stop_closes_it() -> None:
    handle = serve_app_in_thread(hello_app(), "127.0.0.1", 0)
    assert handle.port > 0 and handle.running
    assert httpx.get(handle.url + "/hello").json() == {"hello": "world"}
    handle.stop()
    assert not handle.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url + "/hello")


def test_serve_when_port_taken_then_start_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(ServerStartError, match="failed to start"):
            serve_app_in_thread(hello_app(), "127.0.0.1", taken.getsockname()[1])


def test_free_port_when_called_then_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname()[1] == port
