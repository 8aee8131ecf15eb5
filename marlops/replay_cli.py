"""`marlops replay`: replay bars through the real services and say what the data and model checks did.

    marlops replay --source synthetic:drift-shock --json replay.json
    marlops replay --source synthetic:feed-fault --bars 40 --json replay.json
    marlops replay --source bars.parquet --json replay.json

The policy is the one production runs: the versions the project's routing table names (production, sl_fallback,
master), on a routing table of the replay's own (production is never touched), with its own Triton, gateway
(fresh audit trail) and paper exchange. Replays start at the production policy's held-out start unless --start
says otherwise. The JSON summary (also printed) holds at least: final_trading_state, triggers [{trigger, bar}],
alerts, drift, feeds, pnl; see docs/data_safety.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from contracts.config import load_rl_config
from marlops.errors import MarlopsError
from marlops.paths import StatePaths
from marlops.trading import BarOutcome

logger = logging.getLogger(__name__)


def add_replay_parser(subparsers: Any) -> None:
    replay = subparsers.add_parser("replay", help="replay bars through the real services (production's policy) and "
                                   "write a data-safety summary: trading state, triggers, alerts, drift, feeds, P&L")
    replay.add_argument("--source", default="synthetic:planted-alpha",
                        help="PATH (CSV/Parquet bars) | synthetic:<market preset> | synthetic:drift-shock | "
                             "synthetic:feed-fault")
    replay.add_argument("--json", type=Path, required=True, help="write the summary here")
    replay.add_argument("--seed", type=int, default=3, help="synthetic market seed (3: the demo policy's market)")
    replay.add_argument("--symbols", type=int, default=None, help="synthetic: universe size (default 20); "
                        "files: keep the first N symbols")
    replay.add_argument("--days", type=int, default=None, help="synthetic: bars per symbol (default 504); files: "
                        "keep the latest N bars")
    replay.add_argument("--start", default=None, help="first bar replayed (default: the production policy's "
                        "held-out start)")
    replay.add_argument("--bars", type=int, default=None, help="replay at most N bars from the start")
    replay.add_argument("--shock-bar", type=int, default=None,
                        help="drift-shock: the replayed bar (0-based) the shock starts at (default: the middle)")
    replay.add_argument("--state-url", default=None, help="the project's state store (routing table), default "
                        "MARLOPS_STATE_URL or SQLite under MARLOPS_HOME")
    replay.set_defaults(func=run_replay_command)


def run_replay_command(args: argparse.Namespace) -> int:
    from marlops.pipeline import PipelineContext

    paths = StatePaths.from_env().ensure()
    ctx = PipelineContext.create(paths, load_rl_config(Path(args.config_dir)))
    summary = replay(ctx, source=args.source, seed=args.seed, n_symbols=args.symbols, n_days=args.days,
                     start=pd.Timestamp(args.start) if args.start else None, n_bars=args.bars,
                     shock_bar=args.shock_bar, state_url=args.state_url)
    text = json.dumps(summary, indent=2, default=str)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text + "\n")
    print(text)
    print(f"replay summary written to {args.json}")
    return 0


def replay(ctx: Any, *, source: str, seed: int = 3, n_symbols: int | None = None, n_days: int | None = None,
           start: pd.Timestamp | None = None, n_bars: int | None = None, shock_bar: int | None = None,
           state_url: str | None = None, run_dir: Path | None = None) -> dict[str, Any]:
    from marlops.pipeline import replay_on_own_table
    from marlops.policy_router import read_version_manifest, version_holdout_start
    from marlops.replay_scenarios import build_scenario
    from marlops.routing import RoutingChange
    from marlops.routing_store import RoutingStore
    from serving.errors import ServingError

    routing = RoutingStore(state_url or ctx.paths.state_url)
    try:
        table = routing.read()
    finally:
        routing.close()
    production = table.policies.get("production")
    if production is None:
        raise MarlopsError("the routing table names no production policy to replay: run `make demo` (or "
                           "`marlops train` and `marlops route set ...`) first")
    key = ctx.keys.public_key_path
    try:
        spec = read_version_manifest(ctx.model_repository, production, key).spec
    except ServingError as exc:
        raise MarlopsError(f"cannot replay production {production}: {exc}") from exc
    if start is not None and start.tzinfo is None:
        start = start.tz_localize("UTC")
    scenario = build_scenario(source, ctx.config, seed=seed, n_symbols=n_symbols, n_days=n_days,
                              start=start or version_holdout_start(ctx.model_repository, production, key),
                              n_bars=n_bars, shock_bar=shock_bar)
    change = RoutingChange(policies=dict(table.policies), routes={"*": ("production", None)})
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    run_dir = run_dir or ctx.paths.staging_dir / f"replay-{stamp}"
    logger.info("replay %s: %d bars from %s on production %s (%s)", source, scenario.notes["bars"],
                scenario.start, production, run_dir)

    def progress(step: BarOutcome) -> None:
        safety = step.safety
        logger.info("replay bar %d %s: %s, %d orders, state %s, drift %.2f%s", step.bar_index,
                    step.timestamp.isoformat()[:19], step.status, step.n_orders, step.trading_state or "-",
                    safety.drift_score if safety else 0.0,
                    f", flags {dict(list(safety.flags.items())[:3])}" if safety and safety.flags else "")

    run = replay_on_own_table(scenario.bars, ctx, change=change, principal="marlops-replay",
                              reason=f"replay of {source}", start=scenario.start, spec=spec, name="replay",
                              run_dir=run_dir, on_step=progress, source=scenario.source())
    return summarize_replay(run, source=source, scenario=scenario.notes, production=str(production),
                            alerts_raised=run.alerts_raised)


def _bar_of(change: dict[str, Any], outcomes: list[BarOutcome]) -> int | None:
    """The bar a gateway state change belongs to: named in its reason (in-band triggers), else the first bar
    whose answer showed the new state."""
    reason = str(change.get("reason", ""))
    if reason.startswith("bar "):
        head = reason[4:].split(" ", 1)[0]
        if head.isdigit():
            return int(head)
    for o in outcomes:
        if o.trading_state == change.get("current"):
            return o.bar_index
    return None


def _state_changes_by_bar(outcomes: list[BarOutcome]) -> list[dict[str, Any]]:
    """The trading state over time, as the gateway answered each bar: one entry per change."""
    changes, last = [], None
    for o in outcomes:
        if o.trading_state and o.trading_state != last:
            changes.append({"bar": o.bar_index, "state": o.trading_state})
            last = o.trading_state
    return changes


def summarize_replay(run: Any, *, source: str, scenario: dict[str, Any], production: str,
                     alerts_raised: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes: list[BarOutcome] = run.outcomes
    decided = [o for o in outcomes if o.status in ("decided", "already_decided")]
    triggers = [{"trigger": c.get("trigger"), "bar": _bar_of(c, outcomes), "state": c.get("current"),
                 "reason": c.get("reason")} for c in run.state_changes if c.get("trigger") != "manual"]
    safety = [(o.bar_index, o.safety) for o in outcomes if o.safety is not None]
    scores = [(bar, s.drift_score) for bar, s in safety]
    per_feature: dict[str, float] = {}
    for _, s in safety:
        for name, value in s.drift_features.items():
            per_feature[name] = max(per_feature.get(name, 0.0), value)
    sent = [{"trigger": t, "bar": bar} for bar, s in safety for t in s.triggers]
    flags = Counter(code for _, s in safety for code in s.flags.values())
    flagged_symbols = Counter(sym for _, s in safety for sym in s.flags)
    quarantined = [a for a in alerts_raised if str(a["name"]).startswith("FEED_PROVIDER_QUARANTINED")]
    stale = [a for a in alerts_raised if str(a["name"]).startswith("FEED_PROVIDER_STALE")]
    equities = [o.equity for o in decided if o.equity]
    first_equity = equities[0] if equities else 0.0
    final_equity = equities[-1] if equities else 0.0
    return {
        "source": source,
        "scenario": scenario,
        "production": production,
        "bars": len(outcomes),
        "bars_decided": len(decided),
        "bars_skipped": sum(1 for o in outcomes if o.status == "skipped"),
        "final_trading_state": run.trading_state,
        "trading_state_by_bar": _state_changes_by_bar(outcomes),
        "triggers": triggers,
        "data_triggers_sent": sent,
        "alerts": {"raised": alerts_raised, "gateway": run.gateway_alerts},
        "drift": {
            "max_score": max((v for _, v in scores), default=0.0),
            "first_alert_bar": next((b for b, a in ((a["bar"], a) for a in alerts_raised)
                                     if a["name"] == "FEATURE_DRIFT_SCORE"), None),
            "first_halt_bar": next((t["bar"] for t in sent), None),
            "max_score_by_feature": dict(sorted(per_feature.items(), key=lambda kv: -kv[1])),
            "score_by_bar": [{"bar": b, "score": v} for b, v in scores],
            "sl_parity_max_abs_diff": max((s.sl_parity for _, s in safety if s.sl_parity is not None), default=None),
        },
        "feeds": {
            "flagged_bars_by_reason": dict(flags),
            "flagged_bars_by_symbol": dict(flagged_symbols.most_common(20)),
            "quarantined": [{"provider": str(a["name"]).split(":", 1)[-1], "bar": a["bar"], "detail": a["detail"]}
                            for a in quarantined],
            "stale": [{"provider": str(a["name"]).split(":", 1)[-1], "bar": a["bar"]} for a in stale],
            "providers_final": outcomes[-1].safety.providers if outcomes and outcomes[-1].safety else {},
            "symbols_unavailable_bars": sum(len(s.unavailable) for _, s in safety),
        },
        "pnl": {
            "start_equity": first_equity, "final_equity": final_equity,
            "return": (final_equity / first_equity - 1.0) if first_equity else 0.0,
            "orders": sum(o.n_orders for o in decided), "filled": sum(o.n_filled for o in decided),
            "denied": sum(o.n_denied for o in decided),
            "bars_with_orders": [o.bar_index for o in decided if o.n_orders],
        },
        "audit": {"rows": run.audit_summary.get("total"), "chain_ok": run.audit_summary.get("chain_ok")},
        "run_dir": str(run.run_dir),
    }
