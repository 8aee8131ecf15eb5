"""Verification catches every edit or deletion; retention archives a prefix and verification still holds."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from contracts.audit import AuditEvent
from gateway.audit.retention import prune_audit, read_archive, verify_archive
from gateway.audit.store import AuditStore
from gateway.audit.verify import verify_audit
from gateway.errors import AuditError

T0 = datetime(2015, 3, 2, 21, tzinfo=timezone.utc)
NOW = datetime(2024, 6, 3, 21, tzinfo=timezone.utc)


def event(n: int, at: datetime = T0) -> AuditEvent:
    return AuditEvent(kind="order", occurred_at=at, principal="gateway", payload={"n": n})


def tamper(store: AuditStore, *statements: str) -> None:
    """A DBA with full rights: drop the append-only triggers, then rewrite rows."""
    t = store.table_name
    guards = (
        [f'DROP TRIGGER IF EXISTS "{t}_no_update"', f'DROP TRIGGER IF EXISTS "{t}_no_delete"']
        if store.dialect == "sqlite"
        else [f'DROP TRIGGER IF EXISTS "{t}_append_only" ON "{t}"']
    )
    engine = sa.create_engine(store.url)
    with engine.begin() as conn:
        for statement in [*guards, *statements]:
            conn.execute(sa.text(statement.format(table=t, state=store.state_table_name)))
    engine.dispose()


def filled(store: AuditStore, n: int = 20) -> AuditStore:
    store.append_many([event(i) for i in range(1, n + 1)])
    return store


def test_verify_when_untouched_then_ok_with_rows_and_head(store: AuditStore) -> None:
    filled(store)
    report = verify_audit(store)
    assert report.ok and report.problem is None and report.first_broken_seq is None
    assert report.rows == 20 and report.head_seq == 20
    assert report.head_hash == store.read_state_key("audit_head")["hash"] == store.list(limit=1)[0]["hash"]


def test_verify_when_empty_then_ok_with_zero_rows(store: AuditStore) -> None:
    report = verify_audit(store)
    assert report.ok and report.rows == 0 and report.head_seq == 0


def test_verify_when_payload_edited_then_hash_mismatch_at_that_seq(store: AuditStore) -> None:
    filled(store)
    tamper(store, """UPDATE {table} SET payload = '{{"n": 999}}' WHERE seq = 17""")
    report = verify_audit(store)
    assert not report.ok and report.first_broken_seq == 17
    assert report.problem == "hash mismatch at seq 17 (row edited)"


def test_verify_when_hash_edited_then_mismatch_at_that_seq(store: AuditStore) -> None:
    filled(store)
    tamper(store, "UPDATE {table} SET hash = '" + "f" * 64 + "' WHERE seq = 5")
    report = verify_audit(store)
    assert (report.first_broken_seq, report.problem) == (5, "hash mismatch at seq 5 (row edited)")


def test_verify_when_row_rewritten_with_consistent_hash_then_next_prev_hash_mismatch(store: AuditStore) -> None:
    """An editor who recomputes the edited row's own hash is caught by the next row's link."""
    from gateway.audit.chain import row_hash

    filled(store)
    row = store.list(limit=1, before_seq=18)[0]
    forged = row_hash(seq=17, kind=row["kind"], occurred_at=datetime.fromisoformat(row["occurred_at"]),
                      principal="mallory", payload=row["payload"], prev_hash=row["prev_hash"])
    tamper(store, f"UPDATE {{table}} SET principal = 'mallory', hash = '{forged}' WHERE seq = 17")
    report = verify_audit(store)
    assert (report.first_broken_seq, report.problem) == (18, "prev_hash of seq 18 does not match seq 17")


def test_verify_when_middle_row_deleted_then_names_missing_seq(store: AuditStore) -> None:
    filled(store)
    tamper(store, "DELETE FROM {table} WHERE seq = 17")
    report = verify_audit(store)
    assert (report.first_broken_seq, report.problem) == (17, "seq 17 missing (row deleted)")


def test_verify_when_last_rows_deleted_then_head_record_reveals_it(store: AuditStore) -> None:
    filled(store, 42)
    tamper(store, "DELETE FROM {table} WHERE seq > 40")
    report = verify_audit(store)
    assert not report.ok and report.first_broken_seq == 41
    assert report.problem == "chain ends at seq 40 but the head record says 42 (rows deleted from the end)"


def test_verify_when_seqs_swapped_then_broken_at_first_swapped_row(store: AuditStore) -> None:
    filled(store)
    tamper(store, "UPDATE {table} SET seq = -1 WHERE seq = 3", "UPDATE {table} SET seq = 3 WHERE seq = 4",
           "UPDATE {table} SET seq = 4 WHERE seq = -1")
    report = verify_audit(store)
    assert (report.first_broken_seq, report.problem) == (3, "hash mismatch at seq 3 (row edited)")


def test_verify_when_rows_and_head_rewritten_then_only_anchor_catches_it(store: AuditStore, tmp_path: Path) -> None:
    filled(store)
    anchor = tmp_path / "anchor.json"
    written = store.export_anchor(anchor)
    assert json.loads(anchor.read_text()) == written and written["seq"] == 20
    assert verify_audit(store, anchor=anchor).ok
    last = store.list(limit=1, before_seq=19)[0]
    tamper(store, "DELETE FROM {table} WHERE seq > 18",
           f"""UPDATE {{state}} SET value = '{{{{"seq": 18, "hash": "{last['hash']}"}}}}' WHERE key = 'audit_head'""")
    assert verify_audit(store).ok  # consistent forgery: chain and head agree
    report = verify_audit(store, anchor=anchor)
    assert not report.ok and report.first_broken_seq == 19 and report.anchor_seq == 20
    assert "anchor records seq 20" in (report.problem or "")


def test_verify_when_anchor_hash_differs_then_broken_at_anchor_seq(store: AuditStore, tmp_path: Path) -> None:
    filled(store)
    anchor = tmp_path / "anchor.json"
    anchor.write_text(json.dumps({"seq": 7, "hash": "e" * 64, "at": NOW.isoformat()}))
    report = verify_audit(store, anchor=anchor)
    assert (report.ok, report.first_broken_seq) == (False, 7)
    assert "differs from the anchor" in (report.problem or "")


def test_verify_when_anchor_file_malformed_then_audit_error(store: AuditStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AuditError, match="cannot read audit anchor"):
        verify_audit(store, anchor=bad)


# ---- retention -----------------------------------------------------------------------------------
def _aged(store: AuditStore) -> None:
    """10 rows from 2015 (older than 7 years on NOW), then 5 from 2024."""
    store.append_many([event(i, T0 + timedelta(days=i)) for i in range(1, 11)])
    store.append_many([event(i, NOW - timedelta(days=1)) for i in range(11, 16)])


def test_prune_when_rows_older_than_retention_then_archived_checkpointed_and_rest_verifies(
    store: AuditStore, tmp_path: Path
) -> None:
    _aged(store)
    before = list(reversed(store.list(limit=10, before_seq=11)))
    result = prune_audit(store, 2557, tmp_path / "archive", now=NOW)
    assert (result.pruned, result.first_seq, result.last_seq) == (10, 1, 10)
    assert result.archive is not None and result.archive.name.endswith("-000000000001-000000000010.jsonl.gz")
    assert read_archive(result.archive) == before
    assert verify_archive(result.archive) == (1, 10, before[-1]["hash"])
    assert store.count() == 5
    assert store.read_state_key("audit_checkpoint")["seq"] == 10
    report = verify_audit(store)
    assert report.ok and report.rows == 5 and report.checkpoint_seq == 10 and report.head_seq == 15
    assert store.append(event(16, NOW)) == 16
    assert verify_audit(store).ok
    # Once pruned, the guard is back: an ordinary DELETE is refused again.
    engine = sa.create_engine(store.url)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {store.table_name} WHERE seq = 11"))
    engine.dispose()


def test_prune_when_nothing_old_enough_then_nothing_changes(store: AuditStore, tmp_path: Path) -> None:
    _aged(store)
    result = prune_audit(store, 4000, tmp_path / "archive", now=NOW)
    assert (result.pruned, result.archive) == (0, None)
    assert store.count() == 15 and store.read_state_key("audit_checkpoint") is None
    assert not (tmp_path / "archive").exists()


def test_prune_when_dry_run_then_reports_rows_and_deletes_nothing(store: AuditStore, tmp_path: Path) -> None:
    _aged(store)
    result = prune_audit(store, 2557, tmp_path / "archive", now=NOW, dry_run=True)
    assert (result.pruned, result.last_seq, result.archive) == (10, 10, None)
    assert store.count() == 15


def test_prune_when_old_row_follows_recent_one_then_only_prefix_pruned(store: AuditStore, tmp_path: Path) -> None:
    store.append_many([event(1, T0), event(2, NOW), event(3, T0)])
    result = prune_audit(store, 30, tmp_path / "archive", now=NOW)
    assert (result.pruned, result.last_seq) == (1, 1)
    assert verify_audit(store).ok and store.count() == 2


def test_prune_when_everything_pruned_then_chain_continues_from_checkpoint(store: AuditStore, tmp_path: Path) -> None:
    store.append_many([event(i, T0) for i in range(1, 4)])
    prune_audit(store, 30, tmp_path / "a", now=NOW)
    assert store.count() == 0
    assert verify_audit(store).ok and verify_audit(store).head_seq == 3
    assert store.append(event(4, NOW)) == 4
    report = verify_audit(store)
    assert report.ok and report.rows == 1 and report.head_seq == 4


def test_prune_twice_then_archives_chain_onto_each_other(store: AuditStore, tmp_path: Path) -> None:
    _aged(store)
    first = prune_audit(store, 2557, tmp_path / "a", now=NOW)
    second = prune_audit(store, 1, tmp_path / "a", now=NOW + timedelta(days=2))
    assert first.archive is not None and second.archive is not None
    assert (second.first_seq, second.last_seq) == (11, 15)
    assert read_archive(second.archive)[0]["prev_hash"] == verify_archive(first.archive)[2]
    assert verify_audit(store).ok and store.count() == 0


def test_prune_when_trail_broken_then_refused_and_nothing_deleted(store: AuditStore, tmp_path: Path) -> None:
    _aged(store)
    tamper(store, """UPDATE {table} SET payload = '{{"n": 0}}' WHERE seq = 2""")
    with pytest.raises(AuditError, match="refusing to prune"):
        prune_audit(store, 2557, tmp_path / "archive", now=NOW)
    assert store.count() == 15 and not (tmp_path / "archive").exists()


def test_verify_when_anchor_older_than_checkpoint_then_says_check_archive(store: AuditStore, tmp_path: Path) -> None:
    _aged(store)
    anchor = tmp_path / "anchor.json"
    store.export_anchor(anchor)
    assert verify_audit(store, anchor=anchor).ok
    early = tmp_path / "early.json"
    early.write_text(json.dumps({"seq": 3, "hash": store.list(limit=1, before_seq=4)[0]["hash"]}))
    prune_audit(store, 2557, tmp_path / "archive", now=NOW)
    assert verify_audit(store, anchor=anchor).ok  # seq 15 is still in the table
    report = verify_audit(store, anchor=early)
    assert not report.ok and "was pruned" in (report.problem or "")


def test_verify_archive_when_archived_row_edited_then_audit_error(store: AuditStore, tmp_path: Path) -> None:
    import gzip

    _aged(store)
    result = prune_audit(store, 2557, tmp_path / "archive", now=NOW)
    assert result.archive is not None
    rows = read_archive(result.archive)
    rows[4]["payload"] = {"n": -1}
    edited = tmp_path / "edited.jsonl.gz"
    with gzip.open(edited, "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    with pytest.raises(AuditError, match="hash mismatch at seq 5"):
        verify_archive(edited)


def test_verify_when_trail_predates_head_record_then_ok_with_note_until_next_append(store: AuditStore) -> None:
    filled(store, 3)
    tamper(store, "DELETE FROM {state} WHERE key = 'audit_head'")
    report = verify_audit(store)
    assert report.ok and report.notes and "no head record" in report.notes[0]
    store.append(event(4))
    again = verify_audit(store)
    assert again.ok and again.notes == () and again.head_seq == 4
