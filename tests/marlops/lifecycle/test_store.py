"""LifecycleStore on real SQLite and PostgreSQL: RFCs, decisions, stages, the event chain, bars, the clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from store_backends import BACKENDS, store_on_backend

from marlops.lifecycle.errors import (
    ApprovalRefusedError,
    LifecycleError,
    RfcNotFoundError,
)
from marlops.lifecycle.records import BarRecord, SymbolBar
from marlops.lifecycle.store import ApprovalDecision, LifecycleStore

from . import RUN, make_rfc


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LifecycleStore]:
    yield from store_on_backend(request, LifecycleStore, tmp_path / "state" / "state.db", "lifecycle_test")


def _sql(store: LifecycleStore, *statements: str) -> None:
    engine = sa.create_engine(store.url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def _drop_guard(store: LifecycleStore, table: str, operation: str) -> str:
    if store.url.startswith("sqlite"):
        return f'DROP TRIGGER "{table}_no_{operation}"'
    return f'DROP TRIGGER "{table}_append_only" ON "{table}"'


def _bar(index: int, equity: float = 1_000_000.0) -> BarRecord:
    symbol = SymbolBar(bar_index=index, timestamp=f"2026-11-30T14:{index:02d}:00+00:00", symbol="AAPL",
                       variant="candidate", policy_version="symbol_agent/4", action=2, probabilities=(0.1, 0.2, 0.7),
                       price=190.5 + index, position_qty=10.0, position_value=10.0 * (190.5 + index), pnl=1.5,
                       cost=0.25, traded_notional=1905.0, denied=False, error=False, inference_ms=3.2)
    return BarRecord(bar_index=index, timestamp=symbol.timestamp, symbols=(symbol,), decision_latency_ms=12.5,
                     equity=equity, trading_state="active", routing_revision=3, extra={"note": "x"})


def _decision(rfc_id: str, digest: str, decision: str = "approve") -> ApprovalDecision:
    return ApprovalDecision(rfc_id=rfc_id, rfc_digest=digest, decision=decision, principal="rita", role="risk_officer",
                            comment="ok", decided_at="2026-11-30T12:30:00+00:00", channel="cli")


# ---- RFCs ------------------------------------------------------------------------------------------------------------
def test_save_rfc_when_new_then_read_back_equal_with_plot_and_pending(store: LifecycleStore) -> None:
    rfc = make_rfc(plot=b"\x89PNG\r\n fake")
    assert store.latest_rfc(RUN) is None and store.list_rfcs() == []
    assert store.save_rfc(rfc) == rfc
    assert store.rfc(rfc.rfc_id) == rfc
    assert store.rfc(rfc.rfc_id).equity_plot_png == b"\x89PNG\r\n fake"
    assert store.latest_rfc(RUN) == rfc
    [summary] = store.list_rfcs()
    assert (summary.rfc_id, summary.status, summary.digest, summary.candidate, summary.production) == (
        rfc.rfc_id, "pending", rfc.digest, rfc.candidate, rfc.production)
    assert [e.kind for e in store.events(candidate_run_id=RUN)] == ["rfc_created"]


def test_save_rfc_when_same_digest_saved_again_then_idempotent(store: LifecycleStore) -> None:
    rfc = store.save_rfc(make_rfc())
    again = store.save_rfc(make_rfc(now=datetime(2026, 12, 24, tzinfo=UTC)))
    assert again == rfc and again.created_at == rfc.created_at
    assert len(store.list_rfcs()) == 1 and len(store.events()) == 1


def test_save_rfc_when_new_digest_for_same_run_then_open_ones_superseded_and_newest_first(
    store: LifecycleStore,
) -> None:
    first = store.save_rfc(make_rfc(sharpe=1.0))
    other_run = store.save_rfc(make_rfc("run-other"))
    second = store.save_rfc(make_rfc(sharpe=1.1))
    assert [s.rfc_id for s in store.list_rfcs()] == [second.rfc_id, other_run.rfc_id, first.rfc_id]
    assert {s.rfc_id: s.status for s in store.list_rfcs()} == {
        second.rfc_id: "pending", other_run.rfc_id: "pending", first.rfc_id: "superseded"}
    assert store.latest_rfc(RUN) == second
    superseded = store.events(kind="rfc_superseded")
    assert [(e.detail["rfc_id"], e.detail["by"]) for e in superseded] == [(first.rfc_id, second.rfc_id)]
    # The candidate goes back to the first content: that RFC is the latest again (and undecided).
    assert store.save_rfc(make_rfc(sharpe=1.0)) == first
    assert store.latest_rfc(RUN) == first
    assert {s.rfc_id: s.status for s in store.list_rfcs()}[second.rfc_id] == "superseded"
    assert store.rfc_status(first.rfc_id) == "pending"


def test_save_rfc_when_digest_does_not_match_content_then_refused(store: LifecycleStore) -> None:
    rfc = make_rfc()
    forged = type(rfc)(**{**rfc.__dict__, "candidate": {**rfc.candidate, "symbol_agent": "9"}})
    with pytest.raises(LifecycleError, match="does not match its content"):
        store.save_rfc(forged)
    assert store.list_rfcs() == []


def test_rfc_when_unknown_id_then_not_found_listing_known_ids(store: LifecycleStore) -> None:
    rfc = store.save_rfc(make_rfc())
    with pytest.raises(RfcNotFoundError, match=rf"no deployment RFC 'RFC-9-deadbeef'.*known: {rfc.rfc_id}"):
        store.rfc("RFC-9-deadbeef")


def test_set_rfc_status_when_valid_then_set_and_audited_else_refused(store: LifecycleStore) -> None:
    rfc = store.save_rfc(make_rfc())
    store.set_rfc_status(rfc.rfc_id, "deployed")
    assert store.list_rfcs()[0].status == "deployed"
    assert store.events(kind="rfc_status")[-1].detail == {"rfc_id": rfc.rfc_id, "from": "pending", "to": "deployed"}
    with pytest.raises(LifecycleError, match="unknown RFC status 'done'"):
        store.set_rfc_status(rfc.rfc_id, "done")
    with pytest.raises(RfcNotFoundError):
        store.set_rfc_status("RFC-1-00000000", "deployed")


# ---- decisions -----------------------------------------------------------------------------------------------------
def test_record_decision_when_pending_then_status_set_and_event_written_and_final(store: LifecycleStore) -> None:
    rfc = store.save_rfc(make_rfc())
    store.record_decision(_decision(rfc.rfc_id, rfc.digest))
    assert store.rfc_status(rfc.rfc_id) == "approved"
    assert store.decisions(rfc.rfc_id) == [_decision(rfc.rfc_id, rfc.digest)]
    event = store.events(kind="rfc_decision")[-1]
    assert (event.principal, event.detail["decision"], event.detail["digest"]) == ("rita", "approve", rfc.digest)
    with pytest.raises(ApprovalRefusedError) as closed:
        store.record_decision(_decision(rfc.rfc_id, rfc.digest, "reject"))
    assert closed.value.code == "RFC_CLOSED"
    assert len(store.decisions(rfc.rfc_id)) == 1 and store.rfc_status(rfc.rfc_id) == "approved"


def test_record_decision_when_digest_stale_then_refused_and_nothing_written(store: LifecycleStore) -> None:
    rfc = store.save_rfc(make_rfc())
    events = len(store.events())
    with pytest.raises(ApprovalRefusedError) as stale:
        store.record_decision(_decision(rfc.rfc_id, "0" * 64))
    assert stale.value.code == "STALE_DIGEST"
    assert store.decisions(rfc.rfc_id) == [] and store.rfc_status(rfc.rfc_id) == "pending"
    assert len(store.events()) == events


def test_decisions_when_row_updated_with_sql_then_refused_by_append_only_guard(store: LifecycleStore) -> None:
    rfc = store.save_rfc(make_rfc())
    store.record_decision(_decision(rfc.rfc_id, rfc.digest))
    table = store.table_names["decisions"]
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        _sql(store, f"UPDATE \"{table}\" SET decision = 'reject'")
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        _sql(store, f'DELETE FROM "{table}"')
    assert store.decisions(rfc.rfc_id)[0].decision == "approve"


# ---- stages ----------------------------------------------------------------------------------------------------------
def test_set_stage_when_called_twice_then_upserted_and_listed_per_stage(store: LifecycleStore) -> None:
    store.set_stage(RUN, "canary", "running", {"symbols": ["AAPL"]})
    store.set_stage(RUN, "staging", "passed", {"orders": 120})
    store.set_stage("run-other", "canary", "blocked", {"reason": "drawdown"})
    store.set_stage(RUN, "canary", "passed", {"symbols": ["AAPL"], "bars": 30})
    stages = store.stages(RUN)
    assert set(stages) == {"canary", "staging"}
    assert (stages["canary"].status, stages["canary"].detail) == ("passed", {"symbols": ["AAPL"], "bars": 30})
    assert [(r.candidate_run_id, r.status) for r in store.stage_runs("canary")] == [("run-other", "blocked"),
                                                                                  (RUN, "passed")]
    assert [r.candidate_run_id for r in store.stage_runs("canary", "blocked")] == ["run-other"]
    assert store.stages("run-none") == {}
    with pytest.raises(LifecycleError, match="unknown stage status 'done'"):
        store.set_stage(RUN, "canary", "done", {})


# ---- events ----------------------------------------------------------------------------------------------------------
def test_record_event_when_appended_then_chained_and_filterable(store: LifecycleStore) -> None:
    assert store.chain_head() == "" and store.verify_chain()
    first = store.record_event("canary_started", principal="dagster", detail={"symbols": ["AAPL"]},
                               candidate_run_id=RUN)
    second = store.record_event("note", principal="rita", detail={"text": "hello", "ratio": float("nan")})
    assert (first.seq, second.seq, second.prev_hash) == (1, 2, first.hash)
    assert first.prev_hash == "0" * 64 and store.chain_head() == second.hash
    assert second.detail == {"text": "hello", "ratio": None}
    assert store.events(candidate_run_id=RUN) == [first]
    assert store.events(kind="note") == [second]
    assert store.events() == [first, second]
    assert store.verify_chain() and store.chain_problem() is None


def test_verify_chain_when_row_edited_with_sql_then_false(store: LifecycleStore) -> None:
    store.record_event("a", principal="rita", detail={"n": 1})
    store.record_event("b", principal="rita", detail={"n": 2})
    table = store.table_names["events"]
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        _sql(store, f"UPDATE \"{table}\" SET principal = 'mallory' WHERE seq = 1")
    assert store.verify_chain()
    # Someone with DDL rights removes the guard and edits history: the chain shows it.
    _sql(store, _drop_guard(store, table, "update"), f"UPDATE \"{table}\" SET principal = 'mallory' WHERE seq = 1")
    assert not store.verify_chain()
    assert "seq 1 was edited" in (store.chain_problem() or "")


def test_verify_chain_when_last_event_deleted_then_false_and_writes_refused(store: LifecycleStore) -> None:
    store.record_event("a", principal="rita", detail={})
    store.record_event("b", principal="rita", detail={})
    table = store.table_names["events"]
    _sql(store, _drop_guard(store, table, "delete"), f'DELETE FROM "{table}" WHERE seq = 2')
    assert not store.verify_chain()
    assert "head records seq 2" in (store.chain_problem() or "")
    with pytest.raises(LifecycleError, match="the log was altered"):
        store.record_event("c", principal="rita", detail={})


# ---- bars and the clock -------------------------------------------------------------------------------------------------
def test_append_bars_when_read_back_then_equal_in_order_and_since_is_inclusive(store: LifecycleStore) -> None:
    bars = [_bar(i) for i in range(4)]
    store.append_bars("canary:run-aaa", bars[2:])
    store.append_bars("canary:run-aaa", bars[:3])  # bar 2 again, same content: skipped
    store.append_bars("shadow:run-aaa", [_bar(0, equity=5.0)])
    assert store.bars("canary:run-aaa") == bars
    assert store.bars("canary:run-aaa", since_bar_index=2) == bars[2:]
    assert store.bars("shadow:run-aaa")[0].equity == 5.0
    assert store.bars("nothing") == []


def test_append_bars_when_index_stored_with_other_content_then_refused(store: LifecycleStore) -> None:
    store.append_bars("canary:run-aaa", [_bar(0)])
    with pytest.raises(LifecycleError, match="bar 0 of canary:run-aaa is already stored with different content"):
        store.append_bars("canary:run-aaa", [_bar(1), _bar(0, equity=1.0)])
    assert [b.bar_index for b in store.bars("canary:run-aaa")] == [0]


def test_advance_clock_when_given_earlier_time_then_clock_never_moves_backwards(store: LifecycleStore) -> None:
    assert store.clock() is None
    store.advance_clock("2026-11-30T15:00:00+00:00")
    store.advance_clock("2026-11-30T14:59:00+00:00")
    assert store.clock() == "2026-11-30T15:00:00+00:00"
    store.advance_clock("2026-11-30T11:00:00-05:00")  # 16:00 UTC: later
    assert store.clock() == "2026-11-30T11:00:00-05:00"
    store.advance_clock("2026-12-01T00:00:00", name="paper")
    assert store.clock("paper") == "2026-12-01T00:00:00" and store.clock() == "2026-11-30T11:00:00-05:00"
    with pytest.raises(LifecycleError, match="not ISO-8601"):
        store.advance_clock("yesterday")
