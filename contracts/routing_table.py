"""The routing table as stored in the marlops state store, and a read-only reader for services that may not
import marlops (the gateway, monitoring).

marlops.routing_store.RoutingStore writes it (validated, audited); its layout is named here once:

  <table>_state   ONE row (id = STATE_ROW_ID): revision, body {"policies": {slot: {model, version}},
                  "routes": {symbol: {variant, shadow}}}, audit_seq (the audit row that made it), updated_at
  <table>_audit   append-only, hash-chained; row `audit_seq` holds who made the current table (principal, reason)

    reader = RoutingTableReader("sqlite:////srv/marlops/state.db")
    reader.read()   # {"revision", "updated_at", "updated_by", "reason", "policies", "routes"}; None: no state row
    reader.close()

Every failure is a RoutingTableUnavailable whose message says why (no store, no table, unreadable), with any
password in the URL masked. Reading never creates anything: a SQLite file that does not exist is reported as
absent, not created empty.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from contracts.urls import redact_url

__all__ = ["DEFAULT_ROUTE", "DEFAULT_TABLE", "IMPLICIT_DEFAULT_VARIANT", "STATE_ROW_ID", "TABLE_NAME_PATTERN", "RoutingTableReader", "RoutingTableUnavailable",
           "audit_table_name", "read_routing_table", "state_table_name"]

DEFAULT_TABLE = "routing"
# What a route means (marlops.routing defines the rules; tests check these agree): the "*" row routes every symbol
# not listed; without one, unlisted symbols route to production.
DEFAULT_ROUTE = "*"
IMPLICIT_DEFAULT_VARIANT = "production"
# The table prefix is interpolated into SQL as an identifier: only this shape is ever accepted.
TABLE_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
STATE_ROW_ID = 1


class RoutingTableUnavailable(RuntimeError):
    """The routing table cannot be read; the message says why (URL passwords masked)."""


def _checked(table: str) -> str:
    if not isinstance(table, str) or not TABLE_NAME_PATTERN.match(table):
        raise RoutingTableUnavailable(f"routing table name {table!r} must match {TABLE_NAME_PATTERN.pattern}")
    return table


def state_table_name(table: str = DEFAULT_TABLE) -> str:
    return f"{_checked(table)}_state"


def audit_table_name(table: str = DEFAULT_TABLE) -> str:
    return f"{_checked(table)}_audit"


def _json(value: Any) -> Any:
    # A plain SELECT on SQLite returns a JSON column as its text.
    return json.loads(value) if isinstance(value, str | bytes) else value


class RoutingTableReader:
    """Reads the current routing table (one SELECT of the state row and its audit row); keeps one engine.
    Thread-safe; `close()` disposes the engine."""

    def __init__(self, state_url: str, *, table: str = DEFAULT_TABLE, timeout_s: float = 2.0) -> None:
        self.shown = redact_url(state_url)
        self._url = state_url
        self._state = state_table_name(table)
        self._audit = audit_table_name(table)
        self._timeout_s = timeout_s
        self._engine: sa.Engine | None = None
        self._lock = threading.Lock()
        try:
            parsed = make_url(state_url)
        except ArgumentError as exc:
            raise RoutingTableUnavailable(f"routing state URL {self.shown} is not a SQLAlchemy URL: {exc}") from exc
        self._sqlite_file = (Path(parsed.database).expanduser()
                             if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
                             else None)
        self._sqlite = parsed.get_backend_name() == "sqlite"
        self._postgres = parsed.get_backend_name() == "postgresql"
        self._query = sa.text(
            f'SELECT s.revision, s.body, s.updated_at, s.audit_seq, a.principal, a.reason '
            f'FROM "{self._state}" s LEFT JOIN "{self._audit}" a ON a.seq = s.audit_seq '
            f'WHERE s.id = {STATE_ROW_ID}')

    def _engine_for(self) -> sa.Engine:
        with self._lock:
            if self._engine is None:
                args: dict[str, Any] = {}
                if self._sqlite:
                    args = {"timeout": self._timeout_s}
                elif self._postgres:
                    args = {"connect_timeout": max(1, round(self._timeout_s))}
                try:
                    self._engine = sa.create_engine(self._url, connect_args=args, pool_pre_ping=True)
                except (ArgumentError, ImportError) as exc:
                    raise RoutingTableUnavailable(f"routing state store {self.shown} cannot be opened: {exc}") from exc
            return self._engine

    def read(self) -> dict[str, Any] | None:
        """The current table, or None when the store has the routing tables but no state row yet. Raises
        RoutingTableUnavailable when the store, the table or the database cannot be read."""
        if self._sqlite_file is not None and not self._sqlite_file.exists():
            # Connecting would create an empty database file: say the store is absent instead.
            raise RoutingTableUnavailable(f"no state store at {self.shown}")
        engine = self._engine_for()
        try:
            with engine.connect() as conn:
                row = conn.execute(self._query).mappings().first()
        except SQLAlchemyError as exc:
            missing = self._missing_table(engine)
            if missing:
                raise RoutingTableUnavailable(
                    f"no routing table {missing} in {self.shown} (marlops has not written routing there)") from exc
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
            raise RoutingTableUnavailable(
                f"routing table {self._state} at {self.shown} unreadable: {type(exc).__name__}: "
                f"{redact_url(detail) if '://' in detail else detail}") from exc
        if row is None:
            return None
        body = _json(row["body"]) or {}
        return {
            "revision": int(row["revision"]),
            "updated_at": row["updated_at"],
            "updated_by": row["principal"],
            "reason": row["reason"],
            "policies": dict(body.get("policies") or {}),
            "routes": dict(body.get("routes") or {}),
        }

    def _missing_table(self, engine: sa.Engine) -> str | None:
        try:
            inspector = sa.inspect(engine)
            return next((t for t in (self._state, self._audit) if not inspector.has_table(t)), None)
        except SQLAlchemyError:
            return None

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


def read_routing_table(state_url: str, *, table: str = DEFAULT_TABLE) -> dict[str, Any] | None:
    """One read with a throwaway engine (see RoutingTableReader.read)."""
    reader = RoutingTableReader(state_url, table=table)
    try:
        return reader.read()
    finally:
        reader.close()
