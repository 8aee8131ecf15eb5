"""Prove the audit trail intact, or name the first row that is not.

Three layers, each catching what the one before cannot:
  1. the hash chain: every row's hash covers its content and the previous row's hash, so an edited,
     reordered or deleted row breaks the chain at that row;
  2. the head record (state key `audit_head`, written in the transaction of every append): rows
     deleted from the END leave a shorter but valid chain, which only a record of the end reveals;
  3. an external anchor (`AuditStore.export_anchor`, kept outside the database): someone with full
     rights can rewrite rows, hashes and the head record consistently; the anchor, a (seq, hash)
     the chain must still contain, is the only proof against that. Export one regularly.
After retention pruning, verification starts at the checkpoint (state key `audit_checkpoint`: seq
and hash of the last archived row), so the remaining rows are still proved.
"""

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.audit.chain import GENESIS_HASH, row_hash
from gateway.audit.store import CHECKPOINT_KEY, HEAD_KEY, AuditStore
from gateway.errors import AuditError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    rows: int  # rows checked (those after the checkpoint)
    first_broken_seq: int | None
    problem: str | None
    head_seq: int  # where the chain as stored ends (the checkpoint's seq when no row is left)
    head_hash: str
    checkpoint_seq: int = 0
    anchor_seq: int | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "rows": self.rows, "first_broken_seq": self.first_broken_seq, "problem": self.problem,
            "head_seq": self.head_seq, "head_hash": self.head_hash, "checkpoint_seq": self.checkpoint_seq,
            "anchor_seq": self.anchor_seq, "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ChainBreak:
    """Where verification stopped (`seq`) and why, in words."""

    seq: int
    problem: str


def read_anchor(path: Path | str) -> tuple[int, str]:
    """The (seq, hash) an anchor file records; AuditError when it is missing or malformed."""
    try:
        data = json.loads(Path(path).read_text())
        return int(data["seq"]), str(data["hash"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"cannot read audit anchor {path}: {exc}") from exc


def walk_chain(
    rows: Any, start_seq: int, start_hash: str, watch_seq: int | None
) -> tuple[int, int, str, str | None, ChainBreak | None]:
    """Follow the chain from (start_seq, start_hash).

    Returns (rows seen, last seq, last hash, hash of `watch_seq` if reached, break). Streams: memory
    stays flat however long the trail.
    """
    expected_seq, expected_prev = start_seq + 1, start_hash
    count, last_seq, last_hash = 0, start_seq, start_hash
    watched: str | None = start_hash if watch_seq == start_seq else None
    for row in rows:
        count += 1
        seq = int(row["seq"])
        if seq != expected_seq:
            if seq < expected_seq:  # only possible when the checkpoint or seqs were rewritten
                return count, last_seq, last_hash, watched, ChainBreak(seq, f"seq {seq} out of order after seq {last_seq}")
            missing = f"seq {expected_seq}" if seq == expected_seq + 1 else f"seqs {expected_seq}..{seq - 1}"
            return count, last_seq, last_hash, watched, ChainBreak(expected_seq, f"{missing} missing (row deleted)")
        digest = row_hash(
            seq=seq, kind=row["kind"], occurred_at=datetime.fromisoformat(row["occurred_at"]),
            principal=row["principal"], payload=row["payload"], prev_hash=row["prev_hash"],
        )
        if digest != row["hash"]:
            return count, last_seq, last_hash, watched, ChainBreak(seq, f"hash mismatch at seq {seq} (row edited)")
        if row["prev_hash"] != expected_prev:
            what = "the checkpoint" if seq == start_seq + 1 and start_seq > 0 else f"seq {seq - 1}"
            if seq == 1:
                what = "the genesis hash"
            return count, last_seq, last_hash, watched, ChainBreak(seq, f"prev_hash of seq {seq} does not match {what}")
        if seq == watch_seq:
            watched = digest
        expected_seq, expected_prev = seq + 1, digest
        last_seq, last_hash = seq, digest
    return count, last_seq, last_hash, watched, None


def _head_break(head: Any, last_seq: int, last_hash: str, has_rows: bool) -> ChainBreak | None:
    head_seq, head_hash = int(head["seq"]), str(head["hash"])
    if head_seq > last_seq:
        return ChainBreak(last_seq + 1, f"chain ends at seq {last_seq} but the head record says {head_seq} "
                                    "(rows deleted from the end)")
    if head_seq < last_seq:
        return ChainBreak(head_seq + 1, f"chain ends at seq {last_seq} but the head record says {head_seq} "
                                    "(rows added outside the gateway, or the head record rolled back)")
    if head_hash != last_hash:
        return ChainBreak(head_seq, f"hash of seq {head_seq} differs from the head record "
                                f"({'row' if has_rows else 'checkpoint'} or head record edited)")
    return None


def verify_audit(store: AuditStore, *, anchor: Path | str | None = None) -> VerifyReport:
    """Check the whole trail after the retention checkpoint: chain, head record and (optionally) an anchor file."""
    anchor_point = read_anchor(anchor) if anchor is not None else None
    notes: list[str] = []
    with store.read_snapshot() as snap:
        checkpoint = snap.state_key(CHECKPOINT_KEY)
        head = snap.state_key(HEAD_KEY)
        start_seq, start_hash = (0, GENESIS_HASH) if checkpoint is None else (int(checkpoint["seq"]), str(checkpoint["hash"]))
        count, last_seq, last_hash, anchored_hash, broken = walk_chain(
            snap.rows(after_seq=start_seq), start_seq, start_hash, None if anchor_point is None else anchor_point[0]
        )
    if broken is None:
        if head is not None:
            broken = _head_break(head, last_seq, last_hash, has_rows=count > 0)
        elif last_seq > 0:
            notes.append("no head record (written by every append since it was introduced): rows deleted from "
                         "the end of the chain cannot be detected until the next append")
    if broken is None and anchor_point is not None:
        broken = _anchor_break(anchor_point, start_seq, last_seq, anchored_hash)
    report = VerifyReport(
        ok=broken is None, rows=count, first_broken_seq=None if broken is None else broken.seq,
        problem=None if broken is None else broken.problem, head_seq=last_seq, head_hash=last_hash,
        checkpoint_seq=start_seq, anchor_seq=None if anchor_point is None else anchor_point[0], notes=tuple(notes),
    )
    if not report.ok:
        logger.error("audit trail %s: %s", store.table_name, report.problem)
    return report


def _anchor_break(anchor: tuple[int, str], start_seq: int, last_seq: int, stored: str | None) -> ChainBreak | None:
    seq, digest = anchor
    if seq > last_seq:
        return ChainBreak(last_seq + 1, f"chain ends at seq {last_seq} but the anchor records seq {seq} "
                                    "(rows deleted from the end, head record rewritten)")
    if seq < start_seq:
        return ChainBreak(seq, f"anchor seq {seq} was pruned (checkpoint at seq {start_seq}): verify it against "
                           "the retention archive instead")
    if stored != digest:
        return ChainBreak(seq, f"hash of seq {seq} differs from the anchor (chain rewritten since the anchor)")
    return None
