"""Paper trading: the candidate trades every symbol for N trading days on its own paper account; the incumbent
(production, or the SL fallback before the first deployment) trades the same days on another. Production's
routing is not touched. Gate: net return above the configured floor and turnover within the bound."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from contracts.config import PaperTradingConfig
from marlops.candidates import (
    AGENTS,
    MASTER_AGENT,
    SL_FALLBACK,
    SYMBOL_AGENT,
    RegisteredPolicies,
)
from marlops.context import PipelineContext
from marlops.lifecycle.market import Window, window_after
from marlops.lifecycle.performance import equity_curve, window_metrics
from marlops.lifecycle.promotion import production_versions
from marlops.lifecycle.recorder import BarRecorder
from marlops.lifecycle.store import LifecycleStore
from marlops.routing import PolicyRef, RoutingChange
from marlops.stack import PAPER_INITIAL_CASH

STAGE = "paper_trading"


@dataclass(frozen=True)
class Incumbent:
    """What the candidate is compared with and would replace."""

    label: str
    versions: dict[str, str]  # agent -> version (empty before the first deployment)
    refs: dict[str, PolicyRef]  # routing slot -> ref: production, sl_fallback, master

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "versions": self.versions, "refs": {k: str(v) for k, v in self.refs.items()}}


def incumbent_of(ctx: PipelineContext, registered: RegisteredPolicies) -> Incumbent:
    """Production (MLflow alias `production` of every agent), or, before the first deployment, the candidate
    run's SL-threshold fallback: the policy every symbol would trade without an RL policy."""
    versions = production_versions(ctx, AGENTS)
    if versions is not None:
        return Incumbent(label=f"production ({SYMBOL_AGENT} v{versions[SYMBOL_AGENT]})", versions=dict(versions),
                         refs={"production": PolicyRef(SYMBOL_AGENT, int(versions[SYMBOL_AGENT])),
                               "sl_fallback": PolicyRef(SL_FALLBACK, int(versions[SL_FALLBACK])),
                               "master": PolicyRef(MASTER_AGENT, int(versions[MASTER_AGENT]))})
    fallback = PolicyRef(SL_FALLBACK, registered.fallback.triton_version)
    return Incumbent(label="sl_fallback (no production version yet)", versions={},
                     refs={"production": fallback, "sl_fallback": fallback,
                           "master": PolicyRef(MASTER_AGENT, registered.master.triton_version)})


def candidate_refs(registered: RegisteredPolicies) -> dict[str, PolicyRef]:
    return {"production": PolicyRef(SYMBOL_AGENT, registered.symbol.triton_version),
            "sl_fallback": PolicyRef(SL_FALLBACK, registered.fallback.triton_version),
            "master": PolicyRef(MASTER_AGENT, registered.master.triton_version)}


@dataclass(frozen=True)
class PaperTradingResult:
    candidate_run_id: str
    candidate_versions: dict[str, str]
    window: Window
    candidate: dict[str, float]
    incumbent: dict[str, float]
    incumbent_info: Incumbent
    curves: dict[str, list[float]]
    checks: dict[str, dict[str, Any]]  # gate -> passed, value, threshold, detail
    timestamps: list[str] = field(default_factory=list)
    final_positions: dict[str, float] = field(default_factory=dict)  # symbol -> candidate's position value at the end

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks.values())

    def metadata(self) -> dict[str, Any]:
        return {"window": f"{self.window.start.date()} .. {self.window.end.date()} ({self.window.trading_days} trading days)",
                "passed": self.passed, "incumbent": self.incumbent_info.label,
                **{f"candidate_{k}": v for k, v in self.candidate.items()},
                **{f"incumbent_{k}": v for k, v in self.incumbent.items()}}


def paper_gates(metrics: dict[str, float], *, decided_bars: int, window: Window,
                cfg: PaperTradingConfig) -> dict[str, dict[str, Any]]:
    """The paper-trading gates on the candidate's window metrics: gate -> passed, value, threshold, detail."""
    net, turnover = metrics["net_return"], metrics["turnover_per_day"]
    return {
        "net_return": {"passed": net > cfg.min_net_return, "value": net, "threshold": cfg.min_net_return,
                       "detail": f"net return {net:+.4%} after costs must be above {cfg.min_net_return:+.4%}"},
        "turnover": {"passed": turnover <= cfg.max_turnover_per_day, "value": turnover,
                     "threshold": cfg.max_turnover_per_day,
                     "detail": f"turnover {turnover:.3f}/day must be at most {cfg.max_turnover_per_day:.3f}/day"},
        "traded_every_day": {"passed": decided_bars >= window.trading_days, "value": float(decided_bars),
                             "threshold": float(window.trading_days),
                             "detail": f"{decided_bars} bars decided of the window's {window.trading_days}"},
    }


def next_window(store: LifecycleStore, feed: pd.DataFrame, history_end: pd.Timestamp, days: int, what: str, *,
                not_before: str | None = None) -> Window:
    """The next `days` trading days after the market clock (the last day that production-affecting stages have
    traded), the end of history, and `not_before` (e.g. the end of this candidate's own paper trading)."""
    after = history_end
    for mark in (store.clock(), not_before):
        if mark:
            after = max(after, pd.Timestamp(mark))
    return window_after(feed, after, days, what=what)


def stage_run_dir(ctx: PipelineContext, name: str, run_id: str) -> Path:
    """Where one replayed stage keeps its audit, cursor and routing databases."""
    return ctx.paths.root / "lifecycle" / f"{name}-{run_id[:8]}-{pd.Timestamp.now('UTC'):%Y%m%dT%H%M%S%f}"


def trade_paper_account(ctx: PipelineContext, feed: pd.DataFrame, registered: RegisteredPolicies, window: Window,
                        refs: dict[str, PolicyRef], *, name: str) -> BarRecorder:
    """One paper account, every symbol on `refs["production"]`, over `window`; returns its bar records."""
    from marlops.pipeline import (
        replay_on_own_table,  # pipeline imports the lifecycle's callers; keep the edge one way
    )

    recorder = BarRecorder()
    replay_on_own_table(feed, ctx, change=RoutingChange(policies=dict(refs), routes={"*": ("production", None)}),
                        principal="paper-trading", reason=f"{name}: separate paper account", start=window.start,
                        end=window.end, spec=registered.spec, name=name,
                        run_dir=stage_run_dir(ctx, name, registered.run_id), on_step=recorder)
    return recorder


def run_paper_trading(ctx: PipelineContext, store: LifecycleStore, feed: pd.DataFrame, history_end: pd.Timestamp,
                      registered: RegisteredPolicies) -> PaperTradingResult:
    cfg = ctx.config.lifecycle.paper_trading
    # Paper trading runs on its own account beside production: candidates ready at the same time paper-trade the
    # same days, so it does not move the market clock (the canary, which touches production, does).
    window = next_window(store, feed, history_end, cfg.trading_days, "paper trading")
    store.set_stage(registered.run_id, STAGE, "running", {"window": window.as_dict()})
    incumbent = incumbent_of(ctx, registered)
    cand = trade_paper_account(ctx, feed, registered, window, candidate_refs(registered), name="paper-candidate")
    inc = trade_paper_account(ctx, feed, registered, window, incumbent.refs, name="paper-incumbent")
    periods = ctx.config.evaluation.periods_per_year
    cand_m = window_metrics(cand.records, PAPER_INITIAL_CASH, trading_days=window.trading_days, periods_per_year=periods)
    inc_m = window_metrics(inc.records, PAPER_INITIAL_CASH, trading_days=window.trading_days, periods_per_year=periods)
    checks = paper_gates(cand_m, decided_bars=len(cand.records), window=window, cfg=cfg)
    result = PaperTradingResult(
        candidate_run_id=registered.run_id, candidate_versions=registered.versions(), window=window, candidate=cand_m,
        incumbent=inc_m, incumbent_info=incumbent,
        curves={"candidate": equity_curve(cand.records, PAPER_INITIAL_CASH),
                incumbent.label: equity_curve(inc.records, PAPER_INITIAL_CASH)},
        checks=checks, timestamps=[r.timestamp for r in cand.records],
        final_positions={s.symbol: s.position_value for s in cand.records[-1].symbols} if cand.records else {})
    store.set_stage(registered.run_id, STAGE, "passed" if result.passed else "blocked",
                    {"window": window.as_dict(), "candidate": cand_m, "incumbent": inc_m,
                     "failed": [k for k, c in checks.items() if not c["passed"]],
                     "reason": "; ".join(c["detail"] for c in checks.values() if not c["passed"])})
    return result
