"""Every playbook run, durable: which alert started it (name, fingerprint, start, labels, value), what each step did.

One row per (alert fingerprint, alert start): Alertmanager repeats a notification while the alert fires, and a
restarted runner must not run the same incident's playbook twice. The marlops state store (SQLite by default,
PostgreSQL with MARLOPS_STATE_URL), table `playbook_runs`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from marlops.state_db import engine_for, write_transaction

_META = sa.MetaData()
RUNS = sa.Table(
    "playbook_runs", _META,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident", sa.String(200), nullable=False, unique=True),  # <fingerprint>@<startsAt>
    sa.Column("playbook", sa.String(64), nullable=False),
    sa.Column("alertname", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # running | done | failed | declined
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON: alert, steps
)


class PlaybookRunStore:
    def __init__(self, url: str) -> None:
        self._engine, _ = engine_for(url)
        self._sqlite = self._engine.dialect.name == "sqlite"
        _META.create_all(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def claim(self, incident: str, playbook: str, alertname: str, alert: dict[str, Any]) -> int | None:
        """A new run of `incident` (its seq), or None when it already ran (or runs): claimed atomically."""
        row = {"incident": incident, "playbook": playbook, "alertname": alertname, "status": "running",
               "started_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
               "detail": json.dumps({"alert": alert, "steps": []})}
        try:
            with self._engine.connect() as conn, write_transaction(conn, self._sqlite):
                return int(conn.execute(sa.insert(RUNS).values(**row)).inserted_primary_key[0])
        except sa.exc.IntegrityError:
            return None

    def finish(self, seq: int, status: str, alert: dict[str, Any], steps: list[dict[str, Any]]) -> None:
        with self._engine.connect() as conn, write_transaction(conn, self._sqlite):
            conn.execute(sa.update(RUNS).where(RUNS.c.seq == seq).values(
                status=status, detail=json.dumps({"alert": alert, "steps": steps}, default=str)))

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(RUNS).order_by(RUNS.c.seq.desc()).limit(limit)).mappings().all()
        return [{**{k: v for k, v in r.items() if k != "detail"}, **json.loads(r["detail"])} for r in rows]
