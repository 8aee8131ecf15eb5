"""A/B test: two variants (A = production, B = the candidate) trade sector-balanced halves of the universe,
and the halves swap every `ab_test.rotation_days` trading days, so every symbol spends equal time on each. P&L is
attributed per variant and per symbol (marlops.lifecycle.ab), with a significance test that says when the
difference is not yet significant. Accelerated replay: its own paper account and routing table (production's
routing is untouched); live, the same rotation is a schedule of `marlops route set` changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from market_data.synthetic import synthetic_sectors
from marlops.candidates import RegisteredPolicies
from marlops.context import PipelineContext
from marlops.lifecycle.ab import ABReport, ab_report
from marlops.lifecycle.cohorts import ab_assignment
from marlops.lifecycle.market import Window, window_after
from marlops.lifecycle.paper import (
    Incumbent,
    candidate_refs,
    incumbent_of,
    stage_run_dir,
)
from marlops.lifecycle.recorder import BarRecorder
from marlops.routing import DEFAULT_ROUTE, PolicyRef, RoutingChange
from marlops.routing_store import RoutingStore
from marlops.trading import BarOutcome

VARIANT_OF = {"A": "production", "B": "candidate"}


@dataclass(frozen=True)
class ABTestResult:
    window: Window
    a: Incumbent
    b_versions: dict[str, str]
    rotations: int
    report: ABReport

    def metadata(self) -> dict[str, Any]:
        return {"window": f"{self.window.start.date()} .. {self.window.end.date()}", "A": self.a.label,
                "B": f"candidate {self.b_versions}", "rotations": self.rotations,
                "significant": self.report.significant, "p_value": self.report.p_value,
                "conclusion": self.report.conclusion}


def rotation_change(symbols: list[str], period: int, seed: str) -> RoutingChange:
    assignment = ab_assignment(symbols, synthetic_sectors(symbols), period=period, seed=seed)
    return RoutingChange(routes={s: (VARIANT_OF[v], None) for s, v in assignment.items()})


def run_ab_test(ctx: PipelineContext, feed: pd.DataFrame, history_end: pd.Timestamp,
                registered: RegisteredPolicies, *, trading_days: int) -> ABTestResult:
    from marlops.pipeline import replay_window, tradable_symbols

    cfg = ctx.config.lifecycle.ab_test
    window = window_after(feed, history_end, trading_days, what="the A/B test")
    symbols = list(tradable_symbols(feed, registered.spec))
    incumbent = incumbent_of(ctx, registered)
    run_dir = stage_run_dir(ctx, "ab", registered.run_id)
    run_dir.mkdir(parents=True)
    routing = RoutingStore(f"sqlite:///{run_dir / 'routing.db'}")
    policies: dict[str, PolicyRef | None] = {**incumbent.refs,
                                             "candidate": candidate_refs(registered)["production"]}
    first = rotation_change(symbols, 0, registered.run_id)
    routing.apply(RoutingChange(policies=policies, routes={**first.routes, DEFAULT_ROUTE: ("production", None)}),
                  principal="ab-test", reason="A/B period 0")
    days = sorted(pd.to_datetime(feed["timestamp"]).unique())
    days = [d for d in days if window.start <= d <= window.end]
    state = {"period": 0}
    recorder = BarRecorder()

    def on_step(outcome: BarOutcome) -> None:
        recorder(outcome)
        position = days.index(outcome.timestamp) + 1 if outcome.timestamp in days else 0
        period = position // cfg.rotation_days
        if period != state["period"] and position < len(days):
            state["period"] = period
            routing.apply(rotation_change(symbols, period, registered.run_id), principal="ab-test",
                          reason=f"A/B period {period}: halves swap")

    try:
        replay_window(feed, ctx, start=window.start, end=window.end, routing=routing, spec=registered.spec,
                      name="ab-test", on_step=on_step, run_dir=run_dir)
    finally:
        routing.close()
    report = ab_report(recorder.records, alpha=cfg.alpha)
    return ABTestResult(window=window, a=incumbent, b_versions=registered.versions(), rotations=state["period"] + 1,
                        report=report)
