"""Market windows on one clock, the paper-trading gates, the bar recorder's P&L and the lifecycle summary."""

from __future__ import annotations

import pandas as pd
import pytest

from contracts.config import PaperTradingConfig
from contracts.decisions import SymbolDecision
from market_data.source import load_market
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.market import (
    Window,
    split_for_lifecycle,
    trading_days_between,
    window_after,
)
from marlops.lifecycle.paper import paper_gates
from marlops.lifecycle.recorder import BarRecorder
from marlops.lifecycle.store import LifecycleStore
from marlops.lifecycle.summary import candidate_summary
from marlops.trading import BarDetail, BarOutcome


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_market("synthetic", seed=1, n_symbols=3, n_days=60)


def test_split_when_days_withheld_then_history_ends_before_them_and_feed_keeps_all(bars: pd.DataFrame) -> None:
    history, feed = split_for_lifecycle(bars, 17)
    stamps = sorted(bars["timestamp"].unique())
    assert history["timestamp"].max() == stamps[-18] and len(feed) == len(bars)
    assert split_for_lifecycle(bars, 0)[0] is bars


def test_split_when_data_too_short_then_error_names_the_setting(bars: pd.DataFrame) -> None:
    with pytest.raises(LifecycleError, match="replay_trading_days"):
        split_for_lifecycle(bars, 60)


def test_window_when_asked_for_days_after_clock_then_next_trading_days(bars: pd.DataFrame) -> None:
    stamps = sorted(bars["timestamp"].unique())
    window = window_after(bars, stamps[10], 5, what="paper trading")
    assert (window.start, window.end, window.trading_days) == (stamps[11], stamps[15], 5)
    assert trading_days_between(bars, stamps[10], window.end) == 5


def test_window_when_market_too_short_then_error_says_what_to_do(bars: pd.DataFrame) -> None:
    stamps = sorted(bars["timestamp"].unique())
    with pytest.raises(LifecycleError, match="needs 5 trading days.*has 2 left"):
        window_after(bars, stamps[-3], 5, what="the canary")


def _window() -> Window:
    return Window(pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-05", tz="UTC"), 5)


def test_paper_gates_when_positive_and_within_turnover_then_all_pass() -> None:
    checks = paper_gates({"net_return": 0.004, "turnover_per_day": 0.3}, decided_bars=5, window=_window(),
                         cfg=PaperTradingConfig())
    assert all(c["passed"] for c in checks.values())


@pytest.mark.parametrize(("metrics", "bars", "failed"), [
    ({"net_return": 0.0, "turnover_per_day": 0.3}, 5, "net_return"),  # flat is not positive
    ({"net_return": -0.01, "turnover_per_day": 0.3}, 5, "net_return"),
    ({"net_return": 0.01, "turnover_per_day": 1.5}, 5, "turnover"),
    ({"net_return": 0.01, "turnover_per_day": 0.3}, 4, "traded_every_day"),
])
def test_paper_gates_when_one_rule_broken_then_that_gate_blocks(metrics: dict[str, float], bars: int,
                                                                failed: str) -> None:
    checks = paper_gates(metrics, decided_bars=bars, window=_window(), cfg=PaperTradingConfig())
    assert [k for k, c in checks.items() if not c["passed"]] == [failed]
    assert checks[failed]["detail"]


def _outcome(i: int, price: float, qty: float, orders: tuple[dict[str, object], ...] = (), *,
             failed: tuple[str, ...] = (), version: str = "symbol_agent/1") -> BarOutcome:
    decision = SymbolDecision(symbol="AAA", action=1, target_level=0.25, probabilities=(0.5, 0.5), price=price,
                              policy_version=version)
    detail = BarDetail(variants={"AAA": "candidate"}, decisions=(decision,), shadows={}, orders=orders, risk=(),
                       positions={"AAA": qty}, prices={"AAA": price}, inference_ms={version: 2.0}, failed=failed)
    return BarOutcome(bar_index=i, timestamp=pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=i),
                      status="decided", equity=1e6, detail=detail)


def test_recorder_when_position_held_then_pnl_is_previous_qty_times_move_less_cost() -> None:
    recorder = BarRecorder()
    first = recorder(_outcome(0, 100.0, 10.0, ({"symbol": "AAA", "qty": 10, "estimated_cost": 1.5},)))
    second = recorder(_outcome(1, 103.0, 10.0))
    assert first is not None and second is not None
    assert first.symbols[0].pnl == pytest.approx(-1.5) and first.symbols[0].traded_notional == pytest.approx(1000.0)
    assert second.symbols[0].pnl == pytest.approx(30.0) and second.symbols[0].variant == "candidate"


def test_recorder_when_routed_version_failed_then_fallback_decision_is_an_error() -> None:
    record = BarRecorder()(_outcome(0, 100.0, 0.0, failed=("symbol_agent/2",), version="sl_fallback/1"))
    assert record is not None and record.symbols[0].error


def test_summary_when_stages_recorded_then_outcome_and_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LifecycleStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        store.set_stage("r1", "registration", "passed", {"versions": {"symbol_agent": "1"}})
        store.set_stage("r1", "validation", "blocked", {"reason": "Go/No-Go failed: min_sharpe"})
        store.set_stage("r2", "registration", "passed", {"versions": {"symbol_agent": "2"}})
        for stage in ("validation", "staging", "paper_trading", "deployment_rfc", "rfc_approval"):
            store.set_stage("r2", stage, "passed", {})
        store.set_stage("r2", "canary", "rolled_back", {"reason": "MODEL_ACTION_COLLAPSE: ..."})
        weak, planted = candidate_summary(store, "r1"), candidate_summary(store, "r2")
    finally:
        store.close()
    assert weak["outcome"] == "blocked_at_validation" and "min_sharpe" in weak["reason"]
    assert weak["versions"] == {"symbol_agent": "1"} and weak["stages_passed"] == ["registration"]
    assert planted["outcome"] == "rolled_back_at_canary" and planted["reason"].startswith("MODEL_ACTION_COLLAPSE")
    assert "rfc_approval" in planted["stages_passed"] and "canary" not in planted["stages_passed"]


def test_summary_when_rolled_out_then_production_even_if_review_needs_attention(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LifecycleStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        store.set_stage("r1", "registration", "passed", {"versions": {"symbol_agent": "1"}})
        store.set_stage("r1", "production_rollout", "passed", {"production_dir": "models/rl/production/2026-11-30"})
        store.set_stage("r1", "post_deployment_review", "blocked", {"reason": "live Sharpe trails"})
        summary = candidate_summary(store, "r1")
    finally:
        store.close()
    assert summary["outcome"] == "production"
    assert "2026-11-30" in summary["reason"] and "needs attention: live Sharpe trails" in summary["reason"]
