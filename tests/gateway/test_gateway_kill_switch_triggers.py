"""Each automatic kill-switch trigger, planted for real: the service routes through AlpacaBroker to
the real paper exchange, the breach is produced by prices, latencies, holdings or a broken
connection, and the state change is audited with the trigger, principal and reason."""

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from gateway_builders import PAPER_HEADERS, batch, directive

from contracts.config import KillSwitchConfig, MarketHoursRule, RiskOverlaysConfig
from contracts.decisions import DataTrigger, TimestepDecisions
from contracts.orders import OrderIntent, TradingState
from gateway.audit.store import AuditStore
from gateway.brokers.alpaca_broker import AlpacaBroker
from gateway.brokers.base import AccountSnapshot, BrokerPosition, OrderResult
from gateway.errors import BrokerUnavailableError
from gateway.serve import ServerHandle
from gateway.engine.state import GatewayState
from gateway.service import GatewayService
from gateway.settings import GatewaySettings


class FlakyBroker:
    """The real broker whose submits can be made to fail in transit."""

    def __init__(self, inner: AlpacaBroker) -> None:
        self.inner = inner
        self.fail_submits = False

    def get_account(self) -> AccountSnapshot:
        return self.inner.get_account()

    def get_positions(self) -> list[BrokerPosition]:
        return self.inner.get_positions()

    def submit_market_order(self, intent: OrderIntent) -> OrderResult:
        if self.fail_submits:
            raise BrokerUnavailableError("connection refused (planted)")
        return self.inner.submit_market_order(intent)

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None:
        return self.inner.get_order_by_client_id(client_order_id)


def risk(**kill_switch: object) -> RiskOverlaysConfig:
    # One symbol may hold the whole book, so a price move can produce any drawdown.
    return RiskOverlaysConfig(
        per_symbol_cap=1.0, max_order_notional=1e9, market_hours=MarketHoursRule(source="off"),
        kill_switch=KillSwitchConfig(**kill_switch),  # type: ignore[arg-type]
    )


@pytest.fixture
def start_service(
    paper_exchange: ServerHandle, tmp_path: Path
) -> Callable[..., tuple[GatewayService, FlakyBroker, AuditStore]]:
    made: list[AuditStore] = []

    def _start(config: RiskOverlaysConfig, routing_concurrency: int = 8) -> tuple[GatewayService, FlakyBroker, AuditStore]:
        store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
        made.append(store)
        broker = FlakyBroker(AlpacaBroker(paper_exchange.url, "marlops-paper", "marlops-paper-secret"))
        settings = GatewaySettings(risk=config, broker_base_url=paper_exchange.url, fill_wait_s=0.1,
                                   reconcile_interval_s=0, routing_concurrency=routing_concurrency)
        service = GatewayService(settings, broker=broker, audit=store)  # type: ignore[arg-type]
        service.start()
        service.receive_directive(directive("normal", max_position_size=1.0))
        return service, broker, store

    yield _start
    for store in made:
        store.close()


def set_prices(exchange_http: httpx.Client, prices: dict[str, float]) -> None:
    exchange_http.post("/_sim/prices", json={"prices": prices}).raise_for_status()


def state_changes(store: AuditStore) -> list[dict[str, object]]:
    return [e["payload"] for e in reversed(store.list(kind="state_change", limit=100))
            if e["payload"].get("event") == "trading_state"]


def test_drawdown_when_equity_falls_past_max_then_safe_mode_halts_and_flattens_gradually(
    start_service: Callable[..., tuple[GatewayService, FlakyBroker, AuditStore]], exchange_http: httpx.Client
) -> None:
    service, _broker, store = start_service(risk(max_drawdown=0.2, intraday_drawdown=0.9))
    set_prices(exchange_http, {"AAPL": 100.0})
    service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=0))
    held = service.portfolio_summary()["positions"]["AAPL"]["qty"]
    assert held > 9000  # ~ the whole book in one name
    set_prices(exchange_http, {"AAPL": 70.0})
    service.handle_timestep(batch({"AAPL": (1.0, 70.0)}, bar_index=1))
    assert service.trading_state == TradingState.HALTED
    assert service.safe_mode is not None
    change = state_changes(store)[-1]
    assert change["trigger"] == "max_drawdown" and change["current"] == "HALTED"
    assert "drawdown" in str(change["reason"])
    assert {a["name"] for a in service.alerts()} >= {"MAX_DRAWDOWN", "SAFE_MODE"}

    sizes = [held]
    for bar in range(2, 8):
        outcome = service.handle_timestep(batch({"AAPL": (1.0, 70.0)}, bar_index=bar))
        assert all(r.reason_code == "TRADING_HALTED" for r in outcome.plan.risk)
        sizes.append(service.portfolio_summary()["positions"].get("AAPL", {"qty": 0.0})["qty"])
    # 25% of the starting size per interval: flat after four intervals, never flipped short.
    assert sizes[1] == pytest.approx(held - -(-held * 0.25 // 1), abs=1.0)
    assert sizes[4] == 0.0 and sizes[-1] == 0.0
    assert all(later <= earlier for earlier, later in zip(sizes, sizes[1:]))
    assert service.trading_state == TradingState.HALTED


def test_intraday_drawdown_when_session_drop_past_limit_then_reducing_and_alert(
    start_service: Callable[..., tuple[GatewayService, FlakyBroker, AuditStore]], exchange_http: httpx.Client
) -> None:
    service, _broker, store = start_service(risk(max_drawdown=0.9, intraday_drawdown=0.15))
    # One session (New York date 2024-01-03), after the directive was issued.
    morning = datetime(2024, 1, 3, 15, 0, tzinfo=timezone.utc)
    afternoon = datetime(2024, 1, 3, 20, 0, tzinfo=timezone.utc)
    set_prices(exchange_http, {"AAPL": 100.0})
    service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=0, at=morning))
    assert service.trading_state == TradingState.ACTIVE
    set_prices(exchange_http, {"AAPL": 80.0})
    service.handle_timestep(batch({"AAPL": (1.0, 80.0)}, bar_index=1, at=afternoon))
    assert service.trading_state == TradingState.REDUCING
    assert state_changes(store)[-1]["trigger"] == "intraday_drawdown"
    assert "INTRADAY_DRAWDOWN" in {a["name"] for a in service.alerts()}
    # Reduce only: a request to grow the position is cut back.
    set_prices(exchange_http, {"AAPL": 80.0, "MSFT": 50.0})
    outcome = service.handle_timestep(batch({"AAPL": (1.0, 80.0), "MSFT": (0.5, 50.0)}, bar_index=2,
                                            at=afternoon.replace(day=4)))
    assert {r.symbol: r.reason_code for r in outcome.plan.risk}["MSFT"] == "TRADING_REDUCING"
    assert all(o.intent.symbol != "MSFT" for o in outcome.orders)


def test_latency_when_slow_for_more_than_three_intervals_then_reducing(
    start_service: Callable[..., tuple[GatewayService, FlakyBroker, AuditStore]], exchange_http: httpx.Client
) -> None:
    service, _broker, store = start_service(risk())
    set_prices(exchange_http, {"AAPL": 100.0})
    slow = 5000.0  # threshold 2000 ms by default
    for bar in range(3):
        b = batch({"AAPL": (0.1, 100.0)}, bar_index=bar).model_copy(update={"decision_latency_ms": slow})
        service.handle_timestep(b)
        assert service.trading_state == TradingState.ACTIVE  # three in a row is still tolerated
    fast = batch({"AAPL": (0.1, 100.0)}, bar_index=3).model_copy(update={"decision_latency_ms": 10.0})
    service.handle_timestep(fast)  # the streak is broken
    for bar in range(4, 8):
        b = batch({"AAPL": (0.1, 100.0)}, bar_index=bar).model_copy(update={"decision_latency_ms": slow})
        service.handle_timestep(b)
    assert service.trading_state == TradingState.REDUCING
    change = state_changes(store)[-1]
    assert change["trigger"] == "latency" and "4 consecutive" in str(change["reason"])


def test_compliance_when_restricted_symbol_held_at_broker_then_halted(
    start_service: Callable[..., tuple[GatewayService, FlakyBroker, AuditStore]], exchange_http: httpx.Client
) -> None:
    set_prices(exchange_http, {"AAPL": 100.0, "MSFT": 50.0})
    # Someone bought the restricted name outside the gateway: the broker's book is the truth.
    exchange_http.post("/v2/orders", headers=PAPER_HEADERS, json={
        "symbol": "MSFT", "qty": 10, "side": "buy", "type": "market", "time_in_force": "day",
    }).raise_for_status()
    config = risk().model_copy(update={"restricted_symbols": ("MSFT",)})
    service, _broker, store = start_service(config)
    report = service.reconcile_now(principal="rita")
    assert report["trading_state"] == "HALTED"
    change = state_changes(store)[-1]
    assert change["trigger"] == "compliance" and "restricted symbol MSFT" in str(change["reason"])
    assert "COMPLIANCE_BREACH" in {a["name"] for a in service.alerts()}


def test_dependency_when_broker_unreachable_three_times_then_halted_and_rest_not_sent(
    start_service: Callable[..., tuple[GatewayService, FlakyBroker, AuditStore]], exchange_http: httpx.Client
) -> None:
    # One routing worker, so "the rest" is exactly the 4th order (with N workers, up to N are on the wire).
    service, broker, store = start_service(risk(), routing_concurrency=1)
    prices = {"AAPL": 100.0, "MSFT": 50.0, "NVDA": 40.0, "AMZN": 30.0}
    set_prices(exchange_http, prices)
    broker.fail_submits = True
    outcome = service.handle_timestep(batch({s: (0.1, p) for s, p in prices.items()}, bar_index=0))
    assert [o.status for o in outcome.orders] == ["unknown", "unknown", "unknown", "not_sent"]
    assert service.trading_state == TradingState.HALTED
    change = state_changes(store)[-1]
    assert change["trigger"] == "dependency" and "3 consecutive" in str(change["reason"])
    assert exchange_http.get("/_sim/state").json()["orders"] == 0


def test_resume_when_operator_resumes_then_alerts_cleared_and_active(
    start_service: Callable[..., tuple[GatewayService, FlakyBroker, AuditStore]], exchange_http: httpx.Client
) -> None:
    service, broker, store = start_service(risk())
    set_prices(exchange_http, {"AAPL": 100.0})
    service.flatten(principal="rita", reason="drill")
    assert service.trading_state == TradingState.HALTED and service.safe_mode is not None
    assert GatewayState.restore(store.read_state())[0].safe_mode is not None  # what a restart would read
    service.change_state(TradingState.ACTIVE, principal="rita", reason="drill over")
    assert service.trading_state == TradingState.ACTIVE and service.safe_mode is None
    assert service.alerts() == []
    persisted = GatewayState.restore(store.read_state())[0]
    assert persisted.safe_mode is None and persisted.trading_state == TradingState.ACTIVE


def test_feature_drift_when_sent_with_a_timestep_then_halted_before_its_orders_and_audited(
    start_service: Callable[..., tuple[GatewayService, FlakyBroker, AuditStore]], exchange_http: httpx.Client
) -> None:
    service, _broker, store = start_service(risk())
    set_prices(exchange_http, {"AAPL": 100.0})
    service.handle_timestep(batch({"AAPL": (0.5, 100.0)}, bar_index=0))
    held = service.portfolio_summary()["positions"]["AAPL"]["qty"]
    drifted = batch({"AAPL": (1.0, 100.0)}, bar_index=1).model_copy(update={"triggers": (
        DataTrigger(code="FEATURE_DRIFT", reason="vix_level 6.1 sigma from training (limit 4.0)"),)})
    outcome = service.handle_timestep(drifted)
    assert service.trading_state == TradingState.HALTED
    assert [r.reason_code for r in outcome.plan.risk] == ["TRADING_HALTED"] and not outcome.orders
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] == held
    change = state_changes(store)[-1]
    assert (change["trigger"], change["current"]) == ("feature_drift", "HALTED")
    assert "vix_level 6.1 sigma" in str(change["reason"]) and "bar 1" in str(change["reason"])
    assert "FEATURE_DRIFT" in {a["name"] for a in service.alerts()}
    # Still drifting next bar: no second state change; clean bars do not resume (an operator does).
    service.handle_timestep(drifted.model_copy(update={"bar_index": 2}))
    service.handle_timestep(batch({"AAPL": (1.0, 100.0)}, bar_index=3))
    assert service.trading_state == TradingState.HALTED
    assert [c["trigger"] for c in state_changes(store)].count("feature_drift") == 1


def test_no_new_risk_when_a_symbol_is_flagged_then_increase_denied_reduction_allowed_others_trade(
    start_service: Callable[..., tuple[GatewayService, FlakyBroker, AuditStore]], exchange_http: httpx.Client
) -> None:
    service, _broker, _store = start_service(risk())
    set_prices(exchange_http, {"AAPL": 100.0, "MSFT": 50.0, "NVDA": 20.0})
    service.handle_timestep(batch({"AAPL": (0.4, 100.0)}, bar_index=0))
    held = service.portfolio_summary()["positions"]["AAPL"]["qty"]

    def flagged(levels: dict[str, tuple[float, float]], bar: int, flags: dict[str, str]) -> TimestepDecisions:
        plain = batch(levels, bar_index=bar)
        return plain.model_copy(update={"decisions": tuple(
            d.model_copy(update={"no_new_risk": flags.get(d.symbol)}) for d in plain.decisions)})

    outcome = service.handle_timestep(flagged({"AAPL": (0.8, 100.0), "MSFT": (0.3, 50.0), "NVDA": (0.2, 20.0)}, 1,
                                              {"AAPL": "FEED_STALE", "MSFT": "NO_QUORUM"}))
    risk_by = {r.symbol: r for r in outcome.plan.risk}
    assert (risk_by["AAPL"].approved, risk_by["AAPL"].reason_code) == (False, "DATA_UNRELIABLE")
    assert "FEED_STALE" in risk_by["AAPL"].detail
    assert (risk_by["MSFT"].approved, risk_by["MSFT"].reason_code) == (False, "DATA_UNRELIABLE")
    assert risk_by["NVDA"].approved and {o.intent.symbol for o in outcome.orders} == {"NVDA"}
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] == held
    # A flagged symbol may still shrink.
    outcome = service.handle_timestep(flagged({"AAPL": (0.1, 100.0)}, 2, {"AAPL": "BAR_INCONSISTENT"}))
    assert outcome.plan.risk[0].approved and [o.intent.symbol for o in outcome.orders] == ["AAPL"]
    assert 0 < service.portfolio_summary()["positions"]["AAPL"]["qty"] < held
