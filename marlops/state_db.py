"""The marlops state database (SQLite by default, PostgreSQL by URL): one engine recipe and one transaction
discipline for every store in it (routing table, lifecycle, trading cursor)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool


def engine_for(url: str) -> tuple[Engine, bool]:
    """(engine, in_memory). SQLite: WAL, synchronous FULL, a busy timeout, and AUTOCOMMIT so that writes open
    their own BEGIN IMMEDIATE (write_transaction)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True), False
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if in_memory:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=StaticPool,
                                  connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        # AUTOCOMMIT hands transaction control to us: writes open with BEGIN IMMEDIATE.
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine, in_memory


@contextmanager
def write_transaction(conn: Connection, is_sqlite: bool) -> Iterator[None]:
    """One write transaction: SQLite BEGIN IMMEDIATE (writers queue, readers go on), PostgreSQL a plain BEGIN."""
    if is_sqlite:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")
    else:
        with conn.begin():
            yield


@contextmanager
def read_snapshot(conn: Connection, is_sqlite: bool) -> Iterator[None]:
    """One consistent read of several tables (SQLite WAL: a deferred transaction; PostgreSQL: REPEATABLE READ)."""
    if is_sqlite:
        conn.exec_driver_sql("BEGIN")
        try:
            yield
        finally:
            conn.exec_driver_sql("ROLLBACK")
    else:
        conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield


def install_append_only_guards(engine: Engine, is_sqlite: bool, tables: tuple[str, ...], *, message: str,
                               namespace: str) -> None:
    """Refuse UPDATE and DELETE on `tables` inside the database: SQLite triggers `<table>_no_update|delete`,
    PostgreSQL one trigger `<table>_append_only` over a function `marlops_<namespace>_append_only` (created once,
    under an advisory lock, by whichever process gets there first)."""
    with engine.connect() as conn:
        if is_sqlite:
            for name in tables:
                for operation in ("UPDATE", "DELETE"):
                    conn.exec_driver_sql(
                        f'CREATE TRIGGER IF NOT EXISTS "{name}_no_{operation.lower()}" BEFORE {operation} '
                        f"ON \"{name}\" BEGIN SELECT RAISE(ABORT, '{message}'); END")
            return
        missing = [name for name in tables if conn.execute(sa.text(
            "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(quote_ident(:t)) AND tgname = :g "
            "AND NOT tgisinternal"), {"t": name, "g": f"{name}_append_only"}).first() is None]
        conn.rollback()
        if not missing:
            return
        function = f"marlops_{namespace}_append_only"
        with conn.begin():
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"marlops-{namespace}-guards"})
            conn.execute(sa.text(
                f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN RAISE EXCEPTION '{message}: % on % refused', TG_OP, TG_TABLE_NAME "
                "USING ERRCODE = 'insufficient_privilege'; END $$"))
            for name in missing:
                conn.execute(sa.text(f'DROP TRIGGER IF EXISTS "{name}_append_only" ON "{name}"'))
                conn.execute(sa.text(f'CREATE TRIGGER "{name}_append_only" BEFORE UPDATE OR DELETE ON "{name}" '
                                     f"FOR EACH ROW EXECUTE FUNCTION {function}()"))


class StateDbStore:
    """What every store in the state database shares: its engine and metadata, and their lifetime."""

    _engine: Engine
    _metadata: sa.MetaData

    def drop(self) -> None:
        """Remove the store's tables (tests and throwaway stores only)."""
        self._metadata.drop_all(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
