"""The crash test's processes: the paper exchange (the broker, up for the whole run) and the gateway
(killed with SIGKILL and restarted with the same arguments, many times). Each is a real process
started with this interpreter; its output goes to a log file whose tail every startup error quotes.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from contracts.paper_account import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET
from marlops.errors import MarlopsError

logger = logging.getLogger(__name__)

BROKER_HEADERS = {"APCA-API-KEY-ID": LOCAL_PAPER_KEY_ID, "APCA-API-SECRET-KEY": LOCAL_PAPER_SECRET}
# The crash test is about kills, not throttling: the exchange must not answer 429 to a fast replay.
EXCHANGE_RATE_LIMIT_PER_MIN = 10_000_000


class ChaosError(MarlopsError):
    """The crash test could not run (a process would not start, a service would not answer)."""


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(log is empty)"


class ManagedProcess:
    """One service process that can be started, killed (SIGKILL), stopped (SIGTERM) and started
    again with the same command line; ready = `ready_path` answers 200."""

    def __init__(self, name: str, command: Sequence[str], *, url: str, ready_path: str, log_path: Path,
                 ready_headers: dict[str, str] | None = None, startup_timeout_s: float = 60.0,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.command = list(command)
        self.url = url
        self.ready_path = ready_path
        self.log_path = log_path
        self._ready_headers = ready_headers or {}
        self._startup_timeout_s = startup_timeout_s
        self._env = env  # None: this process's environment
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.alive():
            raise ChaosError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n=== chaos: {self.name} start #{self.starts} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self._env)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        probe = f"{self.url}{self.ready_path}"
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc is not None else None
                raise ChaosError(f"{self.name} exited with code {code} while starting; log {self.log_path}:\n"
                                 f"{log_tail(self.log_path)}")
            try:
                if httpx.get(probe, headers=self._ready_headers, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.05)  # polling readiness
        self.kill()
        raise ChaosError(f"{self.name} not ready at {probe} after {self._startup_timeout_s:.0f}s; "
                         f"log {self.log_path}:\n{log_tail(self.log_path)}")

    def kill(self) -> bool:
        """SIGKILL, then wait until the process is gone. True if it was alive when the signal went."""
        proc = self._proc
        if proc is None:
            return False
        was_alive = proc.poll() is None
        if was_alive:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return was_alive

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (a graceful shutdown), SIGKILL if it does not end in time; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs of SIGTERM; killing it", self.name, timeout_s)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
        self._proc = None
        return proc.returncode


def exchange_process(port: int, log_path: Path, *, seed: int, initial_cash: float) -> ManagedProcess:
    return ManagedProcess(
        "paper exchange",
        [sys.executable, "-m", "paper_exchange", "--host", "127.0.0.1", "--port", str(port),
         "--initial-cash", str(initial_cash), "--seed", str(seed),
         "--rate-limit-per-min", str(EXCHANGE_RATE_LIMIT_PER_MIN), "--log-level", "warning"],
        url=f"http://127.0.0.1:{port}", ready_path="/v2/clock", log_path=log_path, ready_headers=BROKER_HEADERS,
    )


def gateway_process(port: int, log_path: Path, *, broker_url: str, audit_url: str, audit_table: str,
                    risk_config: Path, extra_args: Sequence[str] = ()) -> ManagedProcess:
    # The crash test is about kills, not auth: the gateway runs open on loopback (--insecure-no-auth), and
    # its broker keys go through the environment, never the command line.
    command = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port),
               "--broker-url", broker_url, "--audit-url", audit_url, "--audit-table", audit_table,
               "--risk-config", str(risk_config), "--insecure-no-auth", "--log-level", "warning", *extra_args]
    env = dict(os.environ, APCA_API_KEY_ID=LOCAL_PAPER_KEY_ID, APCA_API_SECRET_KEY=LOCAL_PAPER_SECRET)
    return ManagedProcess("gateway", command, url=f"http://127.0.0.1:{port}", ready_path="/healthz",
                          log_path=log_path, env=env)
