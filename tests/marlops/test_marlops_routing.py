"""The routing table (marlops.routing) on real SQLite and PostgreSQL, and `marlops route` through its argv."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from store_backends import BACKENDS, store_on_backend

from gateway.token_file import append_token
from gateway.tokens import new_token
from marlops.cli import main
from marlops.errors import RoutingError
from marlops.routing import (
    DEFAULT_ROUTE,
    PolicyRef,
    Route,
    RoutingChange,
    RoutingTable,
)
from marlops.routing_store import RoutingStore

V3 = PolicyRef("symbol_agent", 3)
V4 = PolicyRef("symbol_agent", 4)
SL = PolicyRef("sl_fallback", 1)
MASTER = PolicyRef("master_agent", 2)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RoutingStore]:
    yield from store_on_backend(request, RoutingStore, tmp_path / "state" / "state.db", "routing_test")


def _released(store: RoutingStore) -> RoutingTable:
    return store.apply(
        RoutingChange(policies={"production": V3, "candidate": V4, "master": MASTER}),
        principal="rita", reason="release 3, candidate 4",
    )


def _raw_engine(store: RoutingStore) -> sa.Engine:
    return sa.create_engine(store.url)


# ---- table semantics (no database) ----------------------------------------------------------------
def test_route_for_when_symbol_unlisted_then_default_row_else_production() -> None:
    table = RoutingTable(revision=1, policies={"production": V3, "candidate": V4},
                         routes={"AAPL": Route("AAPL", "candidate")})
    assert table.route_for("AAPL") == Route("AAPL", "candidate")
    assert table.route_for("MSFT") == Route("MSFT", "production")
    with_default = RoutingTable(revision=2, policies=table.policies,
                                routes={**table.routes, DEFAULT_ROUTE: Route(DEFAULT_ROUTE, "candidate", "production")})
    assert with_default.route_for("MSFT") == Route("MSFT", "candidate", "production")
    assert with_default.policy_for("MSFT") == V4


def test_groups_when_mixed_routes_and_unset_slot_then_grouped_by_policy_in_order() -> None:
    table = RoutingTable(
        revision=3, policies={"production": V3, "candidate": V4},
        routes={"AAPL": Route("AAPL", "candidate", "production"), "IBM": Route("IBM", "sl_fallback"),
                DEFAULT_ROUTE: Route(DEFAULT_ROUTE, "production", "candidate")},
    )
    symbols = ["MSFT", "AAPL", "IBM", "GOOG", "XOM"]
    assert table.groups(symbols) == {V3: ["MSFT", "GOOG", "XOM"], V4: ["AAPL"], None: ["IBM"]}
    assert table.shadow_groups(symbols) == {V4: ["MSFT", "GOOG", "XOM"], V3: ["AAPL"]}
    assert str(V4) == "symbol_agent/4" and PolicyRef.parse("symbol_agent/4") == V4
    assert len({V4, PolicyRef("symbol_agent", 4)}) == 1


def test_served_when_slots_set_but_unused_then_only_versions_in_use_and_master() -> None:
    table = RoutingTable(
        revision=1, policies={"production": V3, "candidate": V4, "sl_fallback": SL, "master": MASTER},
        routes={DEFAULT_ROUTE: Route(DEFAULT_ROUTE, "production", "candidate")},
    )
    assert table.served() == {"symbol_agent": {3, 4}, "master_agent": {2}}
    no_shadow = RoutingTable(revision=2, policies=table.policies, routes={})
    assert no_shadow.served() == {"symbol_agent": {3}, "master_agent": {2}}
    json.dumps(table.to_dict())
    assert RoutingTable.from_dict(table.to_dict()) == table


# ---- store -----------------------------------------------------------------------------------------
def test_apply_when_valid_change_then_revision_bumped_and_read_back(store: RoutingStore) -> None:
    assert store.revision() == 0 and store.read().routes == {}
    _released(store)
    table = store.apply(
        RoutingChange(routes={"AAPL": ("candidate", None), DEFAULT_ROUTE: ("production", "candidate")}),
        principal="rita", reason="canary AAPL",
    )
    assert table.revision == 2 and store.revision() == 2
    assert store.read() == table
    assert store.read().groups(["AAPL", "MSFT"]) == {V4: ["AAPL"], V3: ["MSFT"]}


def test_apply_when_one_route_invalid_then_nothing_written_and_revision_kept(store: RoutingStore) -> None:
    _released(store)
    before = store.read()
    bad_changes = [
        RoutingChange(routes={"AAPL": ("candidate", None), "MSFT": ("sl_fallback", None)}),  # slot unset
        RoutingChange(routes={"AAPL": ("candidate", None), "msft": ("production", None)}),  # bad symbol
        RoutingChange(routes={"AAPL": ("candidate", None), "IBM": ("nonsense", None)}),
        RoutingChange(routes={"AAPL": ("candidate", "candidate")}),
        RoutingChange(policies={"production": V4, "bogus": V3}),
        RoutingChange(),
    ]
    for change in bad_changes:
        with pytest.raises(RoutingError, match="refused|empty"):
            store.apply(change, principal="rita", reason="try")
    with pytest.raises(RoutingError, match=r"slot 'sl_fallback' is unset"):
        store.apply(RoutingChange(routes={"MSFT": ("sl_fallback", None)}), principal="rita", reason="try")
    with pytest.raises(RoutingError, match="version must be an integer >= 1"):
        PolicyRef("symbol_agent", 0)
    with pytest.raises(RoutingError, match="principal"):
        store.apply(RoutingChange(routes={"AAPL": ("candidate", None)}), principal=" ", reason="x")
    with pytest.raises(RoutingError, match="reason"):
        store.apply(RoutingChange(routes={"AAPL": ("candidate", None)}), principal="rita", reason="")
    assert store.read() == before and store.revision() == 1
    assert len(store.history()) == 1 and store.verify_audit()


def test_apply_when_slot_in_use_cleared_then_refused(store: RoutingStore) -> None:
    _released(store)
    store.apply(RoutingChange(routes={"AAPL": ("candidate", None)}), principal="rita", reason="canary")
    with pytest.raises(RoutingError, match=r"cannot route AAPL to 'candidate'"):
        store.apply(RoutingChange(policies={"candidate": None}), principal="rita", reason="drop candidate")
    with pytest.raises(RoutingError, match=r"cannot clear slot 'production'"):
        store.apply(RoutingChange(policies={"production": None}), principal="rita", reason="drop production")
    table = store.apply(RoutingChange(policies={"candidate": None}, routes={"AAPL": None}),
                        principal="rita", reason="canary over")
    assert "candidate" not in table.policies and table.routes == {}


def test_history_when_changes_applied_then_audits_principal_reason_before_after(store: RoutingStore) -> None:
    _released(store)
    store.apply(RoutingChange(routes={"AAPL": ("candidate", "production")}), principal="sam", reason="canary AAPL")
    newest, first = store.history()
    assert (newest["seq"], newest["revision"], newest["principal"], newest["reason"]) == (2, 2, "sam", "canary AAPL")
    assert newest["before"]["routes"] == {} and newest["before"]["revision"] == 1
    assert newest["after"]["routes"] == {"AAPL": {"variant": "candidate", "shadow": "production"}}
    assert newest["change"]["routes"] == {"AAPL": {"variant": "candidate", "shadow": "production"}}
    assert first["principal"] == "rita" and first["after"]["policies"]["production"]["version"] == 3
    assert newest["at"] >= first["at"] and store.history(limit=1) == [newest]


def test_verify_audit_when_row_edited_or_state_rewritten_then_detected(store: RoutingStore) -> None:
    _released(store)
    store.apply(RoutingChange(routes={"AAPL": ("candidate", None)}), principal="rita", reason="canary")
    assert store.verify_audit()
    state, audit = store.table_names
    engine = _raw_engine(store)
    with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError, match="append-only"):
        conn.execute(sa.text(f'UPDATE "{audit}" SET reason = \'forged\' WHERE seq = 1'))
    # Someone with DDL rights removes the guard and edits history: the chain shows it.
    drop = (f'DROP TRIGGER "{audit}_no_update"' if store.url.startswith("sqlite")
            else f'DROP TRIGGER "{audit}_append_only" ON "{audit}"')
    with engine.begin() as conn:
        conn.execute(sa.text(drop))
        conn.execute(sa.text(f'UPDATE "{audit}" SET principal = \'mallory\' WHERE seq = 1'))
    assert not store.verify_audit()
    assert "seq 1 was edited" in (store.audit_problem() or "")
    engine.dispose()


def test_verify_audit_when_table_changed_outside_apply_then_detected_and_apply_still_consistent(
    store: RoutingStore,
) -> None:
    _released(store)
    state, _ = store.table_names
    engine = _raw_engine(store)
    forged = {"policies": {"production": {"model": "symbol_agent", "version": 99}}, "routes": {}}
    with engine.begin() as conn:
        conn.execute(sa.text(f'UPDATE "{state}" SET body = :b WHERE id = 1'), {"b": json.dumps(forged)})
    engine.dispose()
    assert store.read().policies["production"] == PolicyRef("symbol_agent", 99)
    assert not store.verify_audit()
    assert "differs" in (store.audit_problem() or "")


def test_read_when_concurrent_applies_then_readers_see_whole_old_or_new_table(store: RoutingStore) -> None:
    _released(store)
    symbols = [f"S{i:03d}" for i in range(40)]
    flips = 15
    seen: list[tuple[int, frozenset[str]]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                table = store.read()
                variants = frozenset(table.route_for(s).variant for s in symbols)
                seen.append((table.revision, variants))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(flips):
            variant = "candidate" if i % 2 == 0 else "production"
            store.apply(RoutingChange(routes={s: (variant, None) for s in symbols}), principal="rita", reason=f"flip {i}")
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors
    assert seen, "readers never ran"
    # Each snapshot routes ALL symbols to one variant: never half of one change.
    assert all(len(variants) == 1 for _, variants in seen)
    for revision, variants in seen:
        if revision >= 2:
            assert variants == {"candidate" if revision % 2 == 0 else "production"}
    assert store.revision() == 1 + flips and store.verify_audit()


def test_apply_when_two_stores_write_concurrently_then_every_change_kept_in_one_chain(
    store: RoutingStore,
) -> None:
    _released(store)
    other = RoutingStore(store.url, table=store.table_names[0].removesuffix("_state"))
    try:
        def write(s: RoutingStore, prefix: str) -> None:
            for i in range(10):
                s.apply(RoutingChange(routes={f"{prefix}{i}": ("candidate", None)}), principal=prefix, reason="race")

        threads = [threading.Thread(target=write, args=(s, p)) for s, p in ((store, "A"), (other, "B"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.close()
    table = store.read()
    assert table.revision == 21 and len(table.routes) == 20
    assert store.verify_audit()


# ---- marlops route -----------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("MARLOPS_HOME", str(root))
    monkeypatch.delenv("MARLOPS_STATE_URL", raising=False)
    return root


def _token(home: Path, role: str, principal: str) -> Path:
    token, grant = new_token(principal, role)  # type: ignore[arg-type]
    append_token(home / "auth" / "tokens.yaml", grant)
    path = home / "tokens" / f"{role}.token"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return path


def _show_json(capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["route", "show", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_route_set_when_no_token_then_refused_exit_2_and_nothing_changed(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["route", "set", "--policy", "production=symbol_agent/3", "--reason", "release"])
    assert code == 2
    assert "needs a token" in capsys.readouterr().err
    assert _show_json(capsys)["revision"] == 0


def test_route_set_when_trader_token_then_refused_exit_2_and_nothing_changed(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trader = _token(home, "trader", "tom")
    code = main(["route", "set", "--policy", "production=symbol_agent/3", "--reason", "release",
                 "--token-file", str(trader)])
    assert code == 2
    assert "tom has role trader" in capsys.readouterr().err
    assert _show_json(capsys)["policies"] == {}


def test_route_set_when_risk_officer_token_then_one_change_per_command_audited_as_its_principal(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _token(home, "risk_officer", "rita")
    assert main(["route", "set", "--policy", "production=symbol_agent/3", "--policy", "master=master_agent/2",
                 "--policy", "candidate=symbol_agent/4", "--reason", "release 3"]) == 0
    assert main(["route", "set", "aapl", "MSFT", "--variant", "candidate", "--shadow", "production",
                 "--reason", "canary"]) == 0
    assert main(["route", "set", "*", "--variant", "production", "--shadow", "candidate", "--reason", "shadow"]) == 0
    assert main(["route", "set", "IBM", "--variant", "sl_fallback", "--reason", "no slot"]) == 2
    assert "slot 'sl_fallback' is unset" in capsys.readouterr().err
    assert main(["route", "clear", "MSFT", "--reason", "done with MSFT"]) == 0
    document = _show_json(capsys)
    assert document["revision"] == 4
    assert document["policies"]["production"]["ref"] == "symbol_agent/3"
    assert document["routes"] == {"*": {"variant": "production", "shadow": "candidate"},
                                  "AAPL": {"variant": "candidate", "shadow": "production"}}
    assert document["served"] == {"master_agent": [2], "symbol_agent": [3, 4]}
    with RoutingStore(f"sqlite:///{home / 'state.db'}") as store:
        history = store.history()
        assert [row["principal"] for row in history] == ["rita"] * 4
        assert history[0]["reason"] == "done with MSFT" and store.verify_audit()
    assert main(["route", "show"]) == 0
    text = capsys.readouterr().out
    assert "routing revision 4" in text and "AAPL" in text and "symbol_agent/4" in text


def test_route_set_when_state_url_given_then_that_store_changed(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = _token(home, "risk_officer", "rita")
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["route", "set", "--policy", "production=symbol_agent/7", "--reason", "r", "--token-file", str(token),
                 "--state-url", url]) == 0
    assert _show_json(capsys)["revision"] == 0
    with RoutingStore(url) as store:
        assert store.read().policies["production"] == PolicyRef("symbol_agent", 7)
