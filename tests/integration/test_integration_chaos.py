"""The crash test (`marlops chaos`), smaller but real: the paper exchange and the gateway in their own
processes, the gateway SIGKILLed at random moments and restarted, on SQLite and on PostgreSQL; and
the checking function on hand-made inputs, so each kind of failure is shown to be caught.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from contracts.config import load_risk
from paper_exchange.app import create_paper_exchange_app
from gateway.serve import ServerHandle, free_port, serve_app_in_thread
from marlops.chaos import (
    REPORT_KEYS,
    main,
    page_broker_orders,
    write_risk_config,
)
from marlops.chaos_check import check_run, positions_differ, split_order_rows
from marlops.chaos_procs import BROKER_HEADERS

pytestmark = pytest.mark.integration

PV = "chaos-v1"




# ---- the checking function on hand-made inputs -------------------------------------------------

def intent(cid: str, symbol: str = "AAA", bar: int = 1) -> dict[str, Any]:
    return {"status": "intent", "client_order_id": cid, "symbol": symbol, "bar_index": bar,
            "policy_version": PV, "side": "buy", "qty": 10.0}


def status(cid: str, value: str) -> dict[str, Any]:
    return {"status": value, "client_order_id": cid}


def broker_order(cid: str, order_id: str | None = None, symbol: str = "AAA") -> dict[str, Any]:
    return {"id": order_id or f"id-{cid}", "client_order_id": cid, "symbol": symbol, "status": "filled"}


def run_checks(rows: list[dict[str, Any]], orders: list[dict[str, Any]]) -> Any:
    return check_run(split_order_rows(rows), rows, orders)


def test_check_run_when_each_intent_is_at_broker_once_or_not_sent_then_nothing_is_flagged() -> None:
    rows = [intent("a", "AAA"), intent("b", "BBB"), status("a", "filled"), status("b", "not_sent"),
            intent("c", "CCC"), status("c", "rejected")]
    checks = run_checks(rows, [broker_order("a")])
    assert (checks.intents, checks.at_broker_once, checks.not_sent) == (3, 1, 2)
    assert (checks.lost, checks.duplicates, checks.orphans, checks.audit_contradictions) == (0, 0, 0, 0)
    assert checks.ok


def test_check_run_when_intent_neither_at_broker_nor_audited_not_sent_then_it_is_lost() -> None:
    rows = [intent("a", "AAA"), intent("b", "BBB"), status("b", "unknown")]
    checks = run_checks(rows, [broker_order("a")])
    assert checks.lost == 1
    assert checks.lost_last_status == {"unknown": 1}
    assert checks.examples["lost"][0]["client_order_id"] == "b"
    assert not checks.ok


def test_check_run_when_latest_row_is_a_reissued_intent_then_the_earlier_not_sent_no_longer_counts() -> None:
    # not_sent, then the same intent planned again and killed before it was sent: nothing says it is not sent.
    rows = [intent("a"), status("a", "not_sent"), intent("a")]
    checks = run_checks(rows, [])
    assert (checks.intents, checks.lost, checks.not_sent) == (1, 1, 0)


def test_check_run_when_one_bar_and_symbol_trades_twice_then_it_is_a_duplicate() -> None:
    # Re-planned after a restart with another quantity: a new client id, the same bar traded again.
    rows = [intent("a", "AAA", bar=7), intent("a2", "AAA", bar=7), status("a", "filled"), status("a2", "filled")]
    checks = run_checks(rows, [broker_order("a"), broker_order("a2")])
    assert checks.duplicates == 1
    assert checks.duplicate_bar_orders == 1
    assert checks.examples["duplicates"][0]["bar_index"] == 7
    assert not checks.ok


def test_check_run_when_one_client_id_is_at_broker_twice_then_it_is_a_duplicate() -> None:
    rows = [intent("a")]
    checks = run_checks(rows, [broker_order("a", "id-1"), broker_order("a", "id-2")])
    assert checks.duplicate_client_ids == 1
    assert checks.duplicates >= 1
    assert checks.at_broker_once == 0
    assert not checks.ok


def test_check_run_when_broker_order_has_no_audited_intent_then_it_is_an_orphan() -> None:
    rows = [intent("a")]
    checks = run_checks(rows, [broker_order("a"), broker_order("zzz", symbol="ZZZ")])
    assert checks.orphans == 1
    assert checks.examples["orphans"][0]["client_order_id"] == "zzz"
    assert not checks.ok


def test_check_run_when_audit_says_not_sent_but_broker_has_it_then_it_is_a_contradiction() -> None:
    rows = [intent("a"), status("a", "not_sent")]
    checks = run_checks(rows, [broker_order("a")])
    assert checks.audit_contradictions == 1
    assert checks.lost == 0
    assert not checks.ok


def test_positions_differ_when_a_symbol_is_missing_or_off_then_it_is_listed() -> None:
    assert positions_differ({"AAA": 5.0}, {"AAA": 5.0}) == {}
    assert positions_differ({"AAA": 5.0}, {"AAA": 5.0, "BBB": -2.0}) == {"BBB": {"gateway": 0.0, "broker": -2.0}}
    assert positions_differ({"AAA": 5.0}, {"AAA": 4.0}) == {"AAA": {"gateway": 5.0, "broker": 4.0}}


def test_write_risk_config_when_written_then_it_loads_with_triggers_opened(tmp_path: Path) -> None:
    path = write_risk_config(tmp_path / "risk.yaml")
    risk = load_risk(path)
    shipped = load_risk()
    assert risk.order_rate.max_orders == 100_000
    assert risk.market_hours.source == "off"
    assert risk.kill_switch.max_drawdown == 0.99
    assert risk.per_symbol_cap == shipped.per_symbol_cap  # the guardrails themselves are the shipped ones
    assert yaml.safe_load(path.read_text())["max_gross_leverage"] == shipped.max_gross_leverage


# ---- paging the broker's orders (exchanges without /_sim/orders) -------------------------------

@pytest.fixture
def exchange() -> Iterator[ServerHandle]:
    handle = serve_app_in_thread(create_paper_exchange_app(), "127.0.0.1", free_port())
    yield handle
    handle.stop()


def test_page_broker_orders_when_more_orders_than_a_page_then_every_order_once(exchange: ServerHandle) -> None:
    with httpx.Client(base_url=exchange.url, headers=BROKER_HEADERS, timeout=10.0) as client:
        client.post("/_sim/prices", json={"prices": {"AAA": 10.0}}).raise_for_status()
        for i in range(13):
            client.post("/v2/orders", json={"symbol": "AAA", "qty": 1, "side": "buy", "type": "market",
                                            "time_in_force": "day", "client_order_id": f"c-{i}"}).raise_for_status()
        paged = page_broker_orders(client, page_size=4)
        everything = client.get("/_sim/orders").json()
    assert sorted(o["client_order_id"] for o in paged) == sorted(f"c-{i}" for i in range(13))
    assert {o["id"] for o in paged} == {o["id"] for o in everything}


# ---- the crash test itself ---------------------------------------------------------------------

@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_chaos_when_gateway_killed_during_replay_then_no_intent_lost_or_doubled(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        request.getfixturevalue("postgres_url")
    out = tmp_path / "chaos"
    # Small (each kill is a gateway process start): `make chaos` is the 2000-order, 20-kill run on both backends.
    code = main(["--backend", backend, "--orders", "200", "--kills", "3", "--symbols", "20", "--seed", "3",
                 "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    run = report["runs"][backend]
    assert set(REPORT_KEYS) <= set(report) and set(REPORT_KEYS) <= set(run)
    assert run.get("error") is None
    assert run["kills"] >= 3
    assert run["restarts"] >= run["kills"]
    assert run["intents"] >= 200
    assert run["lost"] == 0, run["examples"]
    assert run["duplicates"] == 0, run["examples"]
    assert run["orphans"] == 0, run["examples"]
    assert run["at_broker_once"] + run["not_sent"] == run["intents"]
    assert run["orders_at_broker"] == run["at_broker_once"]
    assert run["audit_chain_ok"] is True
    assert run["positions_match"] is True, run["positions_mismatch"]
    assert run["failures"] == []
    assert run["passed"] is True and report["passed"] is True
    assert code == 0
