"""One store fixture body for both database backends: SQLite under tmp_path, a throwaway table on PostgreSQL."""

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

BACKENDS = ["sqlite", "postgresql"]


class _Store(Protocol):
    def close(self) -> None: ...

    def drop(self) -> None: ...


S = TypeVar("S", bound=_Store)


def store_on_backend(request: pytest.FixtureRequest, open_store: Callable[..., S], sqlite_path: Path,
                     table_prefix: str) -> Iterator[S]:
    """For a fixture with `params=BACKENDS`: `yield from` this. PostgreSQL is the `postgres_url` fixture's
    (skipped, saying why, without it); its table is `{table_prefix}_<random>`, dropped afterwards."""
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{sqlite_path}")
        yield store
        store.close()
        return
    url: str = request.getfixturevalue("postgres_url")
    store = open_store(url, table=f"{table_prefix}_{uuid.uuid4().hex[:12]}")
    yield store
    store.drop()
    store.close()
