"""Start, watch and stop the system's processes (`make up`): each in its own session, logging to a file.

Each process gets its own process group, so stopping it also stops whatever it started (Triton's
backend stubs, uvicorn workers). Stop = SIGTERM to the group, wait, then SIGKILL; `stop_all`
goes in reverse start order and reports anything that had to be killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from marlops.errors import StackError
from marlops.net import wait_until

logger = logging.getLogger(__name__)


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 120.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(list(self.argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=dict(self.env) if self.env is not None else None, cwd=self.cwd,
                                         start_new_session=True)
        if self.ready is None:
            return
        try:
            wait_until(lambda: self._ready_or_dead(), timeout_s=self.ready_timeout_s,
                       what=f"{self.name} to become ready (log: {self.log_path})")
        except StackError:
            self.stop()
            raise
        if not self.alive():
            code = self.proc.returncode if self.proc is not None else None
            self.stop()
            raise StackError(f"{self.name} exited with code {code} while starting; last lines of {self.log_path}:\n"
                             f"{tail(self.log_path)}")

    def _ready_or_dead(self) -> bool:
        if not self.alive():
            return True  # start() reports the exit
        try:
            return bool(self.ready and self.ready())
        except Exception:  # a probe that fails means "not yet"
            return False

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop the process group; True when it exited on SIGTERM, False when it had to be killed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return True
        clean = True
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s of SIGTERM: killing it", self.name, timeout_s)
                clean = False
        # Anything left in its group (children that ignored the signal) goes too.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=10)
        return clean


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: Path, lines: int = 20) -> str:
    if not path.is_file():
        return "<no log>"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ProcessGroup:
    def __init__(self, on_change: Callable[[ProcessGroup], None] | None = None) -> None:
        self.processes: list[ManagedProcess] = []
        self._on_change = on_change

    def start(self, process: ManagedProcess) -> ManagedProcess:
        logger.info("starting %s", process.name)
        t0 = time.monotonic()
        # Tracked before it is ready: an interrupted or failed start still stops it.
        self.processes.append(process)
        try:
            process.start()
        except BaseException:
            self.processes.remove(process)
            process.stop()
            raise
        if self._on_change is not None:
            self._on_change(self)
        logger.info("%s is up (pid %s, %.1f s)", process.name, process.pid, time.monotonic() - t0)
        return process

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.processes if not p.alive()]

    def stop_all(self) -> list[str]:
        """Stop in reverse order; names of processes that had to be killed."""
        killed = []
        for process in reversed(self.processes):
            logger.info("stopping %s", process.name)
            if not process.stop():
                killed.append(process.name)
        self.processes.clear()
        return killed
