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



def event(kind: str = "order", **payload: object) -> AuditEvent:
    return AuditEvent(kind=kind, occurred_at=datetime(2024, 1, 2, 21, tzinfo=timezone.utc),  # type: ignore[arg-type]
                      principal="gateway", payload=dict(payload) or {"n": 1})


def drop_guards(store: AuditStore) -> None:
    """What a DBA with full rights can do: remove the append-only triggers."""
    t = store.table_name
    statements = (
        [f'DROP TRIGGER IF EXISTS "{t}_no_update"', f'DROP TRIGGER IF EXISTS "{t}_no_delete"']
        if store.dialect == "sqlite"
        else [f'DROP TRIGGER IF EXISTS "{t}_append_only" ON "{t}"', f'DROP TRIGGER IF EXISTS "{t}_no_truncate" ON "{t}"']
    )
    engine = sa.create_engine(store.url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def _tamper(store: AuditStore, sql: str) -> None:
    drop_guards(store)
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
    assert not store.verify_chain()
    assert store.first_broken_seq() == 2  # the missing row itself


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


# ---- durable state table -------------------------------------------------------------------------
def _execute(store: AuditStore, *statements: str) -> None:
    engine = sa.create_engine(store.url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def _poison(store: AuditStore, table: str, column: str) -> None:
    """A database that refuses one particular row: the realistic way to make a write fail half-way."""
    if store.dialect == "sqlite":
        _execute(store, f'CREATE TRIGGER "{table}_poison" BEFORE INSERT ON "{table}" '
                        f"WHEN NEW.{column} = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
        return
    _execute(
        store,
        f'CREATE FUNCTION "{table}_poison"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN '
        f"IF NEW.{column} = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$",
        f'CREATE TRIGGER "{table}_poison" BEFORE INSERT ON "{table}" FOR EACH ROW EXECUTE FUNCTION "{table}_poison"()',
    )


@pytest.fixture
def poisoned_functions(store: AuditStore) -> Iterator[None]:
    yield
    if store.dialect == "postgresql":
        for table in (store.table_name, store.state_table_name):
            _execute(store, f'DROP FUNCTION IF EXISTS "{table}_poison"() CASCADE')


def test_append_many_when_state_given_then_written_with_events_and_none_deletes(store: AuditStore) -> None:
    assert store.append_many([event(n=1)], state={"last_bar": {"AAPL": 3}, "mode": "live"}) == [1]
    assert store.read_state_key("last_bar") == {"AAPL": 3}
    assert store.append(event(n=2), state={"mode": None, "at": datetime(2024, 1, 2, tzinfo=timezone.utc)}) == 2
    state = store.read_state()
    assert state["last_bar"] == {"AAPL": 3}
    assert "mode" not in state
    assert state["at"] == "2024-01-02T00:00:00+00:00"
    assert state["audit_head"] == {"seq": 2, "hash": store.list(limit=1)[0]["hash"]}
    assert store.read_state_key("mode", default="gone") == "gone"


def test_append_many_when_no_events_but_state_then_state_written_and_chain_unchanged(store: AuditStore) -> None:
    store.append(event(n=1))
    head = store.read_state_key("audit_head")
    assert store.append_many([], state={"last_bar": {"MSFT": 9}}) == []
    assert store.read_state_key("last_bar") == {"MSFT": 9}
    assert store.read_state_key("audit_head") == head
    assert store.count() == 1


def test_append_many_when_state_write_fails_then_neither_events_nor_state_written(
    store: AuditStore, poisoned_functions: None
) -> None:
    store.append(event(n=1), state={"kept": 1})
    head = store.read_state_key("audit_head")
    _poison(store, store.state_table_name, "key")
    with pytest.raises(AuditError, match="poisoned row"):
        store.append_many([event(n=2), event(n=3)], state={"kept": 2, "new": True, "poison": 1})
    assert store.count() == 1
    assert store.read_state() == {"kept": 1, "audit_head": head}
    assert store.append(event(n=4)) == 2  # the chain goes on where it was
    assert store.verify_chain()


def test_append_many_when_event_insert_fails_then_state_unchanged(store: AuditStore, poisoned_functions: None) -> None:
    store.append(event(n=1), state={"kept": 1})
    _poison(store, store.table_name, "principal")
    bad = AuditEvent(kind="order", occurred_at=datetime(2024, 1, 2, tzinfo=timezone.utc), principal="poison",
                     payload={"n": 3})
    with pytest.raises(AuditError, match="poisoned row"):
        store.append_many([event(n=2), bad], state={"kept": 2})
    assert store.read_state_key("kept") == 1
    assert store.read_state_key("audit_head")["seq"] == 1
    assert store.count() == 1


def test_append_when_state_key_reserved_or_too_long_then_audit_error_and_nothing_written(store: AuditStore) -> None:
    with pytest.raises(AuditError, match="written by the audit store itself"):
        store.append(event(n=1), state={"audit_head": {"seq": 99, "hash": "0" * 64}})
    with pytest.raises(AuditError, match="1 to 200 characters"):
        store.append_many([], state={"k" * 201: 1})
    assert store.count() == 0
    assert store.read_state() == {}


# ---- append-only enforcement ---------------------------------------------------------------------
@pytest.mark.parametrize("sql", ["UPDATE {table} SET principal = 'mallory' WHERE seq = 1",
                                 "DELETE FROM {table} WHERE seq = 1"])
def test_raw_sql_when_update_or_delete_then_refused_by_trigger_and_row_unchanged(store: AuditStore, sql: str) -> None:
    store.append(event(n=1))
    engine = sa.create_engine(store.url)
    with pytest.raises(sa.exc.DBAPIError, match="audit trail is append-only"), engine.begin() as conn:
        conn.execute(sa.text(sql.format(table=store.table_name)))
    engine.dispose()
    assert store.list()[0]["principal"] == "gateway"
    assert store.verify_chain()


def test_open_when_table_exists_without_triggers_then_triggers_installed(store: AuditStore) -> None:
    store.append(event(n=1))
    drop_guards(store)
    reopened = AuditStore(store.url, table=store.table_name)
    engine = sa.create_engine(store.url)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {store.table_name}"))
    engine.dispose()
    reopened.close()
    assert store.count() == 1


def test_append_when_last_rows_deleted_behind_its_back_then_refuses_to_extend_chain(store: AuditStore) -> None:
    store.append_many([event(n=1), event(n=2), event(n=3)])
    _tamper(store, "DELETE FROM {table} WHERE seq = 3")
    with pytest.raises(AuditError, match="ends at seq 2 but its head record says seq 3"):
        store.append(event(n=4))
    assert store.count() == 2


def test_open_when_create_false_and_no_table_then_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit database"):
        AuditStore(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    assert not (tmp_path / "missing.db").exists()
    AuditStore(f"sqlite:///{tmp_path / 'other.db'}", table="other").close()
    with pytest.raises(AuditError, match="no audit table 'gateway_audit'"):
        AuditStore(f"sqlite:///{tmp_path / 'other.db'}", create=False)


def test_open_when_table_name_not_an_identifier_then_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="must match"):
        AuditStore(f"sqlite:///{tmp_path / 'a.db'}", table='x"; DROP TABLE y; --')


def test_open_when_plain_role_without_ddl_rights_then_appends_and_delete_still_refused(postgres_url: str) -> None:
    """Production runs the gateway as a role that may insert but not alter tables."""
    suffix = uuid.uuid4().hex[:12]
    table, role = f"gateway_audit_role_{suffix}", f"audit_writer_{suffix}"
    owner = AuditStore(postgres_url, table=table)
    owner.append(event(n=1))
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(sa.text(f'GRANT SELECT, INSERT, DELETE ON "{table}" TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}_state" TO "{role}"'))
    role_url = f"postgresql+psycopg://{role}@127.0.0.1:5432/test"
    try:
        writer = AuditStore(role_url, table=table)
        assert writer.append(event(n=2), state={"k": 1}) == 2
        assert writer.verify_chain() and writer.read_state_key("k") == 1
        writer.close()
        plain = sa.create_engine(role_url)
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), plain.begin() as conn:
            conn.execute(sa.text(f'DELETE FROM "{table}" WHERE seq = 1'))
        plain.dispose()
        assert owner.count() == 2
    finally:
        owner.drop()
        owner.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
