"""Gateway + paper exchange, both real servers on free ports: decisions over HTTP, orders through
alpaca-py into the exchange (its own process), fills back into the book, one audit row per order/fill.
"""

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest
from child_process import stop_child
from polling import wait_for

from contracts.config import load_risk
from contracts.decisions import MasterDirective, SymbolDecision, TimestepDecisions
from gateway.app import create_app
from gateway.directives import InProcessDirectiveSource
from gateway.serve import ServerHandle, free_port, serve_app_in_thread
from gateway.settings import GatewaySettings
from gateway.token_file import read_token_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEY, SECRET = "marlops-paper", "marlops-paper-secret"
HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
T0 = datetime(2024, 3, 1, 21, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
STARTUP_S = 30.0


def answers(url: str, headers: dict[str, str] | None = None) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return httpx.get(url, headers=headers, timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False
    return probe


def start_process(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def exchange_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "paper_exchange.log"
    proc = start_process(["-m", "paper_exchange", "--host", "127.0.0.1", "--port", str(port),
                          "--initial-cash", "1000000", "--log-level", "warning"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is None and answers(url + "/v2/clock", HEADERS)(),
                 f"paper exchange on {url} (log {log})", timeout_s=STARTUP_S)
        yield url
    finally:
        stop_child(proc, term_timeout_s=15, kill_timeout_s=5)


@pytest.fixture
def bus() -> InProcessDirectiveSource:
    return InProcessDirectiveSource()


@pytest.fixture
def gateway(exchange_url: str, tmp_path: Path, bus: InProcessDirectiveSource) -> Iterator[ServerHandle]:
    settings = GatewaySettings(
        risk=load_risk(REPO / "config" / "rl" / "risk_overlays.yaml"),
        audit_url=f"sqlite:///{tmp_path / 'gateway' / 'audit.db'}",
        broker_base_url=exchange_url,
        broker_key_id=KEY,
        broker_secret_key=SECRET,
        fill_wait_s=0.5,
    )
    handle = serve_app_in_thread(create_app(settings, directive_source=bus), "127.0.0.1", free_port())
    yield handle
    handle.stop()


def decisions(bar_index: int, levels: dict[str, tuple[float, float]]) -> TimestepDecisions:
    return TimestepDecisions(
        timestep=T0 + bar_index * DAY, bar_index=bar_index, policy_version="pv-1",
        decisions=tuple(SymbolDecision(symbol=s, action=0, target_level=lvl, price=px)
                        for s, (lvl, px) in levels.items()),
    )


def master(mode: str, bar_index: int, scale: float, size: float) -> MasterDirective:
    return MasterDirective(directive_id=f"m-{bar_index}", issued_at=T0 + bar_index * DAY, ttl_seconds=5 * 86400,
                           mode=mode, max_position_size=size, risk_scale=scale,  # type: ignore[arg-type]
                           defensive=mode == "defensive")


def step(gateway: ServerHandle, exchange: httpx.Client, bar_index: int,
         levels: dict[str, tuple[float, float]]) -> dict[str, Any]:
    exchange.post("/_sim/prices", json={"prices": {s: px for s, (_, px) in levels.items()}}).raise_for_status()
    response = httpx.post(gateway.url + "/v1/decisions", content=decisions(bar_index, levels).model_dump_json(),
                          headers={"content-type": "application/json"}, timeout=30.0)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    # Answered once accepted: every order is an intent, durable, routing; the timestep's own id reads them settled.
    assert body["settled"] is False and {o["status"] for o in body["orders"]} <= {"intent"}
    settled = httpx.get(f"{gateway.url}/v1/timesteps/{body['timestep_id']}", params={"wait_s": 20}, timeout=30.0)
    assert settled.status_code == 200 and settled.json()["settled"] is True, settled.text
    assert [o["client_order_id"] for o in settled.json()["orders"]] == [o["client_order_id"] for o in body["orders"]]
    return {**body, **settled.json()}


def audit_events(gateway: ServerHandle, kind: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = httpx.get(gateway.url + "/v1/audit",
                                                params={"kind": kind, "limit": 1000}).json()["events"]
    return events


def test_gateway_when_timesteps_posted_then_exchange_portfolio_and_audit_agree(
    gateway: ServerHandle, exchange_url: str, bus: InProcessDirectiveSource
) -> None:
    exchange = httpx.Client(base_url=exchange_url, headers=HEADERS, timeout=10.0)
    alpaca = TradingClient(KEY, SECRET, paper=True, url_override=exchange_url)

    bus.publish(master("normal", 0, 1.0, 0.10))
    first = step(gateway, exchange, 0, {"AAPL": (1.0, 187.2), "MSFT": (-0.5, 410.5), "NVDA": (0.25, 120.0)})
    assert first["directive_fallback"] is False
    assert [(o["symbol"], o["status"]) for o in first["orders"]] == [
        ("AAPL", "filled"), ("MSFT", "filled"), ("NVDA", "filled")]
    step(gateway, exchange, 1, {"AAPL": (0.5, 190.0), "MSFT": (0.0, 405.0), "NVDA": (1.0, 118.5)})
    bus.publish(master("defensive", 2, 0.25, 0.02))
    third = step(gateway, exchange, 2, {"AAPL": (1.0, 192.3), "NVDA": (0.1, 121.0), "AMD": (1.0, 160.0)})
    reasons = {r["symbol"]: r["reason_code"] for r in third["risk"]}
    assert third["overlay"]["mode"] == "defensive"
    # AAPL and NVDA shrink toward the defensive size (allowed); AMD would be new exposure (denied).
    assert reasons == {"AAPL": None, "NVDA": None, "AMD": "DEFENSIVE_MODE"}
    assert [o["symbol"] for o in third["orders"]] == ["AAPL", "NVDA"]

    # Orders reached the exchange through alpaca-py: the exchange's list is exactly the gateway's.
    sent = [o for body in (first, third) for o in body["orders"]]
    exchange_orders = alpaca.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500))
    by_coid = {o.client_order_id: o for o in exchange_orders}
    intents = audit_events(gateway, "order")
    intent_coids = [e["payload"]["client_order_id"] for e in intents if e["payload"]["status"] == "intent"]
    assert len(intent_coids) == len(set(intent_coids)) == len(by_coid)
    assert set(intent_coids) == set(by_coid)
    assert {o["client_order_id"] for o in sent} <= set(by_coid)
    assert all(o.status.value == "filled" for o in exchange_orders)

    # One fill row per exchange order, with the exchange's quantity and price.
    fills = audit_events(gateway, "fill")
    assert Counter(f["payload"]["client_order_id"] for f in fills) == Counter(by_coid.keys())
    for f in fills:
        payload = f["payload"]
        order = by_coid[payload["client_order_id"]]
        assert payload["qty"] == pytest.approx(float(order.filled_qty))
        assert payload["price"] == pytest.approx(float(order.filled_avg_price))

    # The gateway's book, built from fills only, matches the exchange's account.
    book = httpx.get(gateway.url + "/v1/portfolio").json()
    held = {p.symbol: (float(p.qty), float(p.avg_entry_price)) for p in alpaca.get_all_positions()}
    assert {s: (v["qty"], pytest.approx(v["avg_price"])) for s, v in book["positions"].items()} == held
    assert "MSFT" not in held  # closed at bar 1
    assert book["cash"] == pytest.approx(float(alpaca.get_account().cash))

    # Kill switch: the next timestep is denied and nothing new reaches the exchange.
    orders_before = exchange.get("/_sim/state").json()["orders"]
    halted = httpx.post(gateway.url + "/v1/kill-switch", json={"reason": "integration drill", "principal": "ops"})
    assert halted.json()["trading_state"] == "HALTED"
    fourth = step(gateway, exchange, 3, {"AAPL": (0.0, 150.0), "NVDA": (0.0, 100.0)})
    assert fourth["trading_state"] == "HALTED"
    assert {r["reason_code"] for r in fourth["risk"]} == {"TRADING_HALTED"}
    assert fourth["orders"] == []
    assert exchange.get("/_sim/state").json()["orders"] == orders_before

    # Malformed input: 422 with a reason, and no audit side effect.
    summary_before = httpx.get(gateway.url + "/v1/audit/summary").json()
    bad = httpx.post(gateway.url + "/v1/decisions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["reasons"]
    summary_after = httpx.get(gateway.url + "/v1/audit/summary").json()
    assert summary_after["counts"] == summary_before["counts"]
    assert summary_after["chain_ok"] is True
    exchange.close()


def test_gateway_cli_when_started_then_healthy_and_reconciled(exchange_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "gateway.log"
    # Secure by default: the absent tokens file is bootstrapped, the raw tokens land in --tokens-dir.
    proc = start_process(["-m", "gateway", "--port", str(port), "--broker-url", exchange_url,
                          "--audit-url", f"sqlite:///{tmp_path / 'cli' / 'audit.db'}", "--log-level", "warning",
                          "--tokens-file", str(tmp_path / "auth" / "tokens.yaml"),
                          "--tokens-dir", str(tmp_path / "tokens")], log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is None and answers(url + "/healthz")(), f"gateway CLI on {url} (log {log})",
                 timeout_s=STARTUP_S)
        assert httpx.get(url + "/v1/portfolio").status_code == 401
        token = read_token_file(tmp_path / "tokens" / "admin.token")
        portfolio = httpx.get(url + "/v1/portfolio", headers={"Authorization": f"Bearer {token}"})
        assert portfolio.json()["equity"] == pytest.approx(1_000_000.0)
    finally:
        stop_child(proc, term_timeout_s=15, kill_timeout_s=5)
