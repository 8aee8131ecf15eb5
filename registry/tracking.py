"""Where the MLflow registry lives: tracking URIs and the artifact root next to an embedded database."""

from __future__ import annotations

import logging
from pathlib import Path

from registry.errors import RegistryError

logger = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"
MLFLOW_DB_FILENAME = "mlflow.db"
ARTIFACTS_DIRNAME = "mlartifacts"


def tracking_uri_for_state_dir(state_dir: Path) -> str:
    """The embedded default: `sqlite:///<state_dir>/mlflow.db` with an absolute path."""
    return f"{SQLITE_PREFIX}{(state_dir / MLFLOW_DB_FILENAME).resolve()}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, or None for any other backend."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    if not tracking_uri.startswith(SQLITE_PREFIX) or tracking_uri == SQLITE_PREFIX:
        raise RegistryError(f"tracking URI {tracking_uri!r}: use sqlite:///<path to a database file>")
    return Path(tracking_uri[len(SQLITE_PREFIX) :])


def normalize_tracking_uri(tracking_uri: str) -> str:
    """Make a sqlite URI absolute and create its folder; other URIs pass through.

    A relative sqlite path would follow the process's working directory, so two services
    started from different folders would silently use two registries.
    """
    path = sqlite_path(tracking_uri)
    if path is None:
        return tracking_uri
    absolute = path.resolve()
    absolute.parent.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{absolute}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """`<db folder>/mlartifacts` for sqlite; None (the server decides) for a tracking server or SQL backend.

    MLflow's own default for a sqlite store is `./mlruns` under the current working directory,
    which scatters artifacts wherever a process happened to start.
    """
    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    return (path.resolve().parent / ARTIFACTS_DIRNAME).as_uri()
