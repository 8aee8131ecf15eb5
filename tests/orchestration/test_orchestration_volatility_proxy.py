"""The spine's bar check and feature table on a bar file without VIX: the default (auto) proxy fills it."""

from pathlib import Path

from dagster import AssetKey, instance_for_test, materialize

from market_data.source import load_market
from orchestration.assets import feature_table, market_bars, market_feed
from orchestration.checks import feature_table_is_complete, market_bars_are_valid
from orchestration.resources import MarketDataResource, MarlopsResource

REPO = Path(__file__).resolve().parents[2]


def test_materialize_when_file_has_no_vix_then_checks_pass_and_features_built(tmp_path: Path) -> None:
    bars = load_market("synthetic", seed=1, n_symbols=4, n_days=80)
    path = tmp_path / "bars.csv"
    bars[bars["symbol"] != "VIX"].to_csv(path, index=False)
    with instance_for_test() as instance:
        result = materialize(
            [market_feed, market_bars, feature_table, market_bars_are_valid, feature_table_is_complete],
            resources={"market_data": MarketDataResource(source=str(path), n_symbols=4, n_days=80),
                       "marlops": MarlopsResource(project_root=str(REPO))},
            instance=instance, raise_on_error=False,
        )
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    keys = {e.asset_key for e in result.get_asset_materialization_events()}
    assert keys == {AssetKey("market_feed"), AssetKey("market_bars"), AssetKey("feature_table")}
