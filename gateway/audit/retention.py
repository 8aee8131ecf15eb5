"""Retention: archive audit rows older than the retention period, then remove them from the live table.

Rows leave the table only as a PREFIX of the chain (never a hole), each archive file holds them with
their hashes (gzip JSON lines, re-verifiable with `verify_archive`), and the state key
`audit_checkpoint` records the (seq, hash) of the last archived row, so `verify_audit` starts there
and still proves every row that remains. Archives chain too: the first row of each archive links to
the last row of the previous one.

The table refuses DELETE (gateway.audit.store installs the triggers); pruning lifts that guard for
its own transaction only, because the guard exists to stop edits of history, and archiving a proved
prefix with a checkpoint is the one deletion that keeps history provable.
"""

import gzip
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from gateway.audit.store import AuditStore
from gateway.audit.verify import verify_audit, walk_chain
from gateway.errors import AuditError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneReport:
    cutoff: datetime  # rows that occurred before this are old enough
    pruned: int
    first_seq: int | None
    last_seq: int | None
    archive: Path | None  # None when nothing was pruned or on a dry run
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff.isoformat(), "pruned": self.pruned, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "archive": None if self.archive is None else str(self.archive),
                "dry_run": self.dry_run}


def _check_segment(rows: list[dict[str, Any]]) -> None:
    first = rows[0]
    *_, broken = walk_chain(rows, int(first["seq"]) - 1, str(first["prev_hash"]), None)
    if broken is not None:
        raise AuditError(f"refusing to prune a broken chain: {broken.problem}")


def _writer(store: AuditStore, archive_dir: Path) -> Any:
    def write(rows: list[dict[str, Any]]) -> Path:
        _check_segment(rows)
        archive_dir.mkdir(parents=True, exist_ok=True)
        target = archive_dir / f"{store.table_name}-{rows[0]['seq']:012d}-{rows[-1]['seq']:012d}.jsonl.gz"
        temporary = target.with_name(target.name + ".tmp")
        with temporary.open("wb") as raw:
            # mtime=0: the same rows always give the same bytes.
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
                for row in rows:
                    handle.write((json.dumps(row, sort_keys=True, allow_nan=False) + "\n").encode())
            raw.flush()
            # On disk before the rows leave the database.
            os.fsync(raw.fileno())
        if target.exists():
            # A prune whose commit failed after its archive was written leaves the same bytes behind.
            if target.read_bytes() == temporary.read_bytes():
                temporary.unlink()
                return target
            temporary.unlink()
            raise AuditError(f"archive {target} already exists with other content; refusing to overwrite it")
        temporary.replace(target)
        return target

    return write


def prune_audit(
    store: AuditStore,
    retention_days: int,
    archive_dir: Path | str,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> PruneReport:
    """Archive and remove the rows older than `retention_days`; the trail must verify first."""
    if retention_days < 1:
        raise AuditError(f"retention_days must be at least 1, got {retention_days}")
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=retention_days)
    report = verify_audit(store)
    if not report.ok:
        raise AuditError(f"refusing to prune {store.table_name}: the trail does not verify ({report.problem})")
    rows, path = store.prune_prefix(older_than=cutoff, archive=_writer(store, Path(archive_dir)), dry_run=dry_run)
    result = PruneReport(
        cutoff=cutoff, pruned=len(rows), first_seq=rows[0]["seq"] if rows else None,
        last_seq=rows[-1]["seq"] if rows else None, archive=path, dry_run=dry_run,
    )
    if rows and not dry_run:
        logger.info("audit %s: archived seqs %d..%d to %s", store.table_name, rows[0]["seq"], rows[-1]["seq"], path)
    return result


def read_archive(path: Path | str) -> list[dict[str, Any]]:
    try:
        with gzip.open(path, "rt") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except (OSError, ValueError) as exc:
        raise AuditError(f"cannot read audit archive {path}: {exc}") from exc


def verify_archive(path: Path | str) -> tuple[int, int, str]:
    """(first seq, last seq, last hash) of an archive whose rows all verify; AuditError naming the break otherwise."""
    rows = read_archive(path)
    if not rows:
        raise AuditError(f"audit archive {path} is empty")
    _check_segment(rows)
    return int(rows[0]["seq"]), int(rows[-1]["seq"]), str(rows[-1]["hash"])
