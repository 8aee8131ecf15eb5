"""Start and control the real `tritonserver` shipped in the nvidia-pytriton wheel.

The wheel's binary is not meant to run standalone; what makes it work on a CPU-only host
(checked with nvidia-pytriton 0.7.0 / Triton 2.51.0):
  * a writable backend directory holding a copy of `backends/python` plus the python backend
    stub built for the running Python (`python_backend_stubs/<major.minor>/triton_python_backend_stub`)
    next to `libtriton_python.so`;
  * LD_LIBRARY_PATH=<site-packages>/nvidia_pytriton.libs (bundled libcudart, libarchive, ...);
  * the venv's bin first on PATH: the stub embeds the system libpython and finds its prefix (and
    so numpy/torch) through `python3` on PATH; PYTHONPATH alone is not enough.
NVML/DCGM warnings in the log on a CPU host are harmless.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from serving.errors import (
    ModelLoadError,
    TritonNotFoundError,
    TritonStartError,
    TritonUnavailableError,
)

logger = logging.getLogger(__name__)

_STUB_NAME = "triton_python_backend_stub"
_LOG_TAIL_LINES = 40
_POLL_S = 0.25
# Loading a model starts a stub process that imports torch: seconds on a busy 2-core host.
_LOAD_TIMEOUT_S = 300.0
_RUNNING: weakref.WeakSet[TritonServer] = weakref.WeakSet()


def pytriton_root() -> Path:
    """The installed `pytriton` package folder (holds tritonserver/, its backends and stubs)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonNotFoundError(
            "package nvidia-pytriton is not installed; `pip install nvidia-pytriton==0.7.0` ships tritonserver"
        )
    return Path(spec.origin).resolve().parent


def find_tritonserver() -> Path:
    """Path of the `tritonserver` binary inside the installed nvidia-pytriton wheel."""
    binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise TritonNotFoundError(f"{binary} missing or not executable; reinstall nvidia-pytriton==0.7.0")
    return binary


def prepare_backend_directory(workdir: Path) -> Path:
    """Writable copy of the python backend with this Python's stub beside it; returns the backends folder."""
    tritonserver = pytriton_root() / "tritonserver"
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = tritonserver / "python_backend_stubs" / python_version / _STUB_NAME
    if not stub.is_file():
        raise TritonNotFoundError(f"nvidia-pytriton ships no python backend stub for Python {python_version} ({stub})")
    backends = Path(workdir) / "backends"
    target = backends / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in (tritonserver / "backends" / "python").iterdir():
        if source.is_file():
            shutil.copy2(source, target / source.name)
    shutil.copy2(stub, target / _STUB_NAME)
    return backends


def pick_free_ports(count: int) -> list[int]:
    """Ports the OS reports free right now (all held open together so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class TritonServer:
    """One tritonserver process with explicit model control. Use as a context manager."""

    def __init__(
        self,
        model_repository: Path,
        *,
        http_port: int,
        grpc_port: int,
        metrics_port: int,
        workdir: Path,
        address: str = "127.0.0.1",
        log_verbose: int = 0,
        exit_timeout_s: int = 10,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.workdir = Path(workdir).resolve()
        self.address = address
        self.log_verbose = log_verbose
        self.exit_timeout_s = exit_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._http: httpx.Client | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """host:port, the form tritonclient.grpc expects."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.workdir / "tritonserver.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 120) -> TritonServer:
        """Start tritonserver and wait until its HTTP, gRPC and metrics endpoints answer."""
        if self.is_running():
            return self
        if not self.model_repository.is_dir():
            raise TritonStartError(f"model repository {self.model_repository} is not a directory")
        command = self.command()
        binary = command[0]
        logger.info(
            "starting tritonserver (http %s, grpc %s, metrics %s), log %s",
            self.http_port,
            self.grpc_port,
            self.metrics_port,
            self.log_path,
        )
        log_file = self.log_path.open("ab")
        try:
            # Own session: stop() can signal the server and its stub processes as one group.
            self._process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=self.environment(), start_new_session=True
            )
        except OSError as exc:
            log_file.close()
            raise TritonStartError(f"cannot execute {binary}: {exc}") from exc
        self._log_file = log_file
        self._http = httpx.Client(base_url=self.http_url, timeout=_LOAD_TIMEOUT_S)
        _RUNNING.add(self)
        try:
            self._wait_until_serving(timeout_s)
        except TritonStartError:
            self.stop()
            raise
        logger.info("tritonserver pid %s serving at %s / %s", self.pid, self.http_url, self.grpc_url)
        return self

    def load_model(self, name: str) -> None:
        """Load (or reload) `name` from the repository; raise ModelLoadError with Triton's reason."""
        logger.info("loading model %s", name)
        response = self._post(f"/v2/repository/models/{name}/load")
        if response.status_code != 200:
            raise ModelLoadError(f"model '{name}' failed to load: {triton_error_text(response)}")
        logger.info("model %s loaded", name)

    def unload_model(self, name: str, timeout_s: float = 60) -> None:
        """Unload every version of `name` and wait until it no longer reports ready."""
        logger.info("unloading model %s", name)
        response = self._post(f"/v2/repository/models/{name}/unload")
        if response.status_code != 200:
            raise ModelLoadError(f"model '{name}' failed to unload: {triton_error_text(response)}")
        deadline = time.monotonic() + timeout_s
        while self.is_model_ready(name):
            if time.monotonic() > deadline:
                raise ModelLoadError(f"model '{name}' still ready {timeout_s}s after unload")
            self._pause()

    def is_model_ready(self, name: str, version: str | int | None = None) -> bool:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "") + "/ready"
        return self._request("GET", path).status_code == 200

    def repository_index(self) -> list[dict[str, str]]:
        """Triton's view of the repository: name, version, state (and reason when not ready)."""
        response = self._post("/v2/repository/index")
        if response.status_code != 200:
            raise ModelLoadError(f"repository index failed: {triton_error_text(response)}")
        index: list[dict[str, str]] = response.json()
        return index

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if not self.log_path.is_file():
            return "<no log written>"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM, wait for a clean exit, then SIGKILL the process group."""
        process, self._process = self._process, None
        if self._http is not None:
            self._http.close()
            self._http = None
        if process is not None and process.poll() is None:
            logger.info("stopping tritonserver pid %s", process.pid)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "tritonserver pid %s ignored SIGTERM for %ss; killing its process group", process.pid, timeout_s
                )
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout_s)
            logger.info("tritonserver pid %s exited with %s", process.pid, process.returncode)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _RUNNING.discard(self)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def command(self) -> list[str]:
        """The tritonserver command line for this server (prepares the backend directory in `workdir`). `make up`
        runs it under its own supervisor; `start()` runs it here."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        backends = prepare_backend_directory(self.workdir)
        return [
            str(find_tritonserver()),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            f"--http-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            f"--log-verbose={self.log_verbose}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--exit-on-error=true",
        ]

    def environment(self) -> dict[str, str]:
        """The process environment tritonserver needs (the wheel's libraries, the venv's python for the stubs)."""
        env = dict(os.environ)
        libs = pytriton_root().parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
        return env

    def _wait_until_serving(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        checks = (self.http_url + "/v2/health/ready", self.metrics_url)
        with httpx.Client(timeout=2.0) as probe:
            while True:
                if self._process is None or self._process.poll() is not None:
                    code = self._process.returncode if self._process is not None else None
                    raise TritonStartError(f"tritonserver exited with code {code} during start:\n{self.log_tail()}")
                if all(_answers(probe, url) for url in checks) and self._grpc_accepts():
                    return
                if time.monotonic() > deadline:
                    raise TritonStartError(f"tritonserver not ready after {timeout_s}s:\n{self.log_tail()}")
                self._pause()

    def _grpc_accepts(self) -> bool:
        try:
            with socket.create_connection((self._client_host, self.grpc_port), timeout=1.0):
                return True
        except OSError:
            return False

    def _pause(self) -> None:
        # Waiting on the process doubles as the poll interval and notices an exit at once.
        if self._process is not None:
            try:
                self._process.wait(timeout=_POLL_S)
            except subprocess.TimeoutExpired:
                return
        else:
            time.sleep(_POLL_S)

    def _request(self, method: str, path: str) -> httpx.Response:
        if self._http is None or not self.is_running():
            raise TritonUnavailableError(f"tritonserver is not running (log {self.log_path}); call start() first")
        try:
            return self._http.request(method, path, json={} if method == "POST" else None)
        except httpx.TransportError as exc:
            raise TritonUnavailableError(
                f"tritonserver at {self.http_url} did not answer {method} {path}: {exc}"
            ) from exc

    def _post(self, path: str) -> httpx.Response:
        return self._request("POST", path)


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False


def triton_error_text(response: httpx.Response) -> str:
    """Triton's reason in an error answer (its JSON `error`), else the status and body."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text.strip()}"
    if isinstance(body, dict) and "error" in body:
        return str(body["error"]).strip()
    return f"HTTP {response.status_code}: {body}"


@atexit.register
def _stop_leftover_servers() -> None:
    # A crashed test or script must not leave tritonserver (and its stubs) running.
    for server in list(_RUNNING):
        server.stop(timeout_s=10)
