"""Feature drift of a traded window against the training part: the RFC's and the review's drift status."""

from __future__ import annotations

from typing import Any

import pandas as pd

from contracts.features import FeatureSpec
from data_checks.drift import compute_drift
from marlops.context import PipelineContext


def window_drift(ctx: PipelineContext, feed: pd.DataFrame, spec: FeatureSpec, *, holdout_start: str,
                 start: pd.Timestamp, end: pd.Timestamp) -> dict[str, Any]:
    """KS, sigma and PSI per market feature of the spec (config/rl/feature_drift_thresholds.json): the window
    [start, end] against the bars before the held-out start (what training saw)."""
    from marlops.pipeline import compute_feature_table

    table = compute_feature_table(feed[feed["timestamp"] <= end])
    stamps = table.index.get_level_values("timestamp") if "timestamp" in (table.index.names or []) \
        else pd.to_datetime(table["timestamp"])
    names = [n for n in spec.symbol.names if n in table.columns and pd.api.types.is_numeric_dtype(table[n])]
    reference = table[stamps < pd.Timestamp(holdout_start)][names].dropna()
    current = table[stamps >= start][names].dropna()
    if not names or len(reference) < 10 or len(current) < 5:
        return {"status": "not computed",
                "detail": f"too few rows ({len(reference)} reference, {len(current)} in the window) or no features"}
    report = compute_drift(reference, current, ctx.config.drift, features=names)
    return {"status": "drift" if report.drifted else "ok", "summary": report.summary(),
            "drifted_features": list(report.drifted_features)}
