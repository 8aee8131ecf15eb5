"""The routing table, persisted and audited (the values and rules are in `marlops.routing`).

Storage (SQLAlchemy; SQLite in WAL mode by default, PostgreSQL via postgresql+psycopg://):
  <table>_state   ONE row: revision, the whole table as JSON, and the seq/hash of the last audit row.
                  Reading one row is one consistent snapshot: a reader sees the old or the new table.
  <table>_audit   append-only (triggers refuse UPDATE/DELETE), hash-chained: each row's sha256 covers
                  seq, time, principal, reason, the change, the table before and after, the revision and
                  the previous row's hash.
`apply` validates against the current table, writes the new one, bumps the revision and appends the
audit row in ONE transaction (SQLite `BEGIN IMMEDIATE`, PostgreSQL `SELECT ... FOR UPDATE` on the state
row), so concurrent writers serialise and a refused change writes nothing.

The gateway's AuditStore is not reused: its appends open their own transaction, so the routing write
and its validation against the current table could not share the audit row's transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError

from contracts.routing_table import STATE_ROW_ID, TABLE_NAME_PATTERN, audit_table_name, state_table_name
from marlops.errors import RoutingError
from marlops.state_db import (
    StateDbStore,
    engine_for,
    install_append_only_guards,
    read_snapshot,
    write_transaction,
)
from marlops.routing import RoutingChange, RoutingTable, apply_change

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
APPEND_ONLY_MESSAGE = "routing audit is append-only"
_TABLE = TABLE_NAME_PATTERN  # the layout is named once, in contracts.routing_table (read by gateway and monitoring)
_STATE_ID = STATE_ROW_ID


# ---- persistence -------------------------------------------------------------------------------
def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def audit_hash(row: Mapping[str, Any]) -> str:
    """sha256 over one audit row's content and the previous row's hash."""
    body = {key: row[key] for key in ("seq", "at", "principal", "reason", "change", "before", "after",
                                      "revision", "prev_hash")}
    return hashlib.sha256(_canonical(body).encode()).hexdigest()


class RoutingStore(StateDbStore):
    """The persisted routing table and its hash-chained audit trail (see the module docstring)."""

    def __init__(self, url: str, *, create: bool = True, table: str = "routing") -> None:
        if not _TABLE.match(table):
            raise RoutingError(f"routing table name {table!r} must match {_TABLE.pattern}")
        self.url = url
        self._shown = make_url(url).render_as_string()
        parsed = make_url(url)
        if (not create and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
                and not Path(parsed.database).expanduser().exists()):
            raise RoutingError(f"no routing store at {self._shown}")
        self._lock = threading.RLock()
        metadata = sa.MetaData()
        self._state = sa.Table(
            state_table_name(table), metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("revision", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
            sa.Column("body", sa.JSON(), nullable=False),
            sa.Column("audit_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
            sa.Column("audit_hash", sa.String(64), nullable=False),
            sa.Column("updated_at", sa.String(40), nullable=False),
        )
        self._audit = sa.Table(
            audit_table_name(table), metadata,
            sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                      autoincrement=False),
            sa.Column("at", sa.String(40), nullable=False),
            sa.Column("principal", sa.String(200), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("change", sa.JSON(), nullable=False),
            sa.Column("before", sa.JSON(), nullable=False),
            sa.Column("after", sa.JSON(), nullable=False),
            sa.Column("revision", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False, unique=True),
        )
        self._metadata = metadata
        try:
            self._engine, self._in_memory = engine_for(url)
            self._sqlite = self._engine.dialect.name == "sqlite"
            if create:
                metadata.create_all(self._engine)
                self._install_guards()
                self._ensure_state_row()
            elif not sa.inspect(self._engine).has_table(self._state.name):
                self._engine.dispose()
                raise RoutingError(f"no routing table {self._state.name!r} in {self._shown}")
        except SQLAlchemyError as exc:
            raise RoutingError(f"cannot open routing store {self._shown}: {exc}") from exc

    @property
    def table_names(self) -> tuple[str, str]:
        return self._state.name, self._audit.name

    # ---- setup -----------------------------------------------------------------------------------
    def _ensure_state_row(self) -> None:
        values = {"id": _STATE_ID, "revision": 0, "body": {"policies": {}, "routes": {}}, "audit_seq": 0,
                  "audit_hash": GENESIS_HASH, "updated_at": _now()}
        insert = sqlite.insert if self._sqlite else postgresql.insert
        with self._engine.connect() as conn, write_transaction(conn, self._sqlite):
            conn.execute(insert(self._state).values(**values).on_conflict_do_nothing(index_elements=["id"]))

    def _install_guards(self) -> None:
        install_append_only_guards(self._engine, self._sqlite, (self._audit.name,), message=APPEND_ONLY_MESSAGE,
                                   namespace="routing")

    # ---- reading ---------------------------------------------------------------------------------
    def _state_row(self, conn: Connection, *, for_update: bool = False) -> Any:
        query = sa.select(self._state).where(self._state.c.id == _STATE_ID)
        if for_update and not self._sqlite:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise RoutingError(f"routing store {self._shown} has no state row (open it with create=True once)")
        return row

    @staticmethod
    def _table_of(row: Any) -> RoutingTable:
        return RoutingTable.from_dict({**row.body, "revision": int(row.revision)})

    def read(self) -> RoutingTable:
        """The current table: one row, so one consistent snapshot (old or new, never a mix)."""
        try:
            with self._reading() as conn:
                return self._table_of(self._state_row(conn))
        except SQLAlchemyError as exc:
            raise RoutingError(f"reading the routing table from {self._shown} failed: {exc}") from exc

    def revision(self) -> int:
        """The current revision (one small row; cheap enough for every bar)."""
        try:
            with self._reading() as conn:
                value = conn.execute(
                    sa.select(self._state.c.revision).where(self._state.c.id == _STATE_ID)).scalar_one_or_none()
        except SQLAlchemyError as exc:
            raise RoutingError(f"reading the routing revision from {self._shown} failed: {exc}") from exc
        if value is None:
            raise RoutingError(f"routing store {self._shown} has no state row (open it with create=True once)")
        return int(value)

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            if self._in_memory:
                with self._lock:
                    yield conn
            else:
                yield conn

    # ---- writing ---------------------------------------------------------------------------------
    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        with self._lock, self._engine.connect() as conn, write_transaction(conn, self._sqlite):
            yield conn

    def apply(self, change: RoutingChange, *, principal: str, reason: str) -> RoutingTable:
        """Validate `change` against the current table, write it, bump the revision and audit it: one
        transaction, all or nothing. Returns the new table; RoutingError (nothing written) if refused."""
        if not isinstance(principal, str) or not principal.strip() or len(principal) > 200:
            raise RoutingError("a routing change needs a principal (1-200 characters, not blank)")
        if not isinstance(reason, str) or not reason.strip():
            raise RoutingError("a routing change needs a reason (not blank)")
        if change.is_empty():
            raise RoutingError("empty routing change: name at least one policy slot or route")
        try:
            with self._write_transaction() as conn:
                row = self._state_row(conn, for_update=True)
                before = self._table_of(row)
                after = apply_change(before, change)
                last = conn.execute(
                    sa.select(self._audit.c.seq, self._audit.c.hash).order_by(self._audit.c.seq.desc()).limit(1)
                ).first()
                tail = (0, GENESIS_HASH) if last is None else (int(last.seq), str(last.hash))
                if tail != (int(row.audit_seq), str(row.audit_hash)):
                    raise RoutingError(
                        f"routing audit {self._audit.name} ends at seq {tail[0]} but the routing state records seq "
                        f"{row.audit_seq}: the trail was altered; refusing to change routing"
                    )
                audit = {
                    "seq": tail[0] + 1, "at": _now(), "principal": principal.strip(), "reason": reason.strip(),
                    "change": change.to_dict(), "before": before.to_dict(), "after": after.to_dict(),
                    "revision": after.revision, "prev_hash": tail[1],
                }
                audit["hash"] = audit_hash(audit)
                conn.execute(sa.insert(self._audit).values(**audit))
                body = after.to_dict()
                body.pop("revision")
                conn.execute(sa.update(self._state).where(self._state.c.id == _STATE_ID).values(
                    revision=after.revision, body=body, audit_seq=audit["seq"], audit_hash=audit["hash"],
                    updated_at=audit["at"]))
        except SQLAlchemyError as exc:
            raise RoutingError(f"writing the routing change to {self._shown} failed (nothing written): {exc}") from exc
        logger.info("routing revision %d by %s (%s): %s", after.revision, principal, reason, change.to_dict())
        return after

    # ---- audit -------------------------------------------------------------------------------------
    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """Audit rows, newest first: seq, at, principal, reason, change, before, after, revision, hash."""
        query = sa.select(self._audit).order_by(self._audit.c.seq.desc()).limit(limit)
        try:
            with self._reading() as conn:
                return [_audit_dict(row) for row in conn.execute(query)]
        except SQLAlchemyError as exc:
            raise RoutingError(f"reading the routing audit from {self._shown} failed: {exc}") from exc

    def audit_problem(self) -> str | None:
        """None when the chain is intact and ends where the current table says; else what is wrong."""
        try:
            with self._engine.connect() as conn:
                if not self._sqlite:
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with read_snapshot(conn, self._sqlite):
                    state = self._state_row(conn)
                    prev, expected_seq, last_after = GENESIS_HASH, 1, None
                    for row in conn.execute(sa.select(self._audit).order_by(self._audit.c.seq)):
                        data = _audit_dict(row)
                        if data["seq"] != expected_seq:
                            return f"audit row seq {expected_seq} is missing (next row is seq {data['seq']})"
                        if data["prev_hash"] != prev:
                            return f"audit row seq {data['seq']} does not link to the row before it"
                        if audit_hash(data) != data["hash"]:
                            return f"audit row seq {data['seq']} was edited (its hash does not match its content)"
                        prev, expected_seq, last_after = data["hash"], expected_seq + 1, data["after"]
        except SQLAlchemyError as exc:
            raise RoutingError(f"reading the routing audit from {self._shown} failed: {exc}") from exc
        if (expected_seq - 1, prev) != (int(state.audit_seq), str(state.audit_hash)):
            return (f"the audit chain ends at seq {expected_seq - 1} but the routing state records seq "
                    f"{state.audit_seq}: rows were removed from the end or the state was rewritten")
        current = self._table_of(state).to_dict()
        if last_after is None:
            if current["policies"] or current["routes"] or current["revision"]:
                return "the routing table is not empty but no audit row justifies it"
        elif _canonical(current) != _canonical(last_after):
            return f"the routing table differs from the one audit row seq {expected_seq - 1} recorded"
        return None

    def verify_audit(self) -> bool:
        problem = self.audit_problem()
        if problem is not None:
            logger.error("routing audit %s broken: %s", self._audit.name, problem)
        return problem is None



def _audit_dict(row: Any) -> dict[str, Any]:
    return {
        "seq": int(row.seq), "at": row.at, "principal": row.principal, "reason": row.reason,
        "change": row.change, "before": row.before, "after": row.after, "revision": int(row.revision),
        "prev_hash": row.prev_hash, "hash": row.hash,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
