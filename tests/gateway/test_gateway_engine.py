"""The engine's parts without HTTP: GatewayService over the in-process paper book (paper_exchange.inprocess),
a SQLite audit store and an injected ManualClock.

What is pinned here: the answer comes once intents are durable (before any broker call returns), routing is
concurrent with risk-reducing orders answered before any risk-adding order is sent, the kill switch stops what
has not been sent yet, GatewayState is the one thing a restart reads (and an older trail is converted), every
audit row reads back as its kind's typed record, and throttles run on the injected monotonic clock.
"""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_builders import batch, directive

from contracts.audit import AUDIT_KINDS, read_payload
from contracts.config import MarketHoursRule, OrderRateRule, RiskOverlaysConfig
from contracts.orders import OrderIntent, OrderStatus, TradingState
from gateway.audit.store import AuditStore
from gateway.brokers.base import OrderResult
from gateway.engine.clock import ManualClock
from gateway.errors import BrokerUnavailableError, StaleTimestepError
from gateway.engine.state import INFLIGHT_PREFIX, KILL_SWITCH_KEY, LAST_BAR_KEY, GatewayState
from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from paper_exchange.inprocess import InProcessBroker
from polling import wait_for

PRICES = {"AAPL": 100.0, "MSFT": 50.0, "NVDA": 40.0, "AMZN": 25.0}
OPEN = RiskOverlaysConfig(market_hours=MarketHoursRule(source="off"))


class GatedBroker(InProcessBroker):
    """Submits wait at a gate the test opens; every submit is logged in the order it reached the broker."""

    def __init__(self) -> None:
        super().__init__(initial_cash=1_000_000.0)
        self.gate = threading.Event()
        self.gate.set()
        self.submitted: list[tuple[str, str]] = []
        self.waiting = 0
        self._log = threading.Lock()

    def submit_market_order(self, intent: OrderIntent) -> OrderResult:
        with self._log:
            self.waiting += 1
        self.gate.wait(30)
        with self._log:
            self.waiting -= 1
            self.submitted.append((intent.symbol, intent.side.value))
        return super().submit_market_order(intent)


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    yield store
    store.close()


def start(broker: InProcessBroker, audit: AuditStore, clock: ManualClock | None = None,
          risk: RiskOverlaysConfig = OPEN, **overrides: object) -> GatewayService:
    broker.set_prices(PRICES)
    settings = GatewaySettings(**{"risk": risk, "broker_base_url": "inprocess://", "fill_wait_s": 0.0,
                                  "reconcile_interval_s": 0, **overrides})
    service = GatewayService(settings, broker=broker, audit=audit, clock=clock)
    service.start()
    service.receive_directive(directive("normal", max_position_size=1.0))
    return service


def test_timestep_when_broker_slow_then_answered_with_durable_intents_before_any_order_is_sent(
        audit: AuditStore) -> None:
    broker = GatedBroker()
    service = start(broker, audit)
    broker.gate.clear()  # every submit waits
    outcome = service.handle_timestep(batch({"AAPL": (0.5, 100.0), "MSFT": (0.5, 50.0)}), settle=False)
    assert not outcome.settled and [o.status for o in outcome.orders] == [OrderStatus.INTENT] * 2
    assert broker.submitted == []  # answered while no order has reached the broker
    # ...and the intents were durable at that moment: rows and ledger keys, what a restart reads.
    assert [e["payload"]["status"] for e in audit.list(kind="order", limit=10)] == ["intent", "intent"]
    stored = audit.read_state()
    assert {k for k in stored if k.startswith(INFLIGHT_PREFIX)} == {
        INFLIGHT_PREFIX + o.intent.client_order_id for o in outcome.orders}
    broker.gate.set()
    found = service.timestep(outcome.timestep_id, wait_s=10)
    assert found is not None and found["settled"] and [o["status"] for o in found["orders"]] == ["filled"] * 2
    assert not any(k.startswith(INFLIGHT_PREFIX) for k in audit.read_state())
    service.stop()


def test_routing_when_timestep_reduces_and_adds_then_every_reduction_answered_before_any_addition_sent(
        audit: AuditStore) -> None:
    broker = GatedBroker()
    service = start(broker, audit, routing_concurrency=4)
    service.handle_timestep(batch({s: (0.5, p) for s, p in PRICES.items()}))  # long everywhere
    broker.submitted.clear()
    # Two positions shrink (sells), two grow (buys): the sells are answered before any buy is sent.
    second = batch({"AAPL": (0.1, 100.0), "MSFT": (0.1, 50.0), "NVDA": (1.0, 40.0), "AMZN": (1.0, 25.0)},
                   bar_index=1)
    outcome = service.handle_timestep(second)
    assert sorted((o.intent.symbol, o.status) for o in outcome.orders) == [
        ("AAPL", "filled"), ("AMZN", "filled"), ("MSFT", "filled"), ("NVDA", "filled")]
    sides = [side for _symbol, side in broker.submitted]
    assert sides == ["sell", "sell", "buy", "buy"], broker.submitted
    service.stop()


def test_kill_switch_when_pressed_while_orders_route_then_orders_not_yet_sent_are_not_sent(
        audit: AuditStore) -> None:
    broker = GatedBroker()
    service = start(broker, audit, routing_concurrency=2)
    broker.gate.clear()
    outcome = service.handle_timestep(batch({s: (0.5, p) for s, p in PRICES.items()}), settle=False)
    wait_for(lambda: broker.waiting == 2, timeout_s=10, what="two orders on the wire")  # 2 workers, 2 in flight
    service.change_state(TradingState.HALTED, principal="rita", reason="drill")
    broker.gate.set()
    found = service.timestep(outcome.timestep_id, wait_s=10)
    assert found is not None and found["settled"]
    statuses = sorted(o["status"] for o in found["orders"])
    assert statuses == ["filled", "filled", "not_sent", "not_sent"]  # the two on the wire complete; nothing else
    assert len(broker.submitted) == 2
    service.stop()


def test_restart_when_state_persisted_then_gateway_state_is_what_is_restored(audit: AuditStore) -> None:
    broker = InProcessBroker(initial_cash=1_000_000.0)
    service = start(broker, audit)
    service.handle_timestep(batch({"AAPL": (0.5, 100.0)}, bar_index=7))
    service.change_state(TradingState.REDUCING, principal="rita", reason="careful")
    service.stop()
    stored = audit.read_state()
    assert stored[KILL_SWITCH_KEY]["trading_state"] == "REDUCING" and stored[LAST_BAR_KEY] == {"AAPL": 7}
    again = GatewayService(service.settings, broker=broker, audit=audit)
    again.start()
    assert again.trading_state == TradingState.REDUCING
    with pytest.raises(StaleTimestepError, match="already decided at bar_index 7"):
        again.handle_timestep(batch({"AAPL": (0.5, 100.0)}, bar_index=7))
    again.stop()


def test_restart_when_trail_predates_gateway_state_then_converted_once_and_old_keys_dropped(
        audit: AuditStore) -> None:
    broker = InProcessBroker(initial_cash=1_000_000.0)
    service = start(broker, audit)
    service.change_state(TradingState.HALTED, principal="rita", reason="before the upgrade")
    service.stop()
    # The layout of the gateway before GatewayState: separate keys, the trading state only in the trail.
    sections = {k: None for k in audit.read_state() if k.startswith("gateway_state/")}
    audit.append_many([], state={**sections, "last_bar": {"MSFT": 3}, "drawdown_marks": {"peak_equity": 1.5e6},
                                 "latency_streak": 2, "inflight": {}, "safe_mode": None})
    upgraded = GatewayService(service.settings, broker=broker, audit=audit)
    upgraded.start()
    assert upgraded.trading_state == TradingState.HALTED  # read from the last state_change row
    stored = audit.read_state()
    assert stored[LAST_BAR_KEY] == {"MSFT": 3} and stored[KILL_SWITCH_KEY]["latency_streak"] == 2
    assert stored[KILL_SWITCH_KEY]["drawdown_marks"]["peak_equity"] == 1.5e6
    assert not {"last_bar", "drawdown_marks", "latency_streak", "inflight"} & set(stored)
    restored, legacy = GatewayState.restore(stored)
    assert not legacy and restored.trading_state == TradingState.HALTED
    upgraded.stop()


def test_audit_rows_when_a_session_ran_then_every_row_reads_back_as_its_kinds_typed_record(
        audit: AuditStore) -> None:
    broker = InProcessBroker(initial_cash=1_000_000.0)
    service = start(broker, audit)
    service.handle_timestep(batch({"AAPL": (0.5, 100.0), "MSFT": (0.2, 50.0)}))
    service.reconcile_now(principal="rita", reason="typed rows")
    service.flatten(principal="rita", reason="typed rows")
    service.stop()
    rows = audit.list(limit=1000)
    kinds = {row["kind"] for row in rows}
    assert kinds == set(AUDIT_KINDS)  # every kind was written in this session...
    for row in rows:
        read_payload(row["kind"], row["payload"])  # ...and each row is its kind's record (raises otherwise)


def test_order_rate_when_clock_advances_past_the_window_then_budget_returns(audit: AuditStore) -> None:
    clock = ManualClock()
    broker = InProcessBroker(initial_cash=1_000_000.0)
    risk = OPEN.model_copy(update={"order_rate": OrderRateRule(max_orders=2, window_seconds=60)})
    service = start(broker, audit, clock, risk=risk)
    first = service.handle_timestep(batch({s: (0.5, p) for s, p in PRICES.items()}))
    assert len(first.orders) == 2  # the throttle's budget, on the injected monotonic clock
    clock.advance(30)
    assert service.handle_timestep(batch({"NVDA": (0.5, 40.0)}, bar_index=1)).orders == ()
    clock.advance(31)
    third = service.handle_timestep(batch({"NVDA": (0.5, 40.0)}, bar_index=2))
    assert [o.status for o in third.orders] == ["filled"]
    latency = service.latency_summary()
    assert latency["action_to_order"]["count"] == 3 and latency["decision"]["count"] == 3
    service.stop()


class LostAnswerBroker(InProcessBroker):
    """The submit lands but its answer is lost (in doubt); lookups wait at a gate the test opens."""

    def __init__(self) -> None:
        super().__init__(initial_cash=1_000_000.0)
        self.lookup_gate = threading.Event()
        self.lookups_waiting = 0
        self._count = threading.Lock()

    def submit_market_order(self, intent: OrderIntent) -> OrderResult:
        super().submit_market_order(intent)
        raise BrokerUnavailableError("connection reset before the answer arrived")

    def get_order_by_client_id(self, client_order_id: str) -> OrderResult | None:
        with self._count:
            self.lookups_waiting += 1
        self.lookup_gate.wait(30)
        return super().get_order_by_client_id(client_order_id)


def test_lookups_when_routing_and_reconciliation_look_up_the_same_order_at_once_then_its_fill_applies_once(
        audit: AuditStore) -> None:
    broker = LostAnswerBroker()
    service = start(broker, audit, recovery_settle_s=0.0)
    outcome = service.handle_timestep(batch({"AAPL": (0.5, 100.0)}), settle=False)
    # The timestep's own lookup of its in-doubt order is waiting at the gate; reconciliation looks it up too.
    wait_for(lambda: broker.lookups_waiting >= 1, timeout_s=10, what="the routing's lookup")
    reconciling = threading.Thread(target=service.reconcile_now, kwargs={"principal": "rita", "reason": "race"})
    reconciling.start()
    broker.lookup_gate.set()
    reconciling.join(30)
    found = service.timestep(outcome.timestep_id, wait_s=10)
    assert found is not None and found["settled"]
    assert audit.count("fill") == 1  # found once, applied once
    assert service.portfolio_summary()["positions"]["AAPL"]["qty"] == 500.0
    assert service.inflight_order_ids() == []
    service.stop()
