"""What `marlops bench` measures about processes: resident memory of each service process, and a profile of
the trading service's bar loop.

RSS is read from /proc (Linux; no dependency): the bench process and every process it started, found by
walking parent ids, each named by its command line. The gateway of the bench's serving stack runs as a
thread of the bench process (marlops.stack.ServingStack), so its memory is in the bench process's number,
and the key says so; a gateway started as its own process (`python -m gateway`) is reported on its own.
"""

from __future__ import annotations

import cProfile
import os
import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

_PROC = Path("/proc")

# (key, substring of the command line), first match wins; the bench process itself is keyed separately.
_ROLES: tuple[tuple[str, str], ...] = (
    ("triton_python_backend_stubs", "triton_python_backend_stub"),
    ("triton_server", "tritonserver"),
    ("paper_exchange", "paper_exchange"),
    ("gateway", "-m gateway"),
    ("market_data_server", "market-data"),
)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process ended between listing and reading
        return None


def rss_mb(pid: int) -> float | None:
    status = _read(_PROC / str(pid) / "status")
    if status is None:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0  # kB
    return 0.0  # a zombie has no VmRSS line


def _cmdline(pid: int) -> str:
    raw = _read(_PROC / str(pid) / "cmdline")
    return (raw or "").replace("\x00", " ").strip()


def descendants(root: int) -> list[int]:
    """Every live process under `root` (children, grandchildren, ...), from /proc/<pid>/stat parent ids."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read(entry / "stat")
        if stat is None:
            continue
        # pid (comm) state ppid ...: comm may hold spaces or parentheses, so split after the last ')'
        fields = stat.rsplit(")", 1)[-1].split()
        children[int(fields[1])].append(int(entry.name))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def available() -> bool:
    return (_PROC / str(os.getpid()) / "status").is_file()


def process_rss(self_key: str) -> dict[str, float]:
    """RSS in MB per role now: `self_key` = this process; the others by command line (summed per role)."""
    if not available():
        return {}
    own = rss_mb(os.getpid())
    sizes: dict[str, float] = {self_key: own or 0.0}
    counts: dict[str, int] = defaultdict(int)
    for pid in descendants(os.getpid()):
        cmd = _cmdline(pid)
        role = next((key for key, needle in _ROLES if needle in cmd), None)
        value = rss_mb(pid)
        if role is None or value is None:
            continue
        sizes[role] = sizes.get(role, 0.0) + value
        counts[role] += 1
    if "triton_python_backend_stubs" in sizes:
        sizes["triton_python_backend_stub_processes"] = float(counts["triton_python_backend_stubs"])
    return sizes


class RssPeaks:
    """The largest RSS seen per role over the samples taken (one per bar)."""

    def __init__(self, self_key: str) -> None:
        self.self_key = self_key
        self.peak: dict[str, float] = {}
        self.samples = 0

    def sample(self) -> None:
        for key, value in process_rss(self.self_key).items():
            self.peak[key] = max(self.peak.get(key, 0.0), value)
        self.samples += 1

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: round(v, 1) for k, v in sorted(self.peak.items())
                               if k != "triton_python_backend_stub_processes"}
        if "triton_python_backend_stub_processes" in self.peak:
            out["triton_python_backend_stub_processes"] = int(self.peak["triton_python_backend_stub_processes"])
        if "triton_server" in out:
            out["triton_total"] = round(out["triton_server"] + out.get("triton_python_backend_stubs", 0.0), 1)
        return out


def top_functions(profile: cProfile.Profile, *, bars: int, limit: int = 15, by: str = "cumulative",
                  project_only: bool = False) -> list[dict[str, Any]]:
    """The `limit` functions with the most cumulative (or own) time, per bar, file paths relative to the project;
    `project_only`: this project's code only (not the libraries it calls)."""
    stats = pstats.Stats(profile)
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    rows = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        in_project = filename.startswith(root) and f"{os.sep}.venv{os.sep}" not in filename
        if project_only and not in_project:
            continue
        where = filename.replace(root, "") if in_project else _short(filename)
        rows.append({"function": f"{where}:{line}({name})" if line else name,
                     "cumulative_ms_per_bar": round(cumulative * 1000 / max(bars, 1), 3),
                     "own_ms_per_bar": round(own * 1000 / max(bars, 1), 3),
                     "calls_per_bar": round(calls / max(bars, 1), 1)})
    rows.sort(key=lambda r: r["cumulative_ms_per_bar" if by == "cumulative" else "own_ms_per_bar"], reverse=True)
    return rows[:limit]


def _short(filename: str) -> str:
    marker = "site-packages" + os.sep
    if marker in filename:
        return filename.split(marker, 1)[1]
    return filename
