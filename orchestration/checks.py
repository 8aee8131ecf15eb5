"""Blocking asset checks: a failed check stops everything downstream of its asset."""

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from contracts.features import REGIME_FEATURES, SYMBOL_MARKET_FEATURES
from data_checks.bars_suite import validate_bars
from data_checks.features_suite import validate_feature_table
from data_checks.results import DataCheckResult
from orchestration.assets import feature_table, market_bars


def _as_check_result(result: DataCheckResult) -> AssetCheckResult:
    return AssetCheckResult(
        passed=result.success,
        severity=AssetCheckSeverity.ERROR,
        metadata={"rows": result.n_rows, "failures": len(result.failures),
                  "summary": MetadataValue.md(result.summary())},
    )


@asset_check(asset=market_bars, blocking=True, description="Great Expectations suite for OHLCV bars.")
def market_bars_are_valid(market_bars: pd.DataFrame) -> AssetCheckResult:
    return _as_check_result(validate_bars(market_bars))


@asset_check(asset=feature_table, blocking=True, description="Every observation feature present and finite.")
def feature_table_is_complete(feature_table: pd.DataFrame) -> AssetCheckResult:
    return _as_check_result(validate_feature_table(feature_table, SYMBOL_MARKET_FEATURES + REGIME_FEATURES))
