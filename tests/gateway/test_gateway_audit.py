import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from contracts.audit import AuditEvent
from gateway.audit.store import AuditStore
from gateway.errors import AuditError

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def event(kind: str = "order", **payload: object) -> AuditEvent:
    return AuditEvent(kind=kind, occurred_at=datetime(2024, 1, 2, 21, tzinfo=timezone.utc),  # type: ignore[arg-type]
                      principal="gateway", payload=dict(payload) or {"n": 1})


def _postgres_reachable() -> str | None:
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: skip with the reason
        return f"PostgreSQL at {PG_URL} not reachable: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    if request.param == "sqlite":
        s = AuditStore(f"sqlite:///{tmp_path / 'nested' / 'audit.db'}")
        yield s
        s.close()
        return
    why = _postgres_reachable()
    if why is not None:
        pytest.skip(why)
    s = AuditStore(PG_URL, table=f"gateway_audit_test_{uuid.uuid4().hex[:12]}")
    yield s
    s.drop()
    s.close()


def _tamper(store: AuditStore, sql: str) -> None:
    engine = sa.create_engine(store.url)
    with engine.begin() as conn:
        conn.execute(sa.text(sql.format(table=store.table_name)))
    engine.dispose()


def test_append_when_events_written_then_sequence_counts_and_newest_first_listing(store: AuditStore) -> None:
    assert store.append(event("decision", symbol="AAPL")) == 1
    assert store.append_many([event("order", status="intent"), event("fill", qty=3.5)]) == [2, 3]
    assert store.count() == 3
    assert store.count("order") == 1
    assert store.counts_by_kind() == {"decision": 1, "order": 1, "fill": 1}
    latest = store.list(limit=2)
    assert [row["seq"] for row in latest] == [3, 2]
    assert latest[0]["payload"] == {"qty": 3.5}
    assert latest[1]["prev_hash"] == store.list(kind="decision")[0]["hash"]
    assert [row["seq"] for row in store.list(limit=5, before_seq=3)] == [2, 1]
    assert store.verify_chain()


def test_verify_chain_when_payload_edited_with_raw_sql_then_false_at_that_row(store: AuditStore) -> None:
    store.append_many([event(n=1), event(n=2), event(n=3)])
    assert store.verify_chain()
    _tamper(store, "UPDATE {table} SET payload = '{{\"n\": 999}}' WHERE seq = 2")
    assert not store.verify_chain()
    assert store.first_broken_seq() == 2


def test_verify_chain_when_row_deleted_then_false(store: AuditStore) -> None:
    store.append_many([event(n=1), event(n=2), event(n=3)])
    _tamper(store, "DELETE FROM {table} WHERE seq = 2")
    assert store.first_broken_seq() == 3


def test_append_when_many_threads_write_then_chain_stays_linear(store: AuditStore) -> None:
    def writer(i: int) -> None:
        for j in range(10):
            store.append(event(writer=i, j=j))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 40
    assert store.verify_chain()


def test_append_when_store_reopened_then_chain_continues(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    first = AuditStore(url)
    first.append(event(n=1))
    first.close()
    second = AuditStore(url)
    assert second.append(event(n=2)) == 2
    assert second.verify_chain()
    second.close()


def test_open_when_sqlite_file_then_wal_journal_mode(tmp_path: Path) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'wal.db'}")
    store.append(event())
    store.close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_open_when_database_unreachable_then_audit_error_names_url() -> None:
    with pytest.raises(AuditError, match="127.0.0.1:1"):
        AuditStore("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")


def test_append_when_payload_has_datetime_and_nan_then_stored_as_text_and_chain_verifies(store: AuditStore) -> None:
    store.append(AuditEvent(kind="fill", occurred_at=datetime(2024, 1, 2, tzinfo=timezone.utc), principal="g",
                            payload={"at": datetime(2024, 1, 2, 21, tzinfo=timezone.utc), "x": float("nan")}))
    row = store.list()[0]
    assert row["payload"] == {"at": "2024-01-02T21:00:00+00:00", "x": "nan"}
    assert store.verify_chain()
