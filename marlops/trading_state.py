"""The trading service's durable cursor: the last bar it decided, and what it needs to resume there.

One row per trading service (`name`), in the marlops state store (SQLite by default, PostgreSQL
when MARLOPS_STATE_URL says so), written once per bar after the gateway has accepted the bar's
decisions. A restart resumes strictly after `bar_timestamp` with `bar_index + 1`; if the process
died between the gateway's answer and this write, the re-sent bar is refused by the gateway as
already decided (409) and the cursor catches up, so no bar is decided twice or skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from marlops.errors import MarlopsError


class TradingStateError(MarlopsError):
    """The trading cursor cannot be read or written."""


@dataclass(frozen=True)
class TradingCursor:
    name: str
    bar_index: int  # last bar decided (-1: none yet)
    bar_timestamp: pd.Timestamp | None
    bars_decided: int
    held_levels: dict[str, float] = field(default_factory=dict)
    source: str = ""
    alerts: dict[str, str] = field(default_factory=dict)  # active alert name -> detail
    updated_at: str = ""

    @classmethod
    def fresh(cls, name: str, source: str) -> TradingCursor:
        return cls(name=name, bar_index=-1, bar_timestamp=None, bars_decided=0, source=source)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bar_index": self.bar_index,
                "bar_timestamp": None if self.bar_timestamp is None else self.bar_timestamp.isoformat(),
                "bars_decided": self.bars_decided, "source": self.source, "alerts": dict(self.alerts),
                "updated_at": self.updated_at}


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class TradingStateStore:
    TABLE = "trading_cursor"

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self._engine = _engine(url)
            metadata = sa.MetaData()
            self._table = sa.Table(
                self.TABLE, metadata,
                sa.Column("name", sa.String(100), primary_key=True),
                sa.Column("bar_index", sa.BigInteger, nullable=False),
                sa.Column("bar_timestamp", sa.String(40), nullable=True),
                sa.Column("bars_decided", sa.BigInteger, nullable=False),
                sa.Column("held_levels", sa.Text, nullable=False),
                sa.Column("source", sa.String(500), nullable=False),
                sa.Column("alerts", sa.Text, nullable=False),
                sa.Column("updated_at", sa.String(40), nullable=False),
            )
            metadata.create_all(self._engine)
        except sa.exc.SQLAlchemyError as exc:
            raise TradingStateError(f"trading state store {_safe(url)}: {exc}") from exc

    def load(self, name: str) -> TradingCursor | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(self._table).where(self._table.c.name == name)).first()
        if row is None:
            return None
        return TradingCursor(
            name=row.name, bar_index=int(row.bar_index),
            bar_timestamp=None if row.bar_timestamp is None else pd.Timestamp(row.bar_timestamp),
            bars_decided=int(row.bars_decided), held_levels={k: float(v) for k, v in json.loads(row.held_levels).items()},
            source=row.source, alerts=dict(json.loads(row.alerts)), updated_at=row.updated_at,
        )

    def all(self) -> list[TradingCursor]:
        with self._engine.connect() as conn:
            names = [r.name for r in conn.execute(sa.select(self._table.c.name))]
        return [c for c in (self.load(n) for n in names) if c is not None]

    def save(self, cursor: TradingCursor) -> TradingCursor:
        now = datetime.now(UTC).isoformat()
        values = {
            "bar_index": cursor.bar_index,
            "bar_timestamp": None if cursor.bar_timestamp is None else cursor.bar_timestamp.isoformat(),
            "bars_decided": cursor.bars_decided,
            "held_levels": json.dumps(cursor.held_levels, sort_keys=True),
            "source": cursor.source,
            "alerts": json.dumps(cursor.alerts, sort_keys=True),
            "updated_at": now,
        }
        try:
            with self._engine.begin() as conn:
                updated = conn.execute(sa.update(self._table).where(self._table.c.name == cursor.name).values(**values))
                if updated.rowcount == 0:
                    conn.execute(sa.insert(self._table).values(name=cursor.name, **values))
        except sa.exc.SQLAlchemyError as exc:
            raise TradingStateError(f"saving the trading cursor of {cursor.name!r}: {exc}") from exc
        return TradingCursor(**{**cursor.__dict__, "updated_at": now})

    def reset(self, name: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(sa.delete(self._table).where(self._table.c.name == name))

    def close(self) -> None:
        self._engine.dispose()


def _safe(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid url>"
