"""Run an ASGI app with uvicorn in a background thread (tests, the embedded stack).

    handle = serve_app_in_thread(app, "127.0.0.1", free_port())
    ... httpx.get(handle.url + "/healthz") ...
    handle.stop()

Readiness is polled (uvicorn's `started` flag, set after the lifespan startup completes and the
socket listens); a startup failure (lifespan error, port taken) raises instead of hanging.
"""

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from gateway.errors import GatewayError

logger = logging.getLogger(__name__)


class ServerStartError(GatewayError):
    """The server thread ended or timed out before it was ready to serve."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerHandle:
    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask uvicorn to shut down (runs the lifespan shutdown) and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            # Connections that would not close: force it rather than leak a listening thread.
            self._server.force_exit = True
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise ServerStartError(f"server on {self.url} did not stop within {2 * timeout_s:.0f}s")

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve_app_in_thread(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout_s: float = 30.0,
    log_level: str = "warning",
) -> ServerHandle:
    """Start `app` on host:port (port 0 = any free port) and return once it accepts requests."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def _run() -> None:
        try:
            server.run()
        except BaseException as exc:  # SystemExit on a failed startup, OSError on a taken port
            failure.append(exc)

    thread = threading.Thread(target=_run, name=f"uvicorn-{host}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            why = repr(failure[0]) if failure else "thread ended"
            raise ServerStartError(f"server on {host}:{port} failed to start ({why}); see the log above")
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            raise ServerStartError(f"server on {host}:{port} not ready after {startup_timeout_s:.0f}s")
        time.sleep(0.02)
    bound = port
    if port == 0:
        bound = int(server.servers[0].sockets[0].getsockname()[1])
    handle = ServerHandle(server, thread, host, bound)
    logger.info("serving on %s", handle.url)
    return handle
