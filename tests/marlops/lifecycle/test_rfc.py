"""The deployment RFC: its digest, its markdown for the Dagster UI, the equity/drawdown plot."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.rfc import (
    canonical_json,
    equity_drawdown_png,
    render_markdown,
    rfc_digest,
)

from . import PRODUCTION, RUN, make_rfc

PNG_MAGIC = b"\x89PNG"


@pytest.fixture(scope="module")
def plot() -> bytes:
    return equity_drawdown_png({"candidate": [100.0, 103.0, 99.0, 107.0], "production": [100.0, 101.0, 100.5, 102.0]},
                               title="paper window")


def test_build_rfc_when_rebuilt_later_from_same_inputs_then_same_digest_and_id() -> None:
    first = make_rfc(now=datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    again = make_rfc(now=datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    assert first.created_at != again.created_at
    assert (first.digest, first.rfc_id) == (again.digest, again.rfc_id)
    assert len(first.digest) == 64 and first.digest == rfc_digest(first)
    assert first.rfc_id == f"RFC-4-{first.digest[:8]}"
    assert first.created_at == "2026-11-30T12:00:00+00:00"


def _metric(value: float) -> dict[str, Any]:
    metrics = make_rfc().metrics
    return {"metrics": {**metrics, "paper": {**metrics["paper"], "candidate": {"total_return": value, "turnover": 1.8}}}}


@pytest.mark.parametrize("change", [
    {"sharpe": 1.2500001},
    {"version": "5"},
    {"production": {**PRODUCTION, "master_agent": "2"}},
    {"production": None},
    {"run_id": "run-bbb"},
    {"plot": b"\x89PNG-other"},
    _metric(0.0311),
    {"risk": {"drift": "alert"}},
    {"rollback_plan": ["route every symbol to production"]},
    {"artifacts": {"symbol_agent": {"sha256": "f" * 64, "signature": "sig", "key_id": "key-1", "artifact": "a"}}},
], ids=["metric", "candidate", "production", "first_deployment", "run", "plot", "paper_metric", "risk", "rollback",
        "artifact"])
def test_build_rfc_when_any_input_changes_then_digest_changes(change: dict[str, Any]) -> None:
    base = make_rfc(plot=b"\x89PNG-one")
    changed = make_rfc(**{"plot": b"\x89PNG-one", **change})
    assert changed.digest != base.digest
    assert changed.rfc_id != base.rfc_id


def test_rfc_digest_when_field_edited_after_build_then_no_longer_matches() -> None:
    rfc = make_rfc()
    edited = replace(rfc, candidate={**rfc.candidate, "sl_fallback": "9"})
    assert rfc_digest(edited) != rfc.digest
    assert rfc_digest(replace(rfc, created_at="2030-01-01T00:00:00+00:00", rfc_id="RFC-x")) == rfc.digest


def test_build_rfc_when_metric_not_finite_then_null_in_canonical_json_and_digest() -> None:
    nan = make_rfc(sharpe=math.nan)
    inf = make_rfc(sharpe=math.inf)
    assert nan.metrics["held_out"]["candidate"]["sharpe"] is None
    assert nan.digest == inf.digest
    body = json.loads(canonical_json(nan.digest_body()))
    assert body["metrics"]["held_out"]["candidate"]["sharpe"] is None
    assert hashlib.sha256(canonical_json(nan.digest_body()).encode()).hexdigest() == nan.digest
    assert canonical_json({"b": 1, "a": [1.5, None]}) == '{"a":[1.5,null],"b":1}'


def test_build_rfc_when_candidate_lacks_symbol_agent_or_run_then_clear_error() -> None:
    with pytest.raises(LifecycleError, match="symbol_agent"):
        make_rfc(candidate={"master_agent": "4"})
    with pytest.raises(LifecycleError, match="run id"):
        make_rfc(run_id=" ")
    with pytest.raises(LifecycleError, match="rollback_plan"):
        make_rfc(rollback_plan="just undo it")


def test_render_markdown_when_plot_given_then_plot_inline_as_data_uri_with_every_section(plot: bytes) -> None:
    rfc = make_rfc(plot=plot)
    text = render_markdown(rfc)
    assert f"# Deployment {rfc.rfc_id}" in text
    assert f"![equity](data:image/png;base64,{base64.b64encode(plot).decode()})" in text
    assert "| symbol_agent | 4 | 3 |" in text
    assert "### held out" in text and "### paper" in text
    assert "| metric | candidate | production | buy_and_hold |" in text
    assert "| sharpe | 1.25 | 0.9 | 0.5 |" in text
    assert "| cost_ratio | 0.18 |" in text and "| drift | ok |" in text
    assert "1. route every symbol to production\n2. unload the candidate from Triton" in text
    assert f"`{'1' * 64}`" in text and "`sig-symbol_agent`" in text and "`key-1`" in text
    assert f"**RFC digest** `{rfc.digest}`" in text


def test_render_markdown_when_not_inline_or_first_deployment_then_no_base64_and_says_so(plot: bytes) -> None:
    rfc = make_rfc(plot=plot, production=None)
    text = render_markdown(rfc, inline_plot=False)
    assert "base64" not in text
    assert "Dagster UI" in text and rfc.plot_sha256 is not None and rfc.plot_sha256 in text
    assert "none (first deployment)" in text
    assert "_no plot_" in render_markdown(make_rfc())


def test_equity_drawdown_png_when_curves_given_then_small_png(plot: bytes) -> None:
    assert plot.startswith(PNG_MAGIC)
    assert 2_000 < len(plot) < 150_000
    with_gap = equity_drawdown_png({"candidate": [100.0, math.nan, 98.0], "empty": []}, title="gap")
    assert with_gap.startswith(PNG_MAGIC)


def test_equity_drawdown_png_when_no_points_then_error() -> None:
    with pytest.raises(LifecycleError, match="no equity curve"):
        equity_drawdown_png({"candidate": []}, title="nothing")


def test_make_rfc_defaults_when_built_then_run_and_production_as_given() -> None:
    rfc = make_rfc()
    assert rfc.candidate_run_id == RUN and rfc.production == PRODUCTION
    assert rfc.as_dict()["equity_plot_sha256"] is None
