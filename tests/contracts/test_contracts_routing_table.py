"""contracts.routing_table: the read-only routing reader the gateway and monitoring share, against tables that
marlops' own RoutingStore wrote (so the layout named in contracts is the one marlops writes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from contracts.routing_table import (
    RoutingTableReader,
    RoutingTableUnavailable,
    read_routing_table,
    state_table_name,
)
from marlops.routing import PolicyRef, RoutingChange
from marlops.routing_store import RoutingStore


def _store(path: Path, table: str = "routing") -> str:
    url = f"sqlite:///{path}"
    store = RoutingStore(url, table=table)
    store.apply(RoutingChange(policies={"production": PolicyRef("symbol_agent", 3),
                                        "master": PolicyRef("master_agent", 2)},
                              routes={"*": ("production", None)}),
                principal="rita", reason="first production")
    store.apply(RoutingChange(policies={"candidate": PolicyRef("symbol_agent", 4)},
                              routes={"AAPL": ("candidate", "production")}),
                principal="carl", reason="canary AAPL on v4")
    store.close()
    return url


def test_read_when_routing_store_wrote_changes_then_policies_routes_revision_and_author(tmp_path: Path) -> None:
    url = _store(tmp_path / "state.db")

    table = read_routing_table(url)

    assert table is not None
    assert table["revision"] == 2
    assert table["updated_by"] == "carl" and table["reason"] == "canary AAPL on v4"
    assert table["updated_at"].startswith("20")
    assert table["policies"]["candidate"] == {"model": "symbol_agent", "version": 4, "ref": "symbol_agent/4"}
    assert table["policies"]["production"]["version"] == 3 and table["policies"]["master"]["model"] == "master_agent"
    assert table["routes"] == {"AAPL": {"variant": "candidate", "shadow": "production"},
                               "*": {"variant": "production", "shadow": None}}


def test_read_when_table_prefix_given_then_that_table_is_read(tmp_path: Path) -> None:
    url = _store(tmp_path / "state.db", table="routing_canary")

    assert read_routing_table(url, table="routing_canary")["revision"] == 2  # type: ignore[index]
    with pytest.raises(RoutingTableUnavailable, match="no routing table routing_state"):
        read_routing_table(url)


def test_read_when_sqlite_file_absent_then_unavailable_and_nothing_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "state.db"

    with pytest.raises(RoutingTableUnavailable, match="no state store at sqlite:///"):
        read_routing_table(f"sqlite:///{path}")
    assert not path.exists() and not path.parent.exists()


def test_read_when_state_row_missing_then_none(tmp_path: Path) -> None:
    url = _store(tmp_path / "state.db")
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute(f"DELETE FROM {state_table_name()}")

    assert read_routing_table(url) is None


def test_read_when_database_not_a_database_then_unavailable_with_reason(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)

    with pytest.raises(RoutingTableUnavailable, match="unreadable: .*not a database"):
        read_routing_table(f"sqlite:///{path}")


def test_reader_when_postgres_unreachable_then_unavailable_and_password_masked() -> None:
    reader = RoutingTableReader("postgresql+psycopg://marlops:s3cret@127.0.0.1:1/marlops", timeout_s=1)
    try:
        with pytest.raises(RoutingTableUnavailable) as caught:
            reader.read()
    finally:
        reader.close()
    assert "s3cret" not in str(caught.value) and "marlops:***@127.0.0.1:1" in str(caught.value)


@pytest.mark.parametrize("table", ["routing; DROP TABLE x", "", "1routing", "a" * 42])
def test_reader_when_table_name_not_an_identifier_then_refused(table: str) -> None:
    with pytest.raises(RoutingTableUnavailable, match="must match"):
        RoutingTableReader("sqlite:///state.db", table=table)


def test_reader_when_read_twice_then_change_in_between_seen(tmp_path: Path) -> None:
    url = _store(tmp_path / "state.db")
    reader = RoutingTableReader(url)
    try:
        assert reader.read()["revision"] == 2  # type: ignore[index]
        store = RoutingStore(url)
        store.apply(RoutingChange(routes={"AAPL": None}), principal="rita", reason="canary over")
        store.close()
        again = reader.read()
    finally:
        reader.close()
    assert again is not None and again["revision"] == 3 and "AAPL" not in again["routes"]
    assert again["updated_by"] == "rita"


def test_route_constants_when_compared_with_marlops_routing_then_equal() -> None:
    from contracts import routing_table
    from marlops import routing

    assert routing_table.DEFAULT_ROUTE == routing.DEFAULT_ROUTE
    assert routing_table.IMPLICIT_DEFAULT_VARIANT == routing.IMPLICIT_DEFAULT_VARIANT
