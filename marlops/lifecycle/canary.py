"""Canary: the candidate trades a deterministic, sector-balanced 10% of the symbols through the routing table;
the rest (control) stay on production with the candidate as a shadow. Canary health is judged after every bar
(marlops.lifecycle.health: stated rules); a breach moves the canary symbols back to production before the next
bar, raises an alert and is audited. Replay drives the window itself; live, the canary-health sensor applies
the same judgement to the bars `marlops trade` records."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from contracts.config import RLConfig
from market_data.synthetic import synthetic_sectors
from marlops.candidates import SYMBOL_AGENT, RegisteredPolicies
from marlops.context import PipelineContext
from marlops.lifecycle.cohorts import canary_cohort
from marlops.lifecycle.context import LifecycleContext
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.gates import require_approval
from marlops.lifecycle.health import (
    AnomalyRules,
    CanaryHealth,
    CanaryHealthRules,
    canary_health,
    model_anomalies,
)
from marlops.lifecycle.market import Window
from marlops.lifecycle.paper import incumbent_of, next_window, stage_run_dir
from marlops.lifecycle.recorder import BarRecorder
from marlops.lifecycle.records import LIVE_SCOPE, BarRecord
from marlops.lifecycle.shadow import shadow_report
from marlops.routing import DEFAULT_ROUTE, PolicyRef, RoutingChange

logger = logging.getLogger(__name__)

STAGE = "canary"
ALERT_CANARY_BREACH = "CANARY_BREACH"


def canary_scope(run_id: str) -> str:
    return f"canary:{run_id}"


def health_rules(ctx: PipelineContext) -> CanaryHealthRules:
    c = ctx.config.lifecycle.canary
    return CanaryHealthRules(max_error_rate=c.max_error_rate, max_denial_rate_excess=c.max_denial_rate_excess,
                             denial_alpha=c.denial_alpha,
                             max_cost_ratio=c.max_cost_ratio, max_latency_ratio=c.max_latency_ratio,
                             min_latency_bars=c.min_latency_bars,
                             max_drawdown_excess=c.max_drawdown_excess, pnl_alpha=c.pnl_alpha,
                             min_pnl_observations=c.min_pnl_observations)


def anomaly_rules(ctx: PipelineContext) -> AnomalyRules:
    return anomaly_rules_of(ctx.config)


def anomaly_rules_of(config: RLConfig) -> AnomalyRules:
    """The model-anomaly rules of config/rl/lifecycle.yaml (the canary, the sensor, the trading service's gauge)."""
    a = config.lifecycle.anomaly
    return AnomalyRules(window_bars=a.window_bars, max_error_rate=a.max_error_rate,
                        min_action_entropy=a.min_action_entropy)


@dataclass(frozen=True)
class CanaryVerdict:
    breached: bool
    reasons: tuple[str, ...]
    health: CanaryHealth
    anomalies: tuple[Any, ...]


def judge(ctx: PipelineContext, records: list[BarRecord]) -> CanaryVerdict:
    """Canary health (canary vs control) and model anomalies of the candidate, on every bar so far."""
    health = canary_health(records, health_rules(ctx))
    anomalies = model_anomalies(records, anomaly_rules(ctx), variants=("candidate",))
    reasons = tuple(f"{f.code}: {f.detail}" for f in health.findings) + tuple(f"{a.code}: {a.detail}" for a in anomalies)
    return CanaryVerdict(breached=bool(reasons), reasons=reasons, health=health, anomalies=anomalies)


def start_canary(lc: LifecycleContext, registered: RegisteredPolicies, symbols: list[str], *, rfc_id: str,
                 principal: str) -> tuple[str, ...]:
    """Route the cohort to the candidate in one routing change; control keeps production, with the candidate
    as shadow. Before the first deployment production is the SL fallback."""
    ctx = lc.ctx
    cohort = canary_cohort(symbols, synthetic_sectors(symbols) or {}, fraction=lc.config.canary.fraction,
                           seed=registered.run_id)
    table = lc.routing.read()
    incumbent = incumbent_of(ctx, registered)
    policies: dict[str, PolicyRef | None] = {"candidate": PolicyRef(SYMBOL_AGENT, registered.symbol.triton_version)}
    for slot in ("production", "sl_fallback", "master"):
        if slot not in table.policies:
            policies[slot] = incumbent.refs[slot]
    routes: dict[str, tuple[str, str | None] | None] = {s: ("candidate", None) for s in cohort}
    routes[DEFAULT_ROUTE] = ("production", "candidate")
    lc.routing.apply(RoutingChange(policies=policies, routes=routes), principal=principal,
                     reason=f"canary of {rfc_id}: {len(cohort)} of {len(symbols)} symbols on "
                            f"{SYMBOL_AGENT} v{registered.symbol.version}")
    lc.store.record_event("canary_started", principal=principal, candidate_run_id=registered.run_id,
                          detail={"rfc_id": rfc_id, "cohort": list(cohort), "symbols": len(symbols)})
    return cohort


def end_canary(lc: LifecycleContext, cohort: tuple[str, ...], *, principal: str, reason: str) -> int:
    """The canary symbols back to production, the candidate slot and shadow cleared: one change. Returns the
    routing revision that takes effect at the next bar."""
    table = lc.routing.read()
    routes: dict[str, tuple[str, str | None] | None] = {s: None for s in cohort if s in table.routes}
    default = table.routes.get(DEFAULT_ROUTE)
    if default is not None:
        routes[DEFAULT_ROUTE] = (default.variant if default.variant != "candidate" else "production", None)
    change = RoutingChange(policies={"candidate": None} if "candidate" in table.policies else {}, routes=routes)
    return lc.routing.apply(change, principal=principal, reason=reason).revision


@dataclass(frozen=True)
class CanaryResult:
    candidate_run_id: str
    rfc_id: str
    cohort: tuple[str, ...]
    window: Window
    healthy: bool
    reasons: tuple[str, ...]
    bars: int
    breach_bar: int | None  # bar index of the breach
    bars_on_candidate_after_breach: int  # must be 0: the symbols were back on production at the next bar
    health: dict[str, Any]
    shadow: dict[str, Any] = field(default_factory=dict)
    registered: RegisteredPolicies | None = None  # the candidate that ran (the rollout promotes exactly this)

    def metadata(self) -> dict[str, Any]:
        return {"cohort": ", ".join(self.cohort), "healthy": self.healthy, "bars": self.bars,
                "window": f"{self.window.start.date()} .. {self.window.end.date()}",
                "breach_bar": -1 if self.breach_bar is None else self.breach_bar,
                "bars_on_candidate_after_breach": self.bars_on_candidate_after_breach,
                "reasons": "; ".join(self.reasons) or "none"}


def start_live_canary(lc: LifecycleContext, symbols: list[str], registered: RegisteredPolicies, *, rfc_id: str,
                      principal: str = "lifecycle:canary") -> CanaryResult:
    """Live: route the cohort and hand over to the canary-health sensor, which judges the bars `marlops trade`
    records, rolls back on a breach, and passes the stage after `canary.trading_days` healthy trading days."""
    require_approval(lc, rfc_id)
    cohort = start_canary(lc, registered, symbols, rfc_id=rfc_id, principal=principal)
    started = lc.store.clock() or pd.Timestamp.now("UTC").isoformat()
    latest = lc.store.bars(LIVE_SCOPE, last=1)
    lc.store.set_stage(registered.run_id, STAGE, "running",
                       {"rfc_id": rfc_id, "cohort": list(cohort), "started_market_time": started,
                        # the sensor judges the bars after this one: those the cohort traded on the candidate
                        "started_after_bar_index": latest[0].bar_index if latest else -1,
                        "trading_days": lc.config.canary.trading_days})
    window = Window(pd.Timestamp(started), pd.Timestamp(started), lc.config.canary.trading_days)
    return CanaryResult(candidate_run_id=registered.run_id, rfc_id=rfc_id, cohort=cohort, window=window,
                        healthy=False, reasons=("running live: the canary-health sensor decides after "
                                                f"{lc.config.canary.trading_days} trading days",),
                        bars=0, breach_bar=None, bars_on_candidate_after_breach=0, health={}, registered=registered)


def run_canary(lc: LifecycleContext, feed: pd.DataFrame, history_end: pd.Timestamp, registered: RegisteredPolicies,
               *, rfc_id: str, principal: str = "lifecycle:canary") -> CanaryResult:
    """The canary window on the project's routing table: replayed here in accelerated replay
    (`lifecycle.replay_trading_days` > 0), else started live for the canary-health sensor."""
    from marlops.pipeline import replay_window, tradable_symbols

    ctx, store = lc.ctx, lc.store
    require_approval(lc, rfc_id)
    if lc.config.replay_trading_days == 0:
        return start_live_canary(lc, list(tradable_symbols(feed, registered.spec)), registered, rfc_id=rfc_id,
                                 principal=principal)
    cfg = lc.config.canary
    paper = store.stages(registered.run_id).get("paper_trading")
    paper_end = str(paper.detail.get("window", {}).get("end", "")) if paper is not None else ""
    window = next_window(store, feed, history_end, cfg.trading_days, "the canary", not_before=paper_end or None)
    symbols = list(tradable_symbols(feed, registered.spec))
    store.set_stage(registered.run_id, STAGE, "running", {"window": window.as_dict(), "rfc_id": rfc_id})
    cohort = start_canary(lc, registered, symbols, rfc_id=rfc_id, principal=principal)
    scope = canary_scope(registered.run_id)
    state: dict[str, Any] = {"breach_bar": None, "reasons": (), "verdict": None}

    def on_record(record: BarRecord) -> None:
        store.append_bars(scope, [record])
        if state["breach_bar"] is not None:
            return
        verdict = judge(ctx, recorder.records)
        state["verdict"] = verdict
        if verdict.breached:
            state["breach_bar"], state["reasons"] = record.bar_index, verdict.reasons
            revision = end_canary(lc, cohort, principal="sensor:canary_health",
                                  reason="canary breach: " + "; ".join(verdict.reasons)[:500])
            logger.warning("ALERT %s: %s; canary symbols %s back to production from the next bar (routing "
                           "revision %d)", ALERT_CANARY_BREACH, "; ".join(verdict.reasons), list(cohort), revision)
            store.record_event("canary_rolled_back", principal="sensor:canary_health",
                               candidate_run_id=registered.run_id,
                               detail={"rfc_id": rfc_id, "bar_index": record.bar_index, "reasons": list(verdict.reasons),
                                       "routing_revision": revision, "alert": ALERT_CANARY_BREACH})

    recorder = BarRecorder(sink=on_record)
    run_dir = stage_run_dir(ctx, "canary", registered.run_id)
    replay_window(feed, ctx, start=window.start, end=window.end, routing=lc.routing, spec=registered.spec,
                  name="canary", on_step=recorder, run_dir=run_dir)
    store.advance_clock(window.end.isoformat())
    records = recorder.records
    breach = state["breach_bar"]
    after = sum(1 for r in records if breach is not None and r.bar_index > breach and r.of_variant("candidate"))
    final = judge(ctx, records if breach is None else [r for r in records if r.bar_index <= breach])
    shadow: dict[str, Any] = {}
    try:
        shadow = shadow_report(records, ctx.config.risk).as_dict()
    except LifecycleError as exc:  # no shadow decisions (e.g. a breach at the first bar): said, not fatal
        shadow = {"error": str(exc)}
    healthy = breach is None and len(records) >= 1
    result = CanaryResult(candidate_run_id=registered.run_id, rfc_id=rfc_id, cohort=cohort, window=window,
                          healthy=healthy, reasons=tuple(state["reasons"]) or (() if records else ("no bar decided",)),
                          bars=len(records), breach_bar=breach, bars_on_candidate_after_breach=after,
                          health=final.health.as_dict(), shadow=shadow, registered=registered)
    store.set_stage(registered.run_id, STAGE, "passed" if healthy else "rolled_back",
                    {"cohort": list(cohort), "window": window.as_dict(), "reason": "; ".join(result.reasons),
                     "breach_bar": breach, "bars_on_candidate_after_breach": after})
    return result


