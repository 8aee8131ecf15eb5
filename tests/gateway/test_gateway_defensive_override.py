"""The operator's (and the cost-explosion playbook's) defensive override, and the unwind flatten (drawdown
playbook), through the real service over the real paper exchange, with the audit rows they leave."""

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from gateway_builders import batch, directive

from contracts.config import MarketHoursRule, RiskOverlaysConfig
from contracts.orders import TradingState
from gateway.audit.store import AuditStore
from gateway.brokers.alpaca_broker import AlpacaBroker
from gateway.domain.overlay import DefensiveOverride, EffectiveOverlay, tighten
from gateway.serve import ServerHandle
from gateway.service import GatewayService
from gateway.settings import GatewaySettings

RISK = RiskOverlaysConfig(per_symbol_cap=1.0, max_order_notional=1e9, market_hours=MarketHoursRule(source="off"))


@pytest.fixture
def start(paper_exchange: ServerHandle, tmp_path: Path) -> Iterator[Callable[[], tuple[GatewayService, AuditStore]]]:
    """A service on one audit file: calling it again is a restart on the same trail."""
    made: list[tuple[GatewayService, AuditStore]] = []

    def _start() -> tuple[GatewayService, AuditStore]:
        store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
        broker = AlpacaBroker(paper_exchange.url, "marlops-paper", "marlops-paper-secret")
        settings = GatewaySettings(risk=RISK, broker_base_url=paper_exchange.url, fill_wait_s=0.1,
                                   reconcile_interval_s=0)
        service = GatewayService(settings, broker=broker, audit=store)
        service.start()
        service.receive_directive(directive("normal", max_position_size=1.0))
        made.append((service, store))
        return service, store

    yield _start
    for service, store in made:
        service.stop()
        store.close()


def _override_rows(store: AuditStore) -> list[dict[str, object]]:
    return [e["payload"] for e in reversed(store.list(kind="state_change", limit=100))
            if e["payload"].get("event") == "defensive_override"]


def test_tighten_when_override_set_then_defensive_with_the_smaller_caps_and_never_looser() -> None:
    from datetime import datetime, timezone

    overlay = EffectiveOverlay("normal", 0.10, 1.0, False, "d-1", False, "directive d-1 (normal)")
    override = DefensiveOverride("ops", "costs", datetime(2024, 1, 2, tzinfo=timezone.utc), 0.02, 0.25,
                                 "playbook:cost_explosion")
    tight = tighten(overlay, override)
    assert (tight.mode, tight.defensive, tight.max_position_size, tight.risk_scale) == ("defensive", True, 0.02, 0.25)
    assert "playbook:cost_explosion" in tight.note
    already_tighter = EffectiveOverlay("defensive", 0.01, 0.1, True, None, True, "fallback")
    assert tighten(already_tighter, override).max_position_size == 0.01  # never loosens the master's
    assert tighten(overlay, None) is overlay


def test_defensive_override_when_set_then_master_normal_cannot_grow_positions_until_cleared(
    start: Callable[[], tuple[GatewayService, AuditStore]], exchange_http: httpx.Client
) -> None:
    service, store = start()
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 50.0}}).raise_for_status()
    service.handle_timestep(batch({"AAPL": (0.5, 100.0)}, bar_index=0))
    held = service.portfolio_summary()["positions"]["AAPL"]["qty"]
    assert held > 0

    override = service.set_defensive_override(principal="risk-officer", reason="cost ratio 55% > 40%",
                                              trigger="playbook:cost_explosion")
    assert override.max_position_size == RISK.directive_presets["defensive"].max_position_size
    # The master still says "normal"; the override wins: no new name, no larger position, reductions go through.
    outcome = service.handle_timestep(batch({"AAPL": (1.0, 100.0), "MSFT": (1.0, 50.0)}, bar_index=1))
    codes = {r.symbol: r.reason_code for r in outcome.plan.risk}
    assert codes["MSFT"] == "DEFENSIVE_MODE" and not any(o.intent.symbol == "MSFT" for o in outcome.orders)
    assert outcome.plan.overlay.defensive and "playbook:cost_explosion" in outcome.plan.overlay.note
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] <= held
    assert "DEFENSIVE_OVERRIDE" in {a["name"] for a in service.alerts()}
    assert service.status()["defensive_override"]["trigger"] == "playbook:cost_explosion"

    # A resume does not clear it (a separate decision); a restart keeps it.
    service.change_state(TradingState.ACTIVE, principal="risk-officer", reason="resume check")
    service.stop()
    store.close()
    service, store = start()
    assert service.status()["defensive_override"]["reason"] == "cost ratio 55% > 40%"
    assert "DEFENSIVE_OVERRIDE" in {a["name"] for a in service.alerts()}
    # Set again with looser caps: it only tightens.
    again = service.set_defensive_override(principal="trader", reason="again", max_position_size=0.5, risk_scale=1.0)
    assert (again.max_position_size, again.risk_scale) == (override.max_position_size, override.risk_scale)

    cleared = service.clear_defensive_override(principal="risk-officer", reason="costs back to normal")
    assert cleared is not None and service.status()["defensive_override"] is None
    outcome = service.handle_timestep(batch({"MSFT": (1.0, 50.0)}, bar_index=2))
    assert any(o.intent.symbol == "MSFT" for o in outcome.orders)
    rows = _override_rows(store)
    assert [r["action"] for r in rows] == ["set", "set", "clear"]
    assert rows[0]["trigger"] == "playbook:cost_explosion" and rows[0]["reason"] == "cost ratio 55% > 40%"
    assert rows[-1]["principal"] == "risk-officer"


def test_flatten_when_fraction_one_then_unwound_at_the_next_interval(
    start: Callable[[], tuple[GatewayService, AuditStore]], exchange_http: httpx.Client
) -> None:
    service, store = start()
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=0))
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] > 1000
    service.flatten(principal="risk-officer", reason="drawdown 16% (alert IntradayDrawdownHigh)",
                    trigger="playbook:drawdown_breach", fraction=1.0)
    assert service.trading_state == TradingState.HALTED
    service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=1))
    assert service.portfolio_summary()["positions"].get("AAPL", {"qty": 0.0})["qty"] == 0.0
    safe = [e["payload"] for e in store.list(kind="state_change", limit=50) if e["payload"].get("event") == "safe_mode"]
    assert safe[0]["fraction"] == 1.0 and safe[0]["trigger"] == "playbook:drawdown_breach"


def test_routes_when_defensive_posted_then_answer_and_bad_body_refused_with_reason(
    make_gateway: Callable[..., ServerHandle]
) -> None:
    gateway = make_gateway(risk=RISK)
    with httpx.Client(base_url=gateway.url, timeout=10.0) as http:
        bad = http.post("/v1/defensive", json={"principal": "ops", "reason": "x", "max_position_size": 2.0})
        assert bad.status_code == 422 and "max_position_size" in bad.text
        bad_trigger = http.post("/v1/kill-switch", json={"principal": "ops", "reason": "x", "trigger": "cron"})
        assert bad_trigger.status_code == 422 and "trigger" in bad_trigger.text
        answer = http.post("/v1/defensive", json={"principal": "ops", "reason": "costs", "risk_scale": 0.1,
                                                  "trigger": "playbook:cost_explosion"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["defensive_override"]["risk_scale"] == 0.1
        assert http.get("/v1/status").json()["defensive_override"]["principal"] == "ops"
        cleared = http.post("/v1/defensive/clear", json={"principal": "ops", "reason": "done"}).json()
        assert cleared == {"changed": True, "defensive_override": None}
        assert http.post("/v1/defensive/clear", json={"principal": "ops", "reason": "again"}).json()["changed"] is False
