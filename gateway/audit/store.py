"""AuditStore: the append-only audit table on SQLAlchemy (SQLite WAL by default, PostgreSQL in production).

One writer at a time: a process-wide lock serialises this process's threads, and the database
lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL `LOCK TABLE ... SHARE ROW EXCLUSIVE`) serialises
processes, so the chain never forks. Each append reads the chain's tail inside its own
transaction, so nothing is cached that another writer could make stale.
"""

import builtins
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from contracts.audit import AuditEvent
from gateway.audit.chain import GENESIS_HASH, normalize_payload, row_hash
from gateway.domain.market_time import as_utc
from gateway.errors import AuditError

logger = logging.getLogger(__name__)


def _table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(32), nullable=False, index=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )


def _engine_for(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if in_memory:
        # One shared connection, or every pooled connection would see its own empty database.
        engine = sa.create_engine(
            url, isolation_level="AUTOCOMMIT", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        # AUTOCOMMIT hands transaction control to us, so appends can open with BEGIN IMMEDIATE.
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: an intent row is on disk before the order that it announces is sent.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


class AuditStore:
    def __init__(self, url: str, *, table: str = "gateway_audit") -> None:
        self.url = url
        self._lock = threading.Lock()
        try:
            self._engine = _engine_for(url)
            self._sqlite = self._engine.dialect.name == "sqlite"
            self._metadata = sa.MetaData()
            self._table = _table(self._metadata, table)
            self._metadata.create_all(self._engine)
        except SQLAlchemyError as exc:
            raise AuditError(f"cannot open audit store {make_url(url).render_as_string()}: {exc}") from exc
        logger.info("audit store open: %s (table %s)", make_url(url).render_as_string(), table)

    @property
    def table_name(self) -> str:
        return self._table.name

    # ---- writing -----------------------------------------------------------------------------
    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            if self._sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
                conn.exec_driver_sql("COMMIT")
            else:
                with conn.begin():
                    conn.execute(sa.text(f'LOCK TABLE "{self._table.name}" IN SHARE ROW EXCLUSIVE MODE'))
                    yield conn

    def _tail(self, conn: Connection) -> tuple[int, str]:
        row = conn.execute(
            sa.select(self._table.c.seq, self._table.c.hash).order_by(self._table.c.seq.desc()).limit(1)
        ).first()
        return (0, GENESIS_HASH) if row is None else (int(row.seq), str(row.hash))

    def append(self, event: AuditEvent) -> int:
        """Write one event durably; returns its sequence number."""
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[AuditEvent]) -> list[int]:
        """Write several events in one transaction (all or none); returns their sequence numbers."""
        if not events:
            return []
        try:
            with self._lock, self._write_transaction() as conn:
                seq, prev = self._tail(conn)
                rows: list[dict[str, Any]] = []
                for event in events:
                    seq += 1
                    payload = normalize_payload(event.payload)
                    occurred_at = as_utc(event.occurred_at)
                    digest = row_hash(
                        seq=seq, kind=event.kind, occurred_at=occurred_at, principal=event.principal,
                        payload=payload, prev_hash=prev,
                    )
                    rows.append({
                        "seq": seq, "kind": event.kind, "occurred_at": occurred_at, "principal": event.principal,
                        "payload": payload, "prev_hash": prev, "hash": digest,
                    })
                    prev = digest
                conn.execute(sa.insert(self._table), rows)
        except SQLAlchemyError as exc:
            raise AuditError(f"audit append to {self._table.name} failed: {exc}") from exc
        return [r["seq"] for r in rows]

    # ---- reading -----------------------------------------------------------------------------
    def count(self, kind: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(self._table)
        if kind is not None:
            query = query.where(self._table.c.kind == kind)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def counts_by_kind(self) -> dict[str, int]:
        query = sa.select(self._table.c.kind, sa.func.count()).group_by(self._table.c.kind)
        with self._engine.connect() as conn:
            return {str(kind): int(n) for kind, n in conn.execute(query)}

    def list(
        self, kind: str | None = None, limit: int = 100, *, before_seq: int | None = None
    ) -> builtins.list[dict[str, Any]]:
        """The latest `limit` events (of `kind`, if given; older than `before_seq`, if given), newest first."""
        query = sa.select(self._table).order_by(self._table.c.seq.desc()).limit(limit)
        if kind is not None:
            query = query.where(self._table.c.kind == kind)
        if before_seq is not None:
            query = query.where(self._table.c.seq < before_seq)
        with self._engine.connect() as conn:
            return [self._row_dict(row) for row in conn.execute(query)]

    @staticmethod
    def _row_dict(row: Any) -> dict[str, Any]:
        return {
            "seq": int(row.seq),
            "kind": row.kind,
            "occurred_at": as_utc(row.occurred_at).isoformat(),
            "principal": row.principal,
            "payload": row.payload,
            "prev_hash": row.prev_hash,
            "hash": row.hash,
        }

    def first_broken_seq(self) -> int | None:
        """Sequence number of the first row whose hash or link does not verify; None if the chain is intact."""
        expected_prev = GENESIS_HASH
        expected_seq = 1
        query = sa.select(self._table).order_by(self._table.c.seq)
        with self._engine.connect() as conn:
            for row in conn.execution_options(yield_per=1000).execute(query):
                seq = int(row.seq)
                if seq != expected_seq or row.prev_hash != expected_prev:
                    return seq
                digest = row_hash(
                    seq=seq, kind=row.kind, occurred_at=row.occurred_at, principal=row.principal,
                    payload=row.payload, prev_hash=row.prev_hash,
                )
                if digest != row.hash:
                    return seq
                expected_prev = row.hash
                expected_seq += 1
        return None

    def verify_chain(self) -> bool:
        broken = self.first_broken_seq()
        if broken is not None:
            logger.error("audit chain of %s broken at seq %d", self._table.name, broken)
        return broken is None

    def drop(self) -> None:
        """Remove the table (tests and throwaway stores only)."""
        self._table.drop(self._engine, checkfirst=True)

    def close(self) -> None:
        self._engine.dispose()
