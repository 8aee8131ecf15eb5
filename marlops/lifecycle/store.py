"""The lifecycle's state: deployment RFCs, approval decisions and codes, stage records, the hash-chained event
log, bar records and the market clock. SQLAlchemy Core; SQLite (`sqlite:///path`, WAL) or PostgreSQL
(`postgresql+psycopg://...`); the same database as the routing table (`StatePaths.state_url`).

Tables (prefix `lifecycle` by default, `table=` for another):
  <p>_head            ONE row: seq and hash of the last event. Every write transaction locks it (SQLite
                      `BEGIN IMMEDIATE`, PostgreSQL `SELECT ... FOR UPDATE`), so writers serialise.
  <p>_rfcs            one row per RFC; unique (candidate_run_id, digest); `ordinal` orders them (latest last)
  <p>_decisions       approval decisions, append-only (triggers refuse UPDATE/DELETE)
  <p>_approval_codes  one-time approval codes: only their sha256, bound to an RFC and its digest
  <p>_stages          one row per (candidate_run_id, stage), upserted
  <p>_events          append-only, hash-chained: each row's sha256 covers seq, kind, principal, candidate run,
                      detail, time and the previous row's hash; the head row must agree with the last row
  <p>_bars            one row per (scope, bar_index): a BarRecord as JSON
  <p>_clocks          name -> the last market timestamp seen; never moves backwards
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from marlops.lifecycle.errors import (
    ApprovalRefusedError,
    LifecycleError,
    RfcNotFoundError,
)
from marlops.lifecycle.records import BarRecord
from marlops.lifecycle.rfc import DeploymentRFC, canonical_json, jsonable, rfc_digest
from marlops.state_db import (
    StateDbStore,
    engine_for,
    install_append_only_guards,
    read_snapshot,
    write_transaction,
)

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
APPEND_ONLY_MESSAGE = "lifecycle log is append-only"
RFC_STATUSES = ("pending", "approved", "rejected", "superseded", "deployed", "rolled_back")
OPEN_RFC_STATUSES = ("pending", "approved")  # what a new RFC of the same candidate run supersedes
STAGE_STATUSES = ("running", "passed", "blocked", "rolled_back", "skipped")
DECISIONS = ("approve", "reject")
SYSTEM_PRINCIPAL = "system"
_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
_HEAD_ID = 1


@dataclass(frozen=True)
class RfcSummary:
    rfc_id: str
    candidate_run_id: str
    candidate: dict[str, str]
    production: dict[str, str] | None
    status: str
    digest: str
    created_at: str


@dataclass(frozen=True)
class ApprovalDecision:
    rfc_id: str
    rfc_digest: str
    decision: str  # "approve" | "reject"
    principal: str
    role: str
    comment: str
    decided_at: str
    channel: str  # "cli" | "dagster" | "demo"


@dataclass(frozen=True)
class StageRecord:
    candidate_run_id: str
    stage: str
    status: str  # running | passed | blocked | rolled_back | skipped
    detail: dict[str, Any]
    updated_at: str


@dataclass(frozen=True)
class LifecycleEvent:
    seq: int
    kind: str
    principal: str
    candidate_run_id: str
    detail: dict[str, Any]
    at: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ApprovalCode:
    """A one-time approval code as stored: its sha256 only, never the code."""

    code_sha256: str
    rfc_id: str
    rfc_digest: str
    principal: str
    role: str
    issued_at: str
    expires_at: str
    used_at: str | None


def event_hash(row: Mapping[str, Any]) -> str:
    """sha256 over one event's content and the previous event's hash."""
    body = {key: row[key] for key in ("seq", "kind", "principal", "candidate_run_id", "detail", "at", "prev_hash")}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _big() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class LifecycleStore(StateDbStore):
    """See the module docstring. Thread-safe; several processes may share one database."""

    def __init__(self, url: str, *, table: str = "lifecycle") -> None:
        if not _PREFIX.match(table):
            raise LifecycleError(f"lifecycle table prefix {table!r} must match {_PREFIX.pattern}")
        self.url = url
        self._shown = make_url(url).render_as_string()
        self._lock = threading.RLock()
        md = sa.MetaData()
        self._head = sa.Table(
            f"{table}_head", md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("seq", _big(), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
        )
        self._rfcs = sa.Table(
            f"{table}_rfcs", md,
            sa.Column("rfc_id", sa.String(120), primary_key=True),
            sa.Column("ordinal", _big(), nullable=False, unique=True),
            sa.Column("candidate_run_id", sa.String(200), nullable=False, index=True),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("created_at", sa.String(40), nullable=False),
            sa.Column("updated_at", sa.String(40), nullable=False),
            sa.Column("body", sa.JSON(), nullable=False),
            sa.Column("plot", sa.LargeBinary(), nullable=True),
            sa.UniqueConstraint("candidate_run_id", "digest", name=f"{table}_rfcs_run_digest"),
        )
        self._decisions = sa.Table(
            f"{table}_decisions", md,
            sa.Column("id", _big(), primary_key=True, autoincrement=True),
            sa.Column("rfc_id", sa.String(120), nullable=False, index=True),
            sa.Column("rfc_digest", sa.String(64), nullable=False),
            sa.Column("decision", sa.String(10), nullable=False),
            sa.Column("principal", sa.String(200), nullable=False),
            sa.Column("role", sa.String(40), nullable=False),
            sa.Column("comment", sa.Text(), nullable=False),
            sa.Column("decided_at", sa.String(40), nullable=False),
            sa.Column("channel", sa.String(40), nullable=False),
        )
        self._codes = sa.Table(
            f"{table}_approval_codes", md,
            sa.Column("code_sha256", sa.String(64), primary_key=True),
            sa.Column("rfc_id", sa.String(120), nullable=False),
            sa.Column("rfc_digest", sa.String(64), nullable=False),
            sa.Column("principal", sa.String(200), nullable=False),
            sa.Column("role", sa.String(40), nullable=False),
            sa.Column("issued_at", sa.String(40), nullable=False),
            sa.Column("expires_at", sa.String(40), nullable=False),
            sa.Column("used_at", sa.String(40), nullable=True),
        )
        self._stages = sa.Table(
            f"{table}_stages", md,
            sa.Column("candidate_run_id", sa.String(200), primary_key=True),
            sa.Column("stage", sa.String(80), primary_key=True),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("detail", sa.JSON(), nullable=False),
            sa.Column("updated_at", sa.String(40), nullable=False),
        )
        self._events = sa.Table(
            f"{table}_events", md,
            sa.Column("seq", _big(), primary_key=True, autoincrement=False),
            sa.Column("kind", sa.String(80), nullable=False, index=True),
            sa.Column("principal", sa.String(200), nullable=False),
            sa.Column("candidate_run_id", sa.String(200), nullable=False, index=True),
            sa.Column("detail", sa.JSON(), nullable=False),
            sa.Column("at", sa.String(40), nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False, unique=True),
        )
        self._bars = sa.Table(
            f"{table}_bars", md,
            sa.Column("scope", sa.String(200), primary_key=True),
            sa.Column("bar_index", _big(), primary_key=True, autoincrement=False),
            sa.Column("timestamp", sa.String(40), nullable=False),
            sa.Column("body", sa.JSON(), nullable=False),
        )
        self._clocks = sa.Table(
            f"{table}_clocks", md,
            sa.Column("name", sa.String(80), primary_key=True),
            sa.Column("ts", sa.String(40), nullable=False),
            sa.Column("updated_at", sa.String(40), nullable=False),
        )
        self._metadata = md
        try:
            self._engine, self._in_memory = engine_for(url)
            self._sqlite = self._engine.dialect.name == "sqlite"
            md.create_all(self._engine)
            self._install_guards()
            insert = sqlite.insert if self._sqlite else postgresql.insert
            with self._engine.connect() as conn, write_transaction(conn, self._sqlite):
                conn.execute(insert(self._head).values(id=_HEAD_ID, seq=0, hash=GENESIS_HASH)
                             .on_conflict_do_nothing(index_elements=["id"]))
        except SQLAlchemyError as exc:
            raise LifecycleError(f"cannot open the lifecycle store {self._shown}: {exc}") from exc

    @property
    def table_names(self) -> dict[str, str]:
        """Short name (head, rfcs, decisions, approval_codes, stages, events, bars, clocks) -> table name."""
        prefix = self._head.name.removesuffix("head")
        return {name.removeprefix(prefix): name for name in self._metadata.tables}

    # ---- setup -------------------------------------------------------------------------------------------------
    def _install_guards(self) -> None:
        install_append_only_guards(self._engine, self._sqlite, (self._events.name, self._decisions.name),
                                   message=APPEND_ONLY_MESSAGE, namespace="lifecycle")

    # ---- transactions ------------------------------------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                if self._in_memory:
                    with self._lock:
                        yield conn
                else:
                    yield conn
        except SQLAlchemyError as exc:
            raise LifecycleError(f"reading the lifecycle store {self._shown} failed: {exc}") from exc

    @contextmanager
    def _writing(self, what: str) -> Iterator[Connection]:
        """One write transaction holding the head row: writers serialise, the event chain stays linear."""
        try:
            with self._lock, self._engine.connect() as conn, write_transaction(conn, self._sqlite):
                query = sa.select(self._head.c.id).where(self._head.c.id == _HEAD_ID)
                if not self._sqlite:
                    query = query.with_for_update()
                conn.execute(query).first()
                yield conn
        except SQLAlchemyError as exc:
            raise LifecycleError(f"{what} in the lifecycle store {self._shown} failed (nothing written): {exc}") from exc

    def _append_event(self, conn: Connection, kind: str, principal: str, detail: Mapping[str, Any],
                      candidate_run_id: str = "") -> LifecycleEvent:
        if not isinstance(kind, str) or not kind.strip():
            raise LifecycleError("a lifecycle event needs a kind")
        if not isinstance(principal, str) or not principal.strip():
            raise LifecycleError(f"lifecycle event {kind!r} needs a principal")
        head = conn.execute(sa.select(self._head).where(self._head.c.id == _HEAD_ID)).one()
        last = conn.execute(sa.select(self._events.c.seq, self._events.c.hash)
                            .order_by(self._events.c.seq.desc()).limit(1)).first()
        tail = (0, GENESIS_HASH) if last is None else (int(last.seq), str(last.hash))
        if tail != (int(head.seq), str(head.hash)):
            raise LifecycleError(
                f"the lifecycle event log {self._events.name} ends at seq {tail[0]} but its head records seq "
                f"{head.seq}: the log was altered; refusing to write")
        row = {"seq": tail[0] + 1, "kind": kind.strip(), "principal": principal.strip(),
               "candidate_run_id": candidate_run_id or "", "detail": jsonable(dict(detail)), "at": _now(),
               "prev_hash": tail[1]}
        row["hash"] = event_hash(row)
        conn.execute(sa.insert(self._events).values(**row))
        conn.execute(sa.update(self._head).where(self._head.c.id == _HEAD_ID).values(seq=row["seq"], hash=row["hash"]))
        return LifecycleEvent(**row)

    # ---- RFCs ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _rfc_of(row: Any) -> DeploymentRFC:
        body = dict(row.body)
        body.pop("equity_plot_sha256", None)
        return DeploymentRFC(**body, equity_plot_png=None if row.plot is None else bytes(row.plot))

    @staticmethod
    def _summary_of(row: Any) -> RfcSummary:
        body = row.body
        return RfcSummary(rfc_id=row.rfc_id, candidate_run_id=row.candidate_run_id, candidate=dict(body["candidate"]),
                          production=None if body["production"] is None else dict(body["production"]),
                          status=row.status, digest=row.digest, created_at=row.created_at)

    def save_rfc(self, rfc: DeploymentRFC) -> DeploymentRFC:
        """Store `rfc`; idempotent on (candidate_run_id, digest): the stored RFC is returned. A new digest for the
        same candidate run supersedes that run's open (pending, approved) RFCs. Saving again an RFC that is no
        longer the latest of its run makes it the latest again (its content is what is current)."""
        if rfc.digest != rfc_digest(rfc):
            raise LifecycleError(f"{rfc.rfc_id}: its digest {rfc.digest[:12]} does not match its content "
                                 f"({rfc_digest(rfc)[:12]}); build RFCs with build_rfc")
        with self._writing(f"saving {rfc.rfc_id}") as conn:
            existing = conn.execute(sa.select(self._rfcs).where(
                self._rfcs.c.candidate_run_id == rfc.candidate_run_id, self._rfcs.c.digest == rfc.digest)).first()
            if existing is None:
                clash = conn.execute(sa.select(self._rfcs.c.digest).where(self._rfcs.c.rfc_id == rfc.rfc_id)).first()
                if clash is not None:
                    raise LifecycleError(f"RFC id {rfc.rfc_id} is taken by an RFC with digest {clash.digest}")
            elif self._is_latest(conn, existing):
                return self._rfc_of(existing)
            self._supersede_open(conn, rfc.candidate_run_id, keep=rfc.rfc_id if existing is None else existing.rfc_id)
            ordinal = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(self._rfcs.c.ordinal), 0))).scalar_one()) + 1
            now = _now()
            if existing is None:
                conn.execute(sa.insert(self._rfcs).values(
                    rfc_id=rfc.rfc_id, ordinal=ordinal, candidate_run_id=rfc.candidate_run_id, digest=rfc.digest,
                    status="pending", created_at=rfc.created_at or now, updated_at=now,
                    body=rfc.as_dict(), plot=rfc.equity_plot_png))
                self._append_event(conn, "rfc_created", SYSTEM_PRINCIPAL,
                                   {"rfc_id": rfc.rfc_id, "digest": rfc.digest, "candidate": rfc.candidate,
                                    "production": rfc.production}, rfc.candidate_run_id)
                stored = rfc
            else:
                status = existing.status
                if status == "superseded":
                    last = self._last_decision(conn, existing.rfc_id)
                    status = "pending" if last is None else ("approved" if last.decision == "approve" else "rejected")
                conn.execute(sa.update(self._rfcs).where(self._rfcs.c.rfc_id == existing.rfc_id).values(
                    ordinal=ordinal, status=status, updated_at=now))
                self._append_event(conn, "rfc_reopened", SYSTEM_PRINCIPAL,
                                   {"rfc_id": existing.rfc_id, "digest": existing.digest, "status": status},
                                   rfc.candidate_run_id)
                stored = self._rfc_of(existing)
        logger.info("saved %s (candidate run %s, digest %s)", stored.rfc_id, stored.candidate_run_id, stored.digest)
        return stored

    def _is_latest(self, conn: Connection, row: Any) -> bool:
        top = conn.execute(sa.select(sa.func.max(self._rfcs.c.ordinal)).where(
            self._rfcs.c.candidate_run_id == row.candidate_run_id)).scalar_one()
        return top is not None and int(top) == int(row.ordinal)

    def _supersede_open(self, conn: Connection, candidate_run_id: str, *, keep: str) -> None:
        rows = conn.execute(sa.select(self._rfcs.c.rfc_id, self._rfcs.c.status).where(
            self._rfcs.c.candidate_run_id == candidate_run_id, self._rfcs.c.rfc_id != keep,
            self._rfcs.c.status.in_(OPEN_RFC_STATUSES))).all()
        for row in rows:
            conn.execute(sa.update(self._rfcs).where(self._rfcs.c.rfc_id == row.rfc_id).values(
                status="superseded", updated_at=_now()))
            self._append_event(conn, "rfc_superseded", SYSTEM_PRINCIPAL,
                               {"rfc_id": row.rfc_id, "was": row.status, "by": keep}, candidate_run_id)

    def _rfc_row(self, conn: Connection, rfc_id: str) -> Any:
        row = conn.execute(sa.select(self._rfcs).where(self._rfcs.c.rfc_id == rfc_id)).first()
        if row is None:
            known = [r.rfc_id for r in conn.execute(
                sa.select(self._rfcs.c.rfc_id).order_by(self._rfcs.c.ordinal.desc()).limit(20))]
            raise RfcNotFoundError(f"no deployment RFC {rfc_id!r} in {self._shown}; known: "
                                   f"{', '.join(known) if known else '(none yet)'}")
        return row

    def rfc(self, rfc_id: str) -> DeploymentRFC:
        """The RFC; RfcNotFoundError (listing the known ids) when there is none."""
        with self._reading() as conn:
            return self._rfc_of(self._rfc_row(conn, rfc_id))

    def rfc_status(self, rfc_id: str) -> str:
        with self._reading() as conn:
            return str(self._rfc_row(conn, rfc_id).status)

    def rfc_summary(self, rfc_id: str) -> RfcSummary:
        with self._reading() as conn:
            return self._summary_of(self._rfc_row(conn, rfc_id))

    def latest_rfc(self, candidate_run_id: str) -> DeploymentRFC | None:
        """The RFC saved last for that candidate run (whatever its status), or None."""
        with self._reading() as conn:
            row = conn.execute(sa.select(self._rfcs).where(self._rfcs.c.candidate_run_id == candidate_run_id)
                               .order_by(self._rfcs.c.ordinal.desc()).limit(1)).first()
            return None if row is None else self._rfc_of(row)

    def list_rfcs(self) -> list[RfcSummary]:
        """Every RFC, newest (last saved) first."""
        with self._reading() as conn:
            return [self._summary_of(r) for r in conn.execute(sa.select(self._rfcs).order_by(self._rfcs.c.ordinal.desc()))]

    def set_rfc_status(self, rfc_id: str, status: str, *, principal: str = SYSTEM_PRINCIPAL) -> None:
        """Set the status (one of RFC_STATUSES) and record an `rfc_status` event."""
        if status not in RFC_STATUSES:
            raise LifecycleError(f"unknown RFC status {status!r} (statuses: {', '.join(RFC_STATUSES)})")
        with self._writing(f"setting the status of {rfc_id}") as conn:
            row = self._rfc_row(conn, rfc_id)
            if row.status == status:
                return
            conn.execute(sa.update(self._rfcs).where(self._rfcs.c.rfc_id == rfc_id).values(
                status=status, updated_at=_now()))
            self._append_event(conn, "rfc_status", principal, {"rfc_id": rfc_id, "from": row.status, "to": status},
                               row.candidate_run_id)

    # ---- approvals ---------------------------------------------------------------------------------------------
    @staticmethod
    def _decision_of(row: Any) -> ApprovalDecision:
        return ApprovalDecision(rfc_id=row.rfc_id, rfc_digest=row.rfc_digest, decision=row.decision,
                                principal=row.principal, role=row.role, comment=row.comment,
                                decided_at=row.decided_at, channel=row.channel)

    def _last_decision(self, conn: Connection, rfc_id: str) -> ApprovalDecision | None:
        row = conn.execute(sa.select(self._decisions).where(self._decisions.c.rfc_id == rfc_id)
                           .order_by(self._decisions.c.id.desc()).limit(1)).first()
        return None if row is None else self._decision_of(row)

    def record_decision(self, decision: ApprovalDecision, *, consume_code_sha256: str | None = None) -> ApprovalDecision:
        """Append the decision, set the RFC approved/rejected and write an `rfc_decision` event: one transaction.
        Re-checked inside it (ApprovalRefusedError, nothing written): the RFC is pending and undecided
        (RFC_CLOSED), the latest of its candidate run and of the decision's digest (STALE_DIGEST). With
        `consume_code_sha256` the approval code is marked used in the same transaction (CODE_USED if it was)."""
        if decision.decision not in DECISIONS:
            raise ApprovalRefusedError("INVALID_DECISION", f"decision must be one of {', '.join(DECISIONS)}, "
                                                           f"got {decision.decision!r}")
        with self._writing(f"recording the decision on {decision.rfc_id}") as conn:
            row = self._rfc_row(conn, decision.rfc_id)
            if not self._is_latest(conn, row):
                raise ApprovalRefusedError("STALE_DIGEST", f"{row.rfc_id} is no longer the latest RFC of candidate run "
                                                           f"{row.candidate_run_id}: the candidate changed")
            if decision.rfc_digest != row.digest:
                raise ApprovalRefusedError("STALE_DIGEST", f"the decision is of digest {decision.rfc_digest[:12]} but "
                                                           f"{row.rfc_id} has digest {row.digest[:12]}")
            previous = self._last_decision(conn, row.rfc_id)
            if row.status != "pending" or previous is not None:
                by = f" ({previous.decision} by {previous.principal})" if previous is not None else ""
                raise ApprovalRefusedError("RFC_CLOSED", f"{row.rfc_id} is {row.status}{by}; a decision is final")
            if consume_code_sha256 is not None:
                used = conn.execute(sa.update(self._codes).where(
                    self._codes.c.code_sha256 == consume_code_sha256, self._codes.c.used_at.is_(None),
                    self._codes.c.rfc_id == row.rfc_id).values(used_at=decision.decided_at))
                if used.rowcount != 1:
                    raise ApprovalRefusedError("CODE_USED", "this approval code was already used (codes are single use)")
            conn.execute(sa.insert(self._decisions).values(
                rfc_id=decision.rfc_id, rfc_digest=decision.rfc_digest, decision=decision.decision,
                principal=decision.principal, role=decision.role, comment=decision.comment,
                decided_at=decision.decided_at, channel=decision.channel))
            status = "approved" if decision.decision == "approve" else "rejected"
            conn.execute(sa.update(self._rfcs).where(self._rfcs.c.rfc_id == row.rfc_id).values(
                status=status, updated_at=_now()))
            self._append_event(conn, "rfc_decision", decision.principal, {
                "rfc_id": decision.rfc_id, "digest": decision.rfc_digest, "decision": decision.decision,
                "role": decision.role, "comment": decision.comment, "channel": decision.channel,
                "decided_at": decision.decided_at, "with_code": consume_code_sha256 is not None,
            }, row.candidate_run_id)
        logger.info("%s %s by %s (%s) via %s", decision.rfc_id, status, decision.principal, decision.role,
                    decision.channel)
        return decision

    def decisions(self, rfc_id: str) -> list[ApprovalDecision]:
        """The decisions on `rfc_id`, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(sa.select(self._decisions).where(self._decisions.c.rfc_id == rfc_id)
                                .order_by(self._decisions.c.id))
            return [self._decision_of(r) for r in rows]

    def save_approval_code(self, code: ApprovalCode) -> None:
        """Store a one-time code (its sha256 only) and record an `approval_code_issued` event."""
        with self._writing(f"issuing an approval code for {code.rfc_id}") as conn:
            row = self._rfc_row(conn, code.rfc_id)
            try:
                conn.execute(sa.insert(self._codes).values(**code.__dict__))
            except IntegrityError as exc:
                raise LifecycleError("approval code collision; issue another") from exc
            self._append_event(conn, "approval_code_issued", code.principal,
                               {"rfc_id": code.rfc_id, "digest": code.rfc_digest, "role": code.role,
                                "expires_at": code.expires_at}, row.candidate_run_id)

    def approval_code(self, code_sha256: str) -> ApprovalCode | None:
        with self._reading() as conn:
            row = conn.execute(sa.select(self._codes).where(self._codes.c.code_sha256 == code_sha256)).first()
            return None if row is None else ApprovalCode(**row._mapping)

    # ---- stages --------------------------------------------------------------------------------------------------
    @staticmethod
    def _stage_of(row: Any) -> StageRecord:
        return StageRecord(candidate_run_id=row.candidate_run_id, stage=row.stage, status=row.status,
                           detail=dict(row.detail), updated_at=row.updated_at)

    def set_stage(self, candidate_run_id: str, stage: str, status: str, detail: dict[str, Any]) -> None:
        """Upsert the (candidate_run_id, stage) record."""
        if status not in STAGE_STATUSES:
            raise LifecycleError(f"unknown stage status {status!r} (statuses: {', '.join(STAGE_STATUSES)})")
        if not candidate_run_id or not stage:
            raise LifecycleError("a stage record needs a candidate run id and a stage name")
        values = {"candidate_run_id": candidate_run_id, "stage": stage, "status": status,
                  "detail": jsonable(dict(detail)), "updated_at": _now()}
        insert = sqlite.insert if self._sqlite else postgresql.insert
        statement = insert(self._stages).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["candidate_run_id", "stage"],
            set_={"status": statement.excluded.status, "detail": statement.excluded.detail,
                  "updated_at": statement.excluded.updated_at})
        with self._writing(f"recording stage {stage} of {candidate_run_id}") as conn:
            conn.execute(statement)

    def stages(self, candidate_run_id: str) -> dict[str, StageRecord]:
        with self._reading() as conn:
            rows = conn.execute(sa.select(self._stages).where(self._stages.c.candidate_run_id == candidate_run_id)
                                .order_by(self._stages.c.updated_at, self._stages.c.stage))
            return {r.stage: self._stage_of(r) for r in rows}

    def stage_runs(self, stage: str, status: str | None = None) -> list[StageRecord]:
        """Every candidate run's record of `stage` (optionally only those with `status`), oldest update first."""
        query = sa.select(self._stages).where(self._stages.c.stage == stage)
        if status is not None:
            query = query.where(self._stages.c.status == status)
        with self._reading() as conn:
            rows = conn.execute(query.order_by(self._stages.c.updated_at, self._stages.c.candidate_run_id))
            return [self._stage_of(r) for r in rows]

    # ---- events ----------------------------------------------------------------------------------------------
    def record_event(self, kind: str, *, principal: str, detail: dict[str, Any],
                     candidate_run_id: str = "") -> LifecycleEvent:
        with self._writing(f"recording event {kind!r}") as conn:
            return self._append_event(conn, kind, principal, detail, candidate_run_id)

    @staticmethod
    def _event_of(row: Any) -> LifecycleEvent:
        return LifecycleEvent(seq=int(row.seq), kind=row.kind, principal=row.principal,
                              candidate_run_id=row.candidate_run_id, detail=row.detail, at=row.at,
                              prev_hash=row.prev_hash, hash=row.hash)

    def events(self, *, candidate_run_id: str | None = None, kind: str | None = None) -> list[LifecycleEvent]:
        """Events, oldest first, optionally of one candidate run and/or kind."""
        query = sa.select(self._events)
        if candidate_run_id is not None:
            query = query.where(self._events.c.candidate_run_id == candidate_run_id)
        if kind is not None:
            query = query.where(self._events.c.kind == kind)
        with self._reading() as conn:
            return [self._event_of(r) for r in conn.execute(query.order_by(self._events.c.seq))]

    def chain_problem(self) -> str | None:
        """None when the event chain is intact and ends where the head row says; else what is wrong."""
        with self._reading() as conn, read_snapshot(conn, self._sqlite):
            head = conn.execute(sa.select(self._head).where(self._head.c.id == _HEAD_ID)).one()
            prev, expected = GENESIS_HASH, 1
            for row in conn.execute(sa.select(self._events).order_by(self._events.c.seq)):
                event = self._event_of(row)
                if event.seq != expected:
                    return f"event seq {expected} is missing (next row is seq {event.seq})"
                if event.prev_hash != prev:
                    return f"event seq {event.seq} does not link to the event before it"
                if event_hash(event.__dict__) != event.hash:
                    return f"event seq {event.seq} was edited (its hash does not match its content)"
                prev, expected = event.hash, expected + 1
        if (expected - 1, prev) != (int(head.seq), str(head.hash)):
            return (f"the event chain ends at seq {expected - 1} but the head records seq {head.seq}: "
                    "events were removed from the end or the head was rewritten")
        return None

    def verify_chain(self) -> bool:
        problem = self.chain_problem()
        if problem is not None:
            logger.error("lifecycle event log %s broken: %s", self._events.name, problem)
        return problem is None

    def chain_head(self) -> str:
        """The hash of the last event ("" when there is none): the audit anchor."""
        with self._reading() as conn:
            head = conn.execute(sa.select(self._head).where(self._head.c.id == _HEAD_ID)).one()
        return "" if int(head.seq) == 0 else str(head.hash)

    # ---- bars ----------------------------------------------------------------------------------------------------
    def append_bars(self, scope: str, records: Sequence[BarRecord], *, advance_clock: str | None = None) -> None:
        """Append bar records under `scope` (e.g. "canary:<run_id>"). A bar index already stored with the same
        content is skipped (re-appending is harmless); with different content it is refused (LifecycleError).
        `advance_clock`: also move that clock to the last record's time, in the same transaction (live trading
        records a bar and advances the market clock with one write per bar)."""
        if not scope:
            raise LifecycleError("bar records need a scope, e.g. 'canary:<run_id>'")
        rows: dict[int, dict[str, Any]] = {}
        for record in records:
            body = jsonable(record.as_dict())
            if record.bar_index in rows and canonical_json(rows[record.bar_index]) != canonical_json(body):
                raise LifecycleError(f"bar {record.bar_index} of {scope} given twice with different content")
            rows[record.bar_index] = body
        if not rows:
            return
        with self._writing(f"appending {len(rows)} bar(s) to {scope}") as conn:
            stored = conn.execute(sa.select(self._bars.c.bar_index, self._bars.c.body).where(
                self._bars.c.scope == scope, self._bars.c.bar_index.in_(list(rows))))
            for row in stored:
                if canonical_json(row.body) != canonical_json(rows[int(row.bar_index)]):
                    raise LifecycleError(f"bar {row.bar_index} of {scope} is already stored with different content")
                del rows[int(row.bar_index)]
            if rows:
                conn.execute(sa.insert(self._bars), [
                    {"scope": scope, "bar_index": index, "timestamp": body["timestamp"], "body": body}
                    for index, body in sorted(rows.items())])
            if advance_clock is not None and records:
                self._advance(conn, records[-1].timestamp, advance_clock)

    def bars(self, scope: str, *, since_bar_index: int | None = None, last: int | None = None) -> list[BarRecord]:
        """The bars of `scope` in bar order; with `since_bar_index`, those with bar_index >= it (inclusive); with
        `last`, only the latest `last` of those (a live scope grows every bar: sensors read a window, not all)."""
        query = sa.select(self._bars.c.body).where(self._bars.c.scope == scope)
        if since_bar_index is not None:
            query = query.where(self._bars.c.bar_index >= since_bar_index)
        if last is not None:
            query = query.order_by(self._bars.c.bar_index.desc()).limit(max(0, last))
            with self._reading() as conn:
                return [BarRecord.from_dict(r.body) for r in reversed(list(conn.execute(query)))]
        with self._reading() as conn:
            return [BarRecord.from_dict(r.body) for r in conn.execute(query.order_by(self._bars.c.bar_index))]

    # ---- the market clock ------------------------------------------------------------------------------------
    def clock(self, name: str = "market") -> str | None:
        with self._reading() as conn:
            value = conn.execute(sa.select(self._clocks.c.ts).where(self._clocks.c.name == name)).scalar_one_or_none()
        return None if value is None else str(value)

    def advance_clock(self, ts: str, name: str = "market") -> None:
        """Set clock `name` to `ts` (ISO-8601; naive means UTC) unless it already is at or past it."""
        with self._writing(f"advancing clock {name}") as conn:
            self._advance(conn, ts, name)

    def _advance(self, conn: Connection, ts: str, name: str) -> None:
        moment = _instant(ts)
        current = conn.execute(sa.select(self._clocks.c.ts).where(self._clocks.c.name == name)).scalar_one_or_none()
        if current is None:
            conn.execute(sa.insert(self._clocks).values(name=name, ts=ts, updated_at=_now()))
        elif moment > _instant(str(current)):
            conn.execute(sa.update(self._clocks).where(self._clocks.c.name == name).values(ts=ts, updated_at=_now()))
        else:
            logger.debug("clock %s stays at %s (given %s, not later)", name, current, ts)



def _instant(ts: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(ts))
    except ValueError as exc:
        raise LifecycleError(f"clock time {ts!r} is not ISO-8601") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")

