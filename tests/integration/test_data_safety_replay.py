"""Data and model safety end to end, on the real services (tritonserver, the gateway, the paper exchange) with a
policy trained on the same synthetic market (so an unshifted replay is stationary with respect to training):

- `marlops replay --source synthetic:drift-shock`: the bars before the planted shift are a stationary replay (no
  drift halt, no drift alert, trading ACTIVE); the gateway is HALTED with FEATURE_DRIFT within 3 bars of the shift;
- `synthetic:feed-fault`: the bad provider is quarantined with an alert and trading continues;
- one stale symbol: it gets no orders while the other symbols trade.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from contracts.config import load_rl_config
from market_data.bar_source import ReplayBarSource
from market_data.provider_faults import FaultyProvider, Stale
from market_data.quorum import validated
from market_data.source import load_market
from marlops.paths import StatePaths
from marlops.pipeline import (
    PipelineContext,
    TrainingSettings,
    deploy_to_triton,
    fit_spec,
    register_candidate,
    registered_routing,
    replay_on_own_table,
    train_candidate,
)
from marlops.policy_router import read_version_manifest
from marlops.replay_cli import replay
from marlops.replay_scenarios import replay_start
from marlops.routing import RoutingChange, RoutingTable
from marlops.routing_store import RoutingStore

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
N_SYMBOLS, N_DAYS, SEED = 6, 504, 3
REPLAY_BARS = 30
SUMMARY_KEYS = {"final_trading_state", "triggers", "alerts", "drift", "feeds", "pnl"}


@dataclass
class World:
    root: Path
    config_dir: Path
    ctx: PipelineContext


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("safety")
    paths = StatePaths(root=root / "state", project_root=root).ensure()
    config_dir = root / "config"
    shutil.copytree(REPO / "config" / "rl", config_dir)
    serving = yaml.safe_load((config_dir / "serving.yaml").read_text())
    serving["triton"]["model_repository"] = str(root / "triton_models")
    (config_dir / "serving.yaml").write_text(yaml.safe_dump(serving))
    ctx = PipelineContext.create(paths, load_rl_config(config_dir))
    bars = load_market("synthetic:planted-alpha", seed=SEED, n_symbols=N_SYMBOLS, n_days=N_DAYS)
    spec = fit_spec(bars, ctx.config, seed=SEED)
    candidate = train_candidate(bars, spec, ctx, training=TrainingSettings(seed=SEED, iterations=4, hidden=16))
    registered = register_candidate(candidate, ctx)
    deploy_to_triton(registered, ctx, smoke_test=False)
    routing = RoutingStore(paths.state_url)
    routing.apply(registered_routing(registered), principal="test", reason="the policy production runs")
    routing.close()
    yield World(root, config_dir, ctx)


def _replay(world: World, source: str, bars: int = REPLAY_BARS) -> dict:
    return replay(world.ctx, source=source, seed=SEED, n_symbols=N_SYMBOLS, n_days=N_DAYS, n_bars=bars)


def test_replay_cli_when_drift_shock_then_stationary_part_quiet_and_halted_within_three_bars_of_it(
        world: World) -> None:
    """The bars before the shock are a stationary replay (the market the policy was trained on, unshifted): they
    must trade with no drift halt and a drift score below the alert; the shock must halt within 3 bars."""
    out = world.root / "drift-shock.json"
    env = {**os.environ, "MARLOPS_HOME": str(world.ctx.paths.root)}
    env.pop("MARLOPS_STATE_URL", None)
    subprocess.run([sys.executable, "-m", "marlops.cli", "--config-dir", str(world.config_dir), "replay", "--source",
                    "synthetic:drift-shock", "--seed", str(SEED), "--symbols", str(N_SYMBOLS), "--days", str(N_DAYS),
                    "--bars", str(REPLAY_BARS), "--json", str(out)], cwd=world.root, env=env, check=True,
                   timeout=600, capture_output=True)
    summary = json.loads(out.read_text())
    assert SUMMARY_KEYS <= set(summary)
    shock = summary["scenario"]["shock_bar"]
    assert summary["final_trading_state"] == "HALTED"
    drift = [t for t in summary["triggers"] if t["trigger"] == "feature_drift"]
    assert len(drift) == 1 and shock <= drift[0]["bar"] <= shock + 2, (shock, summary["triggers"])
    assert "vix_level" in drift[0]["reason"]
    assert summary["data_triggers_sent"][0] == {"trigger": "FEATURE_DRIFT", "bar": drift[0]["bar"]}
    assert {"FEATURE_DRIFT", "FEATURE_DRIFT_SCORE"} <= {a["name"] for a in summary["alerts"]["raised"]}
    assert summary["drift"]["first_halt_bar"] == drift[0]["bar"]
    before = [s["score"] for s in summary["drift"]["score_by_bar"] if s["bar"] < shock]
    assert len(before) == shock and max(before) < world.ctx.config.drift.monitor.alert_score
    assert summary["trading_state_by_bar"][0] == {"bar": 0, "state": "ACTIVE"}
    assert not [a for a in summary["alerts"]["raised"] if a["bar"] < shock and a["name"].startswith("FEATURE_DRIFT")]
    assert any(b < shock for b in summary["pnl"]["bars_with_orders"])  # the stationary part traded
    # Halted: nothing is traded after the halt bar.
    assert all(b < drift[0]["bar"] for b in summary["pnl"]["bars_with_orders"])
    assert summary["drift"]["sl_parity_max_abs_diff"] < 1e-6


def test_replay_when_feed_fault_then_bad_provider_quarantined_alerted_and_trading_continues(world: World) -> None:
    summary = _replay(world, "synthetic:feed-fault", bars=18)
    feeds = summary["feeds"]
    assert [q["provider"] for q in feeds["quarantined"]] == ["iex"]
    assert feeds["quarantined"][0]["bar"] == 12 and "+6.00%" in feeds["quarantined"][0]["detail"]
    assert [s["provider"] for s in feeds["stale"]] == ["iex"]
    assert feeds["providers_final"] == {"sip": "ACTIVE", "iex": "QUARANTINED", "mirror": "ACTIVE"}
    # 2 of 3 providers still agree on every symbol: no symbol loses its bar, trading goes on.
    assert feeds["flagged_bars_by_reason"] == {}
    assert summary["final_trading_state"] == "ACTIVE" and summary["bars_decided"] == 18
    assert any(bar > 12 for bar in summary["pnl"]["bars_with_orders"])
    assert "FEED_PROVIDER_QUARANTINED:iex" in {a["name"] for a in summary["alerts"]["raised"]}


def test_trading_when_one_symbol_is_stale_then_it_gets_no_orders_while_the_others_trade(world: World) -> None:
    ctx = world.ctx
    bars = load_market("synthetic:planted-alpha", seed=SEED, n_symbols=N_SYMBOLS, n_days=N_DAYS)
    table = RoutingStore(ctx.paths.state_url)
    try:
        current = table.read()
    finally:
        table.close()
    production = current.policies["production"]
    spec = read_version_manifest(ctx.model_repository, production, ctx.keys.public_key_path).spec
    start = replay_start(bars, pd.Timestamp(sorted(bars["timestamp"].unique())[-REPLAY_BARS]))
    stuck = "SYM02"
    provider = FaultyProvider(ReplayBarSource(bars, start=start, name="feed"), name="feed",
                              faults=[Stale(0, 14, symbols=(stuck,))])
    run = replay_on_own_table(bars, ctx, change=_production_everywhere(current), principal="test", reason="stale symbol",
                              start=start, spec=spec, name="stale", run_dir=world.root / "stale",
                              end=pd.Timestamp(sorted(bars["timestamp"].unique())[-REPLAY_BARS + 19]),
                              source=validated(provider, config=ctx.config.serving.market_data.feed))
    stale_bars = [o for o in run.outcomes if o.bar_index <= 14]
    assert len(stale_bars) == 15
    assert all(o.safety is not None and o.safety.flags == {stuck: "FEED_STALE"} for o in stale_bars)
    ordered = [{str(order["symbol"]) for order in o.detail.orders} for o in stale_bars if o.detail is not None]
    assert all(stuck not in symbols for symbols in ordered)
    assert sum(len(symbols) for symbols in ordered) > 0  # the others traded meanwhile
    flagged = [d.no_new_risk for o in stale_bars if o.detail is not None for d in o.detail.decisions
               if d.symbol == stuck]
    assert flagged and set(flagged) == {"FEED_STALE"}  # decided, but told to take no new risk
    assert any(o.safety is not None and not o.safety.flags for o in run.outcomes if o.bar_index > 14)
    assert run.trading_state == "ACTIVE"


def _production_everywhere(table: RoutingTable) -> RoutingChange:
    """The project's policies, every symbol on production."""
    return RoutingChange(policies=dict(table.policies), routes={"*": ("production", None)})
