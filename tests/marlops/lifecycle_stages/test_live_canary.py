"""Live canaries: the canary-health sensor's function judges the bars `marlops trade` recorded since the canary
started; a breach routes the cohort back to production at once, a healthy canary passes after its trading days."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from contracts.config import load_rl_config
from marlops.context import PipelineContext
from marlops.lifecycle.context import LifecycleContext, lifecycle_context
from marlops.lifecycle.monitor import check_canaries
from marlops.lifecycle.records import LIVE_SCOPE, BarRecord, SymbolBar
from marlops.paths import StatePaths
from marlops.routing import DEFAULT_ROUTE, PolicyRef, RoutingChange

REPO = Path(__file__).resolve().parents[3]
COHORT = ("SYM01", "SYM02")
CONTROL = tuple(f"SYM{i:02d}" for i in range(3, 21))


@pytest.fixture()
def lc(tmp_path: Path) -> Iterator[LifecycleContext]:
    ctx = PipelineContext.create(StatePaths(root=tmp_path / "state", project_root=tmp_path),
                                 load_rl_config(REPO / "config" / "rl"))
    with lifecycle_context(ctx) as context:
        context.routing.apply(RoutingChange(
            policies={"production": PolicyRef("symbol_agent", 1), "candidate": PolicyRef("symbol_agent", 2),
                      "sl_fallback": PolicyRef("sl_fallback", 1)},
            routes={**{s: ("candidate", None) for s in COHORT}, DEFAULT_ROUTE: ("production", "candidate")}),
            principal="test", reason="canary")
        context.store.set_stage("run-2", "canary", "running",
                                {"rfc_id": "RFC-2-x", "cohort": list(COHORT), "trading_days": 2,
                                 "started_market_time": "2024-11-01T00:00:00+00:00",
                                 "started_after_bar_index": -1})
        yield context


def _bar(day: int, *, certain: bool = False) -> BarRecord:
    ts = pd.Timestamp("2024-11-04T21:00:00+00:00") + pd.Timedelta(days=day)

    def row(symbol: str, variant: str, version: str) -> SymbolBar:
        probs = (0.0, 0.0, 0.0, 0.0, 1.0) if certain and variant == "candidate" else (0.1, 0.3, 0.3, 0.2, 0.1)
        return SymbolBar(bar_index=day, timestamp=ts.isoformat(), symbol=symbol, variant=variant,
                         policy_version=version, action=int(max(range(5), key=lambda i: probs[i])),
                         probabilities=probs, price=100.0, position_qty=0.0, position_value=0.0, pnl=0.0, cost=0.0,
                         traded_notional=0.0, denied=False, error=False, inference_ms=2.0)

    rows = [row(s, "candidate", "symbol_agent/2") for s in COHORT] + [row(s, "production", "symbol_agent/1")
                                                                       for s in CONTROL]
    return BarRecord(bar_index=day, timestamp=ts.isoformat(), symbols=tuple(rows), decision_latency_ms=5.0,
                     equity=1e6, trading_state="ACTIVE")


def test_live_canary_when_healthy_for_its_trading_days_then_stage_passes_and_routes_stay(lc: LifecycleContext) -> None:
    lc.store.append_bars(LIVE_SCOPE, [_bar(0)])
    assert check_canaries(lc) == []  # one day of two: still running
    lc.store.append_bars(LIVE_SCOPE, [_bar(1)])
    actions = check_canaries(lc)
    assert [a.kind for a in actions] == ["canary_passed"]
    assert lc.store.stages("run-2")["canary"].status == "passed"
    assert lc.routing.read().route_for(COHORT[0]).variant == "candidate"  # the rollout switches, not the sensor


def test_live_canary_when_outputs_collapse_then_cohort_back_on_production_and_audited(lc: LifecycleContext) -> None:
    lc.store.append_bars(LIVE_SCOPE, [_bar(0, certain=True)])
    actions = check_canaries(lc)
    assert [a.kind for a in actions] == ["canary_rolled_back"]
    assert any(r.startswith("MODEL_ACTION_COLLAPSE") for r in actions[0].reasons)
    table = lc.routing.read()
    assert "candidate" not in table.policies and all(table.route_for(s).variant == "production" for s in COHORT)
    assert table.routes[DEFAULT_ROUTE].shadow is None
    assert lc.routing.history(1)[0]["principal"] == "sensor:canary_health"
    assert lc.store.stages("run-2")["canary"].status == "rolled_back"
    assert check_canaries(lc) == []  # acted once


def test_live_bars_when_asked_for_the_last_n_then_only_those_in_bar_order(lc: LifecycleContext) -> None:
    lc.store.append_bars(LIVE_SCOPE, [_bar(day) for day in range(5)], advance_clock="market")
    assert lc.store.clock() == _bar(4).timestamp  # recorded and clocked in one write
    assert [b.bar_index for b in lc.store.bars(LIVE_SCOPE, last=2)] == [3, 4]
    assert [b.bar_index for b in lc.store.bars(LIVE_SCOPE, since_bar_index=1, last=10)] == [1, 2, 3, 4]
