"""A real `dagster-webserver` for tests: a private DAGSTER_HOME, a free port, GraphQL over httpx, always stopped.

    home = dagster_home(tmp / "dagster")                      # dagster.yaml: no telemetry, no community pop-up
    with running_webserver(home, marlops_home=tmp / "marlops", log_path=tmp / "webserver.log") as server:
        server.graphql("{ assetNodes { assetKey { path } } }")

The webserver loads the code location `orchestration.definitions` (the module workspace.yaml names) in its own
code-server child, which it stops when it is stopped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from child_process import stop_child
from polling import wait_for

REPO = Path(__file__).resolve().parents[2]
MODULE = "orchestration.definitions"
# Loading the code location imports torch, mlflow and the trading stack: far slower than a plain server start.
START_TIMEOUT_S = 180.0

# No telemetry; no "Join the Dagster community" dialog over the page (it would cover the RFC in screenshots).
DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"

LOCATION_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message stack } } } }
    ... on PythonError { message } } }
"""


def dagster_home(path: Path) -> Path:
    """`path` made a DAGSTER_HOME: the directory with a dagster.yaml (DAGSTER_YAML)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(DAGSTER_YAML)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Webserver:
    url: str  # http://127.0.0.1:<port>
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of a GraphQL answer; AssertionError with the errors when there are any."""
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                              timeout=60.0)
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), f"GraphQL errors: {body['errors']}"
        return dict(body["data"])


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_webserver(home: Path, *, marlops_home: Path, log_path: Path) -> Iterator[Webserver]:
    """`dagster-webserver -m orchestration.definitions` on a free port of 127.0.0.1, run from the repository root
    with DAGSTER_HOME=`home`, MARLOPS_ENV=test and MARLOPS_HOME=`marlops_home`; yielded once `/server_info`
    answers and the code location has loaded (AssertionError with the load error or the server's log otherwise).
    Stopped (SIGTERM, then SIGKILL) on exit, whatever happened."""
    port = free_port()
    env = dict(os.environ, DAGSTER_HOME=str(home), MARLOPS_ENV="test", MARLOPS_HOME=str(marlops_home))
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-m", MODULE, "-h", "127.0.0.1",
               "-p", str(port)]
    server = Webserver(url=f"http://127.0.0.1:{port}", log_path=log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"dagster-webserver exited with {proc.returncode}:\n{server.log()}")
                return _answers(server.url)

            wait_for(up, f"dagster-webserver to answer /server_info on port {port}", timeout_s=START_TIMEOUT_S)
            entries = wait_for(lambda: _loaded_locations(server), f"code location {MODULE} to load",
                               timeout_s=START_TIMEOUT_S)
            for entry in entries:
                loaded = entry["locationOrLoadError"]
                assert loaded["__typename"] == "RepositoryLocation", (
                    f"code location {entry['name']} failed to load: {loaded.get('message')}\n{loaded.get('stack')}")
            yield server
        finally:
            stop_child(proc)


def _loaded_locations(server: Webserver) -> list[dict[str, Any]] | None:
    workspace = server.graphql(LOCATION_QUERY)["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", f"no workspace: {workspace.get('message')}"
    entries = workspace["locationEntries"]
    if not entries or any(entry["loadStatus"] != "LOADED" for entry in entries):
        return None
    return list(entries)
