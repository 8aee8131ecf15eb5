"""Assemble the deployment RFC from what the earlier stages measured: candidate vs the incumbent on held-out,
staging and paper data, a risk assessment, the rollback plan, and the signed artifacts' digests."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.evaluation import POLICY
from agents.performance import herfindahl
from contracts.features import FeatureSpec
from marlops.candidates import (
    AGENTS,
    SL_FALLBACK,
    SYMBOL_AGENT,
    RegisteredPolicies,
    ValidationResult,
    evaluate_policies,
)
from marlops.context import PipelineContext
from marlops.lifecycle.drift import window_drift
from marlops.lifecycle.paper import PaperTradingResult
from marlops.lifecycle.rfc import DeploymentRFC, build_rfc, equity_drawdown_png
from marlops.lifecycle.store import LifecycleStore
from registry.verification import manifest_path_for, sha256_file, signature_path_for

STAGE = "deployment_rfc"
HELD_OUT_KEYS = ("sharpe", "total_return", "max_drawdown", "profit_factor", "win_rate", "turnover", "cost_ratio")


def _finite(values: dict[str, float], keys: tuple[str, ...] | None = None) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if (keys is None or k in keys) and isinstance(v, (int, float))
            and math.isfinite(float(v))}


def held_out_metrics(ctx: PipelineContext, bars: pd.DataFrame, registered: RegisteredPolicies,
                     validation: ValidationResult, paper: PaperTradingResult) -> dict[str, dict[str, float]]:
    """The candidate's held-out metrics beside its baselines and, when there is one, production scored on the
    same held-out bars (downloaded and verified from the registry)."""
    report = validation.evaluation.report
    out = {("candidate" if name == POLICY else name): _finite(m, HELD_OUT_KEYS) for name, m in report.metrics.items()}
    versions = paper.incumbent_info.versions
    if versions:
        with tempfile.TemporaryDirectory(prefix="rfc-", dir=ctx.paths.root) as tmp:
            local: dict[str, Path] = {}
            spec_json: dict[str, Any] = {}
            for agent, version in versions.items():
                local[agent], manifest = ctx.registry.download_verified(agent, version, Path(tmp) / agent,
                                                                        ctx.keys.public_pem())
                spec_json = manifest["feature_spec"]
            evaluation = evaluate_policies(bars, local, FeatureSpec.model_validate(spec_json),
                                           pd.Timestamp(registered.holdout_start), ctx, Path(tmp) / "eval")
        out["production"] = _finite(evaluation.report.metrics[POLICY], HELD_OUT_KEYS)
    return out


def risk_assessment(ctx: PipelineContext, history: pd.DataFrame, feed: pd.DataFrame, registered: RegisteredPolicies,
                    paper: PaperTradingResult) -> dict[str, Any]:
    risk = ctx.config.risk
    ks = risk.kill_switch
    cand = paper.candidate
    drift = feature_drift(ctx, feed, registered, paper)
    # Concentration of the candidate's book at the end of paper trading, the same measure as the held-out report.
    weights = np.asarray([v for v in paper.final_positions.values() if v], dtype=float)
    hhi = herfindahl(weights.reshape(1, -1)) if weights.size else 0.0
    cost_ratio = cand["cost"] / cand["traded_notional"] if cand.get("traded_notional") else 0.0
    return {
        "guardrail_headroom": {
            "paper_max_drawdown": cand["max_drawdown"], "kill_switch_max_drawdown": ks.max_drawdown,
            "drawdown_headroom": ks.max_drawdown - cand["max_drawdown"],
            "paper_denial_rate": cand["denial_rate"], "paper_error_rate": cand["error_rate"],
        },
        "drift": drift,
        "cost_ratio": {"paper_cost_per_traded_notional": cost_ratio,
                       "paper_turnover_per_day": cand["turnover_per_day"]},
        "concentration": {"herfindahl_of_final_positions": hhi, "positions": int(weights.size)},
    }


def feature_drift(ctx: PipelineContext, feed: pd.DataFrame, registered: RegisteredPolicies,
                  paper: PaperTradingResult) -> dict[str, Any]:
    return window_drift(ctx, feed, registered.spec, holdout_start=registered.holdout_start, start=paper.window.start,
                        end=paper.window.end)


def rollback_plan(registered: RegisteredPolicies, paper: PaperTradingResult) -> list[str]:
    inc = paper.incumbent_info
    back = (f"the previous production {SYMBOL_AGENT} v{inc.versions[SYMBOL_AGENT]} (alias last-known-good)"
            if inc.versions else f"{SL_FALLBACK} v{registered.fallback.version} (no earlier production exists)")
    return [
        "Canary breach (automatic, canary-health sensor): the canary symbols route back to production at the next "
        "bar; the candidate slot is cleared; audited in the routing table and the lifecycle events.",
        f"After rollout: `marlops rollback --to last-known-good --reason ...` (risk_officer/admin token) or the "
        f"Dagster `rollback` job returns every symbol to {back} within one bar.",
        "Model anomaly (NaN/out-of-range outputs, collapsed action distribution, decision errors): the model-anomaly "
        "sensor runs the same rollback by itself.",
        f"Last resort: `marlops rollback --to sl_fallback` routes every symbol to the SL-threshold fallback "
        f"({SL_FALLBACK}); the gateway kill switch (`/v1/kill`) halts trading regardless of routing.",
    ]


def artifact_digests(registered: RegisteredPolicies) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for agent in AGENTS:
        art = Path(registered.agents[agent].artifact)
        manifest = json.loads(manifest_path_for(art).read_text())
        sig = signature_path_for(art)
        out[agent] = {"version": registered.agents[agent].version, "sha256": registered.agents[agent].sha256,
                      "manifest_sha256": sha256_file(manifest_path_for(art)),
                      "signature": sig.read_text().strip() if sig.is_file() else "",
                      "feature_spec_hash": str(manifest.get("feature_spec_hash", "")),
                      "artifact": str(art)}
    return out


def prepare_rfc(ctx: PipelineContext, store: LifecycleStore, *, history: pd.DataFrame, feed: pd.DataFrame,
                registered: RegisteredPolicies, validation: ValidationResult, staging: Any,
                paper: PaperTradingResult) -> DeploymentRFC:
    staging_metrics = {k: float(v) for k, v in {
        "decisions": staging.decisions, "orders_submitted": staging.orders_submitted,
        "fill_rate": staging.orders_filled / staging.orders_submitted if staging.orders_submitted else 1.0,
        "decision_latency_p50_ms": staging.decision_latency_ms.get("p50", 0.0),
        "decision_latency_p99_ms": staging.decision_latency_ms.get("p99", 0.0),
        "final_equity": staging.final_equity, "audit_chain_ok": float(bool(staging.audit_chain_ok)),
    }.items()}
    inc = paper.incumbent_info
    rfc = build_rfc(
        candidate_run_id=registered.run_id, candidate=registered.versions(),
        production=dict(inc.versions) or None,
        metrics={"held_out": held_out_metrics(ctx, history, registered, validation, paper),
                 "staging": {"candidate": staging_metrics},
                 "paper": {"candidate": _finite(paper.candidate), "production" if inc.versions else "sl_fallback":
                           _finite(paper.incumbent)}},
        risk=risk_assessment(ctx, history, feed, registered, paper),
        rollback_plan=rollback_plan(registered, paper),
        artifacts=artifact_digests(registered),
        equity_plot_png=equity_drawdown_png(paper.curves, title=f"Paper trading {paper.window.start.date()} .. "
                                                                 f"{paper.window.end.date()}: candidate vs {inc.label}"))
    saved = store.save_rfc(rfc)
    store.set_stage(registered.run_id, STAGE, "passed", {"rfc_id": saved.rfc_id, "digest": saved.digest})
    return saved


