import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from dagster import AssetKey, instance_for_test, materialize

from market_data.source import load_market
from orchestration.assets import feature_table, market_bars, market_feed
from orchestration.checks import feature_table_is_complete, market_bars_are_valid
from orchestration.resources import MarketDataResource, MarlopsResource

REPO = Path(__file__).resolve().parents[2]


def test_validate_when_workspace_loaded_then_definitions_are_valid(tmp_path: Path) -> None:
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    result = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
                             "-w", "workspace.yaml"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def _materialize(source: str) -> object:
    with instance_for_test() as instance:
        return materialize(
            [market_feed, market_bars, feature_table, market_bars_are_valid, feature_table_is_complete],
            resources={"market_data": MarketDataResource(source=source, n_symbols=4, n_days=80),
                       "marlops": MarlopsResource(project_root=str(REPO))},
            instance=instance, raise_on_error=False,
        )


def _materialized_keys(result: object) -> set[AssetKey]:
    return {event.asset_key for event in result.get_asset_materialization_events()}  # type: ignore[attr-defined]


def test_materialize_when_bars_clean_then_checks_pass_and_features_built() -> None:
    result = _materialize("synthetic")
    assert result.success  # type: ignore[attr-defined]
    evaluations = result.get_asset_check_evaluations()  # type: ignore[attr-defined]
    assert {e.check_name for e in evaluations} == {"market_bars_are_valid", "feature_table_is_complete"}
    assert all(e.passed for e in evaluations)
    assert _materialized_keys(result) == {AssetKey("market_feed"), AssetKey("market_bars"), AssetKey("feature_table")}


def test_materialize_when_bars_have_bad_rows_then_blocking_check_stops_downstream(tmp_path: Path) -> None:
    bars = load_market("synthetic", seed=1, n_symbols=4, n_days=80)
    bad_row = bars.index[(bars["symbol"] != "SPY") & (bars["symbol"] != "VIX")][10]
    bars.loc[bad_row, "low"] = bars.loc[bad_row, "high"] * 1.5
    path = tmp_path / "bars.csv"
    bars.to_csv(path, index=False)
    result = _materialize(str(path))
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}  # type: ignore[attr-defined]
    assert evaluations["market_bars_are_valid"].passed is False
    assert _materialized_keys(result) == {AssetKey("market_feed"), AssetKey("market_bars")}
    summary = evaluations["market_bars_are_valid"].metadata["summary"].value
    assert str(pd.Timestamp(bars.loc[bad_row, "timestamp"]).date()) in summary
