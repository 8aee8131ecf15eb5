"""AuditStore: the append-only audit table on SQLAlchemy (SQLite WAL by default, PostgreSQL in production).

One writer at a time: a process-wide lock serialises this process's threads, and the database
lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL `LOCK TABLE ... SHARE ROW EXCLUSIVE`) serialises
processes, so the chain never forks. Each append reads the chain's tail inside its own
transaction, so nothing is cached that another writer could make stale.

Beside the audit table lives `<table>_state` (key -> JSON value): durable gateway state written
in the SAME transaction as the audit rows that justify it (`append_many(events, state=...)`), and
the head record (`audit_head`: seq and hash of the last row) that lets verification see rows
deleted from the end of the chain, which the chain alone cannot show.

Append-only is enforced twice: database triggers refuse UPDATE and DELETE on the audit table
(defence in depth against mistakes and ordinary users), and the hash chain proves that no one with
more rights (a DBA dropping the triggers) edited or removed rows (see gateway.audit.verify).
"""

import builtins
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from contracts.audit import AuditEvent
from gateway.audit.chain import GENESIS_HASH, normalize_payload, row_hash
from gateway.domain.market_time import as_utc
from gateway.errors import AuditError

logger = logging.getLogger(__name__)

HEAD_KEY = "audit_head"
CHECKPOINT_KEY = "audit_checkpoint"
# Written only by the store itself: a caller overwriting them would forge the proof of the chain's end.
RESERVED_STATE_KEYS = frozenset({HEAD_KEY, CHECKPOINT_KEY})
APPEND_ONLY_MESSAGE = "audit trail is append-only"
# PostgreSQL truncates identifiers at 63 characters; "<table>_state" must stay distinct.
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,56}$")
# One function serves every audit table, so dropping one table never breaks another's trigger.
_PG_GUARD_FUNCTION = "marlops_audit_append_only"


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


def _state_table(metadata: sa.MetaData, name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
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


def _sqlite_guard_ddl(table: str, operation: str) -> str:
    return (
        f'CREATE TRIGGER IF NOT EXISTS "{table}_no_{operation.lower()}" BEFORE {operation} ON "{table}" '
        f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
    )


_PG_FUNCTION_DDL = f"""
CREATE OR REPLACE FUNCTION {_PG_GUARD_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$"""


def _pg_row_guard_ddl(table: str) -> str:
    return (
        f'CREATE TRIGGER "{table}_append_only" BEFORE UPDATE OR DELETE ON "{table}" '
        f"FOR EACH ROW EXECUTE FUNCTION {_PG_GUARD_FUNCTION}()"
    )


def _pg_truncate_guard_ddl(table: str) -> str:
    return (
        f'CREATE TRIGGER "{table}_no_truncate" BEFORE TRUNCATE ON "{table}" '
        f"FOR EACH STATEMENT EXECUTE FUNCTION {_PG_GUARD_FUNCTION}()"
    )


class AuditSnapshot:
    """A consistent read of the chain and the state table (one read transaction)."""

    def __init__(self, store: "AuditStore", conn: Connection) -> None:
        self._store = store
        self._conn = conn

    def state_key(self, key: str, default: Any = None) -> Any:
        return self._store._state_value(self._conn, key, default)

    def rows(self, *, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Rows with seq > after_seq, oldest first, as `AuditStore.list` shapes them."""
        table = self._store._table
        query = sa.select(table).where(table.c.seq > after_seq).order_by(table.c.seq)
        for row in self._conn.execution_options(yield_per=1000).execute(query):
            yield AuditStore._row_dict(row)

    def tail(self) -> tuple[int, str] | None:
        return self._store._last_row(self._conn)


class AuditStore:
    def __init__(self, url: str, *, table: str = "gateway_audit", create: bool = True,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        """Open (and by default create) the audit table; `create=False` opens an existing trail only,
        so a mistyped URL given to an inspection tool is an error rather than a new, empty, "intact" trail.
        `now` is the clock of the store's own timestamps (state updates, prune checkpoints, anchors); the rows'
        `occurred_at` comes from the writer's clock."""
        self.url = url
        self.now = now
        self._lock = threading.Lock()
        if not _TABLE_NAME.match(table):
            raise AuditError(f"audit table name {table!r} must match {_TABLE_NAME.pattern}")
        shown = make_url(url).render_as_string()
        parsed = make_url(url)
        if (not create and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
                and not Path(parsed.database).expanduser().exists()):
            raise AuditError(f"no audit database at {shown}")
        try:
            self._engine = _engine_for(url)
            self._sqlite = self._engine.dialect.name == "sqlite"
            self._in_memory = self._sqlite and parsed.database in (None, "", ":memory:")
            self._metadata = sa.MetaData()
            self._table = _table(self._metadata, table)
            self._state = _state_table(self._metadata, f"{table}_state")
            if create:
                self._metadata.create_all(self._engine)
                self._install_guards()
            elif not sa.inspect(self._engine).has_table(table):
                self._engine.dispose()
                raise AuditError(f"no audit table {table!r} in {shown}")
            else:
                # An older trail may predate the state table; it is created empty, the chain untouched.
                self._state.create(self._engine, checkfirst=True)
        except SQLAlchemyError as exc:
            raise AuditError(f"cannot open audit store {shown}: {exc}") from exc
        logger.info("audit store open: %s (table %s)", shown, table)

    @property
    def table_name(self) -> str:
        return self._table.name

    @property
    def state_table_name(self) -> str:
        return self._state.name

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    # ---- append-only guards ------------------------------------------------------------------
    def _install_guards(self) -> None:
        """Triggers refusing UPDATE and DELETE; idempotent, so an existing table gains them on open."""
        name = self._table.name
        with self._engine.connect() as conn:
            if self._sqlite:
                for operation in ("UPDATE", "DELETE"):
                    conn.exec_driver_sql(_sqlite_guard_ddl(name, operation))
                return
            present = {
                str(row[0]) for row in conn.execute(
                    sa.text("SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(quote_ident(:t)) "
                            "AND NOT tgisinternal"), {"t": name})
            }
            conn.rollback()
            if {f"{name}_append_only", f"{name}_no_truncate"} <= present:
                # Already guarded: opening needs no DDL rights (the gateway may run as a plain role).
                return
            with conn.begin():
                # Stores opening at once (any table: the function is shared) would race on CREATE OR REPLACE.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('marlops-audit-guards'))"))
                # text(), not exec_driver_sql: psycopg would read the plpgsql '%' as a placeholder.
                conn.execute(sa.text(_PG_FUNCTION_DDL))
                # DROP + CREATE rather than CREATE OR REPLACE TRIGGER: works on PostgreSQL 11 to 13 too.
                for trigger, ddl in ((f"{name}_append_only", _pg_row_guard_ddl(name)),
                                     (f"{name}_no_truncate", _pg_truncate_guard_ddl(name))):
                    conn.execute(sa.text(f'DROP TRIGGER IF EXISTS "{trigger}" ON "{name}"'))
                    conn.execute(sa.text(ddl))

    @contextmanager
    def _deletes_allowed(self, conn: Connection) -> Iterator[None]:
        """Lift the DELETE guard inside the caller's transaction only (retention pruning).

        Dropping and recreating the trigger, rather than a bypass flag the trigger would honour, keeps
        the guard absolute for everyone without DDL rights on the table; both DDL statements are
        transactional on SQLite and PostgreSQL, so no other session ever sees the table unguarded and
        a failed prune leaves the trigger in place.
        """
        name = self._table.name
        if self._sqlite:
            conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{name}_no_delete"')
            yield
            conn.exec_driver_sql(_sqlite_guard_ddl(name, "DELETE"))
        else:
            conn.execute(sa.text(f'DROP TRIGGER IF EXISTS "{name}_append_only" ON "{name}"'))
            yield
            conn.execute(sa.text(_pg_row_guard_ddl(name)))

    # ---- transactions ------------------------------------------------------------------------
    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        with self._lock, self._engine.connect() as conn:
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

    @contextmanager
    def read_snapshot(self) -> Iterator[AuditSnapshot]:
        """One consistent view of rows and state, so a concurrent append never looks like tampering."""
        try:
            with self._engine.connect() as conn:
                if self._in_memory:
                    # One connection shared by all threads: hold writers off rather than nest transactions.
                    with self._lock:
                        yield AuditSnapshot(self, conn)
                elif self._sqlite:
                    # WAL: a deferred transaction reads one snapshot from its first SELECT on.
                    conn.exec_driver_sql("BEGIN")
                    try:
                        yield AuditSnapshot(self, conn)
                    finally:
                        conn.exec_driver_sql("ROLLBACK")
                else:
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                    with conn.begin():
                        yield AuditSnapshot(self, conn)
        except SQLAlchemyError as exc:
            raise AuditError(f"audit read of {self._table.name} failed: {exc}") from exc

    # ---- state table -------------------------------------------------------------------------
    def _state_value(self, conn: Connection, key: str, default: Any = None) -> Any:
        row = conn.execute(sa.select(self._state.c.value).where(self._state.c.key == key)).first()
        return default if row is None else row.value

    def _upsert_state(self, conn: Connection, values: Mapping[str, Any]) -> None:
        """All keys in two statements (one executemany upsert, one delete), however many there are: a timestep
        writes a ledger key per order."""
        now = self.now()
        deleted = [key for key, value in values.items() if value is None]
        kept = [{"key": key, "value": normalize_payload(value), "updated_at": now}
                for key, value in values.items() if value is not None]
        if deleted:
            conn.execute(sa.delete(self._state).where(self._state.c.key.in_(deleted)))
        if kept:
            conn.execute(self._upsert_statement(), kept)

    def _upsert_statement(self) -> Any:
        statement = getattr(self, "_upsert", None)
        if statement is None:
            insert = sqlite.insert if self._sqlite else postgresql.insert
            base = insert(self._state)
            statement = base.on_conflict_do_update(
                index_elements=[self._state.c.key],
                set_={"value": base.excluded.value, "updated_at": base.excluded.updated_at})
            self._upsert = statement
        return statement

    @staticmethod
    def _check_state_keys(state: Mapping[str, Any]) -> None:
        for key in state:
            if not isinstance(key, str) or not 0 < len(key) <= 200:
                raise AuditError(f"state key {key!r} must be text of 1 to 200 characters")
            if key in RESERVED_STATE_KEYS:
                raise AuditError(f"state key {key!r} is written by the audit store itself")

    def read_state(self) -> dict[str, Any]:
        """Every key of the state table (including the store's own `audit_head` / `audit_checkpoint`)."""
        try:
            with self._engine.connect() as conn:
                return {str(row.key): row.value for row in conn.execute(sa.select(self._state.c.key, self._state.c.value))}
        except SQLAlchemyError as exc:
            raise AuditError(f"reading {self._state.name} failed: {exc}") from exc

    def read_state_key(self, key: str, default: Any = None) -> Any:
        try:
            with self._engine.connect() as conn:
                return self._state_value(conn, key, default)
        except SQLAlchemyError as exc:
            raise AuditError(f"reading {self._state.name} failed: {exc}") from exc

    # ---- writing -----------------------------------------------------------------------------
    def _last_row(self, conn: Connection) -> tuple[int, str] | None:
        row = conn.execute(
            sa.select(self._table.c.seq, self._table.c.hash).order_by(self._table.c.seq.desc()).limit(1)
        ).first()
        return None if row is None else (int(row.seq), str(row.hash))

    def _tail(self, conn: Connection) -> tuple[int, str]:
        """Where the next row links to; refuses to extend a chain whose end disagrees with the head record.

        Appending after rows were deleted from the end would overwrite the head record and so erase
        the only evidence of the deletion: the store fails closed instead (run `marlops audit verify`).
        """
        last = self._last_row(conn)
        if last is None:
            checkpoint = self._state_value(conn, CHECKPOINT_KEY)
            last = (0, GENESIS_HASH) if checkpoint is None else (int(checkpoint["seq"]), str(checkpoint["hash"]))
        head = self._state_value(conn, HEAD_KEY)
        if head is not None and (int(head["seq"]), str(head["hash"])) != last:
            raise AuditError(
                f"audit table {self._table.name} ends at seq {last[0]} but its head record says seq {head['seq']}: "
                "the trail was altered outside the gateway; refusing to append (run `marlops audit verify`)"
            )
        return last

    def append(self, event: AuditEvent, *, state: Mapping[str, Any] | None = None) -> int:
        """Write one event (and `state`, in the same transaction) durably; returns its sequence number."""
        return self.append_many([event], state=state)[0]

    def append_many(self, events: Sequence[AuditEvent], *, state: Mapping[str, Any] | None = None) -> list[int]:
        """Write several events and upsert `state` in ONE transaction (all or none); returns the events' seqs.

        `state` maps keys to JSON-able values (normalised like payloads); a value of None deletes the
        key. With no events the state is still written.
        """
        state = dict(state or {})
        self._check_state_keys(state)
        if not events and not state:
            return []
        rows: list[dict[str, Any]] = []
        try:
            with self._write_transaction() as conn:
                if events:
                    seq, prev = self._tail(conn)
                    for event in events:
                        seq += 1
                        occurred_at = as_utc(event.occurred_at)
                        try:
                            # Fast path: a payload that is already plain JSON (no NaN, no datetime) hashes as it
                            # is stored and read back (tuples and lists serialise alike).
                            payload = event.payload
                            digest = row_hash(seq=seq, kind=event.kind, occurred_at=occurred_at,
                                              principal=event.principal, payload=payload, prev_hash=prev)
                        except (TypeError, ValueError):
                            payload = normalize_payload(event.payload)
                            digest = row_hash(seq=seq, kind=event.kind, occurred_at=occurred_at,
                                              principal=event.principal, payload=payload, prev_hash=prev)
                        rows.append({
                            "seq": seq, "kind": event.kind, "occurred_at": occurred_at,
                            "principal": event.principal, "payload": payload, "prev_hash": prev, "hash": digest,
                        })
                        prev = digest
                    conn.execute(sa.insert(self._table), rows)
                    state[HEAD_KEY] = {"seq": seq, "hash": prev}
                self._upsert_state(conn, state)
        except SQLAlchemyError as exc:
            raise AuditError(f"audit append to {self._table.name} failed: {exc}") from exc
        return [r["seq"] for r in rows]

    def prune_prefix(
        self, *, older_than: datetime, archive: Callable[[builtins.list[dict[str, Any]]], Path], dry_run: bool = False
    ) -> tuple[builtins.list[dict[str, Any]], Path | None]:
        """Delete the oldest rows that all occurred before `older_than`, after `archive` saved them.

        Only a prefix of the chain is removed (rows up to the first one that is recent enough), so what
        remains still links to the checkpoint recorded here. `archive(rows)` runs inside the
        transaction and must make its file durable before returning: if it raises, nothing is deleted.
        Returns (pruned rows, archive path); with `dry_run` the rows that would go and no path.
        """
        cutoff = as_utc(older_than)
        try:
            with self._write_transaction() as conn:
                checkpoint = self._state_value(conn, CHECKPOINT_KEY)
                after = 0 if checkpoint is None else int(checkpoint["seq"])
                first_recent = conn.execute(
                    sa.select(sa.func.min(self._table.c.seq)).where(
                        self._table.c.seq > after, self._table.c.occurred_at >= cutoff
                    )
                ).scalar_one_or_none()
                query = sa.select(self._table).where(self._table.c.seq > after).order_by(self._table.c.seq)
                if first_recent is not None:
                    query = query.where(self._table.c.seq < first_recent)
                rows = [self._row_dict(row) for row in conn.execute(query)]
                if not rows or dry_run:
                    return rows, None
                path = archive(rows)
                last = rows[-1]
                with self._deletes_allowed(conn):
                    conn.execute(sa.delete(self._table).where(self._table.c.seq <= last["seq"]))
                self._upsert_state(conn, {CHECKPOINT_KEY: {
                    "seq": last["seq"], "hash": last["hash"], "first_seq": rows[0]["seq"],
                    "archive": path.name, "pruned_at": self.now(),
                }})
                return rows, path
        except SQLAlchemyError as exc:
            raise AuditError(f"audit prune of {self._table.name} failed: {exc}") from exc

    def export_anchor(self, path: Path | str) -> dict[str, Any]:
        """Write the chain's current end {seq, hash, at, table} to `path` (keep it OUTSIDE this database).

        Whoever can rewrite the database can also rewrite the head record consistently; an anchor kept
        elsewhere (another host, WORM storage, a signed e-mail) still proves what the chain contained.
        """
        with self.read_snapshot() as snap:
            last = snap.tail()
            if last is None:
                checkpoint = snap.state_key(CHECKPOINT_KEY)
                last = (0, GENESIS_HASH) if checkpoint is None else (int(checkpoint["seq"]), str(checkpoint["hash"]))
        anchor = {"seq": last[0], "hash": last[1], "at": self.now().isoformat(),
                  "table": self._table.name}
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(target.name + ".tmp")
        with temporary.open("w") as handle:
            json.dump(anchor, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)
        logger.info("audit anchor written to %s: seq %d", target, last[0])
        return anchor

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
        """Sequence number of the first missing or unverifiable row; None if the trail is intact.

        See gateway.audit.verify.verify_audit for the full report (what is wrong, head record, anchor).
        """
        from gateway.audit.verify import verify_audit  # verify builds on this module

        return verify_audit(self).first_broken_seq

    def verify_chain(self) -> bool:
        from gateway.audit.verify import verify_audit

        report = verify_audit(self)
        if not report.ok:
            logger.error("audit trail %s broken: %s", self._table.name, report.problem)
        return report.ok

    def drop(self) -> None:
        """Remove the table and its state table (tests and throwaway stores only)."""
        self._state.drop(self._engine, checkfirst=True)
        self._table.drop(self._engine, checkfirst=True)

    def close(self) -> None:
        self._engine.dispose()
