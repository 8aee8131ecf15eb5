"""Tests of marlops.lifecycle; `make_rfc` builds a realistic deployment RFC for them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marlops.lifecycle.rfc import DeploymentRFC, build_rfc

RUN = "run-aaa"
PRODUCTION = {"symbol_agent": "3", "master_agent": "3", "sl_fallback": "3"}


def make_rfc(run_id: str = RUN, *, version: str = "4", sharpe: float = 1.25, plot: bytes | None = None,
             production: dict[str, str] | None = PRODUCTION, now: datetime | None = None,
             **overrides: Any) -> DeploymentRFC:
    """A candidate (all agents at `version`) vs production 3, with held-out and paper metrics."""
    inputs: dict[str, Any] = {
        "candidate_run_id": run_id,
        "candidate": {"symbol_agent": version, "master_agent": version, "sl_fallback": version},
        "production": production,
        "metrics": {
            "held_out": {"candidate": {"sharpe": sharpe, "max_drawdown": -0.08},
                         "production": {"sharpe": 0.9, "max_drawdown": -0.11},
                         "buy_and_hold": {"sharpe": 0.5, "max_drawdown": -0.2}},
            "paper": {"candidate": {"total_return": 0.031, "turnover": 1.8},
                      "production": {"total_return": 0.012, "turnover": 1.5}},
        },
        "risk": {"guardrail_headroom": {"max_drawdown": 0.12}, "drift": "ok", "cost_ratio": 0.18,
                 "concentration": 0.22},
        "rollback_plan": ["route every symbol to production", "unload the candidate from Triton"],
        "artifacts": {agent: {"sha256": f"{i}" * 64, "signature": f"sig-{agent}", "key_id": "key-1",
                              "artifact": f"models/rl/production/2026-11-30/{agent}.ptc"}
                      for i, agent in enumerate(("symbol_agent", "master_agent", "sl_fallback"), 1)},
        "equity_plot_png": plot,
        "now": now or datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    }
    inputs.update(overrides)
    return build_rfc(**inputs)
