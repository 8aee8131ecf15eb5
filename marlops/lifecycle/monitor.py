"""What the lifecycle sensors do, as plain functions: read the bars `marlops trade` records (scope "live") and
the stage records, and act. Automatic actions only reduce risk: a canary goes back to production, production
goes back to last-known-good (or the SL fallback); nothing is ever promoted or approved here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from marlops.lifecycle.canary import (
    ALERT_CANARY_BREACH,
    anomaly_rules,
    end_canary,
    judge,
)
from marlops.lifecycle.context import LifecycleContext
from marlops.lifecycle.health import model_anomalies
from marlops.lifecycle.market import MARKET_TZ
from marlops.lifecycle.records import LIVE_SCOPE
from marlops.lifecycle.rollback import rollback
from registry.errors import PolicyNotFoundError

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class MonitorAction:
    kind: str  # canary_rolled_back | model_anomaly_rollback | none
    candidate_run_id: str = ""
    reasons: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)


def check_canaries(lc: LifecycleContext) -> list[MonitorAction]:
    """Live canaries, judged on the bars `marlops trade` recorded since each started: a breach routes the canary
    symbols back to production (in force at the next bar), alerts and audits; a canary healthy for its trading
    days passes its stage (the rollout may follow)."""
    actions: list[MonitorAction] = []
    for stage in lc.store.stage_runs("canary", "running"):
        if "started_after_bar_index" not in stage.detail:
            continue  # a replayed canary: its asset judges it bar by bar
        cohort = tuple(stage.detail.get("cohort") or ())
        since = int(stage.detail["started_after_bar_index"]) + 1
        bars = [b for b in lc.store.bars(LIVE_SCOPE, since_bar_index=since) if b.of_variant("candidate")]
        if not bars:
            continue
        verdict = judge(lc.ctx, bars)
        if verdict.breached:
            revision = end_canary(lc, cohort, principal="sensor:canary_health",
                                  reason="canary breach: " + "; ".join(verdict.reasons)[:500])
            lc.store.set_stage(stage.candidate_run_id, "canary", "rolled_back",
                               {**stage.detail, "reason": "; ".join(verdict.reasons), "routing_revision": revision})
            lc.store.record_event("canary_rolled_back", principal="sensor:canary_health",
                                  candidate_run_id=stage.candidate_run_id,
                                  detail={"reasons": list(verdict.reasons), "routing_revision": revision,
                                          "alert": ALERT_CANARY_BREACH})
            logger.warning("ALERT %s: %s", ALERT_CANARY_BREACH, "; ".join(verdict.reasons))
            actions.append(MonitorAction("canary_rolled_back", stage.candidate_run_id, verdict.reasons,
                                         {"routing_revision": revision}))
            continue
        days = len({pd.Timestamp(b.timestamp).tz_convert(MARKET_TZ).date() for b in bars})
        if days >= int(stage.detail.get("trading_days", lc.config.canary.trading_days)):
            lc.store.set_stage(stage.candidate_run_id, "canary", "passed",
                               {**stage.detail, "bars": len(bars), "trading_days_observed": days, "reason": ""})
            lc.store.record_event("canary_passed", principal="sensor:canary_health",
                                  candidate_run_id=stage.candidate_run_id, detail={"bars": len(bars), "days": days})
            actions.append(MonitorAction("canary_passed", stage.candidate_run_id, (), {"bars": len(bars)}))
    return actions


def check_model_anomaly(lc: LifecycleContext, *, principal: str = "sensor:model_anomaly",
                        reason: str = "") -> MonitorAction:
    """Production's outputs on the latest live bars: NaN or out-of-range probabilities, a collapsed action
    distribution, a decision error rate. Any anomaly rolls production back to last-known-good (the SL fallback
    when there is none) by itself. `principal`/`reason`: who acts (the Dagster sensor, or the model_anomaly
    playbook with the alert that started it), audited with the anomalies."""
    rules = anomaly_rules(lc.ctx)
    bars = lc.store.bars(LIVE_SCOPE, last=rules.window_bars)
    anomalies = model_anomalies(bars, rules, variants=("production",))
    if not anomalies:
        return MonitorAction("none")
    reasons = tuple(f"{a.code}: {a.detail}" for a in anomalies)
    lc.store.record_event("model_anomaly", principal=principal,
                          detail={"anomalies": [a.as_dict() for a in anomalies], **({"reason": reason} if reason else {})})
    why = (f"{reason}; " if reason else "") + "; ".join(reasons)
    try:
        result = rollback(lc, to="last-known-good", principal=principal, reason=why[:500])
    except PolicyNotFoundError:
        result = rollback(lc, to="sl_fallback", principal=principal, reason=("no last-known-good; " + why)[:500])
    return MonitorAction("model_anomaly_rollback", reasons=reasons, detail=result.as_dict())


def reviews_due(lc: LifecycleContext, trading_days: int) -> list[str]:
    """Candidate runs whose rollout is `trading_days` business days behind the market clock and not reviewed."""
    clock = lc.store.clock()
    if not clock:
        return []
    due: list[str] = []
    for stage in lc.store.stage_runs("production_rollout", "passed"):
        if "post_deployment_review" in lc.store.stages(stage.candidate_run_id):
            continue
        start = stage.detail.get("market_time")
        if start and len(pd.bdate_range(pd.Timestamp(start).normalize(), pd.Timestamp(clock).normalize())) - 1 \
                >= trading_days:
            due.append(stage.candidate_run_id)
    return due
