"""Post-deployment review, two weeks of market time after rollout: live performance against the validation
report, feature drift, incidents, and an archive (logs, metrics snapshot, audit anchors) with digests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from marlops.lifecycle.context import LifecycleContext
from marlops.lifecycle.drift import window_drift
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.market import Window, window_after
from marlops.lifecycle.paper import candidate_refs, trade_paper_account
from marlops.lifecycle.performance import window_metrics
from marlops.lifecycle.rollout import RolloutResult
from marlops.stack import PAPER_INITIAL_CASH

STAGE = "post_deployment_review"
INCIDENT_KINDS = ("canary_rolled_back", "rollback", "model_anomaly", "approval_refused")


@dataclass(frozen=True)
class ReviewResult:
    candidate_run_id: str
    rfc_id: str
    window: Window
    live: dict[str, float]
    validation: dict[str, float]
    drift: dict[str, Any]
    incidents: list[dict[str, Any]]
    archive: str
    digests: dict[str, str]
    passed: bool
    reasons: tuple[str, ...]

    def metadata(self) -> dict[str, Any]:
        return {"window": f"{self.window.start.date()} .. {self.window.end.date()} ({self.window.trading_days} "
                          f"trading days after rollout)", "passed": self.passed,
                "live_sharpe": self.live.get("sharpe", 0.0), "validation_sharpe": self.validation.get("sharpe", 0.0),
                "live_net_return": self.live.get("net_return", 0.0), "incidents": len(self.incidents),
                "drift": str(self.drift.get("status")), "archive": self.archive,
                "archive_sha256": self.digests.get("archive", ""), "reasons": "; ".join(self.reasons) or "none"}


def run_review(lc: LifecycleContext, feed: pd.DataFrame, rollout: RolloutResult) -> ReviewResult:
    """Judge what `rollout` put in production over the trading days after it (accelerated: replayed now)."""
    ctx, store = lc.ctx, lc.store
    if rollout.registered is None:
        raise LifecycleError(f"{rollout.rfc_id}: the rollout record does not say what went to production")
    registered, rfc_id, rollout_market_time = rollout.registered, rollout.rfc_id, rollout.market_time
    cfg = lc.config.review
    window = window_after(feed, pd.Timestamp(rollout_market_time), cfg.trading_days_after_rollout,
                          what="the post-deployment review")
    # Production's two weeks, replayed on a paper account of their own (the live path; accelerated).
    recorder = trade_paper_account(ctx, feed, registered, window, candidate_refs(registered), name="review")
    live = window_metrics(recorder.records, PAPER_INITIAL_CASH, trading_days=window.trading_days,
                          periods_per_year=ctx.config.evaluation.periods_per_year)
    held = dict(rollout.held_out)
    drift = window_drift(ctx, feed, registered.spec, holdout_start=registered.holdout_start, start=window.start,
                         end=window.end)
    incidents = [{"kind": e.kind, "at": str(e.at), "principal": e.principal, "detail": e.detail}
                 for e in store.events() if e.kind in INCIDENT_KINDS]
    reasons: list[str] = []
    shortfall = held.get("sharpe", 0.0) - live["sharpe"]
    if shortfall > cfg.max_sharpe_shortfall:
        reasons.append(f"live Sharpe {live['sharpe']:.2f} trails the held-out {held.get('sharpe', 0.0):.2f} by "
                       f"{shortfall:.2f} (allowed {cfg.max_sharpe_shortfall:.2f})")
    if drift.get("status") == "drift":
        reasons.append(f"feature drift: {drift.get('summary')}")
    store.advance_clock(window.end.isoformat())
    archive, digests = _archive(lc, rfc_id, {"live": live, "validation": held, "drift": drift, "incidents": incidents,
                                             "window": window.as_dict(), "versions": registered.versions()})
    result = ReviewResult(candidate_run_id=registered.run_id, rfc_id=rfc_id, window=window, live=live,
                          validation=held, drift=drift, incidents=incidents, archive=str(archive), digests=digests,
                          passed=not reasons, reasons=tuple(reasons))
    store.set_stage(registered.run_id, STAGE, "passed" if result.passed else "blocked",
                    {"rfc_id": rfc_id, "window": window.as_dict(), "archive": str(archive),
                     "archive_sha256": digests["archive"], "reason": "; ".join(reasons)})
    store.record_event("post_deployment_review", principal="lifecycle", candidate_run_id=registered.run_id,
                       detail=result.metadata())
    return result


def _archive(lc: LifecycleContext, rfc_id: str, snapshot: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """logs/, the metrics snapshot and the audit anchors (lifecycle event chain head, routing audit head) in one
    tar.gz; the digest of every member and of the archive are returned and written beside it."""
    paths = lc.ctx.paths
    out_dir = paths.root / "reviews" / rfc_id
    out_dir.mkdir(parents=True, exist_ok=True)
    history = lc.routing.history(1)
    anchors = {"lifecycle_events_head": lc.store.chain_head(), "lifecycle_events_chain_ok": lc.store.verify_chain(),
               "routing_audit_head": str(history[0].get("hash", "")) if history else "",
               "routing_audit_ok": lc.routing.verify_audit()}
    members: dict[str, bytes] = {
        "metrics_snapshot.json": json.dumps(snapshot, indent=2, sort_keys=True, default=str).encode(),
        "audit_anchors.json": json.dumps(anchors, indent=2, sort_keys=True).encode(),
    }
    for log in sorted(paths.logs_dir.glob("*.log")):
        members[f"logs/{log.name}"] = log.read_bytes()
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    archive = out_dir / "review-archive.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digests["archive"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    (out_dir / "digests.json").write_text(json.dumps(digests, indent=2, sort_keys=True))
    return archive, digests
