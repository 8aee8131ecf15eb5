"""Blocking asset checks: a failed check stops everything downstream of its asset."""

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from contracts.config import VolatilityProxyConfig
from contracts.features import REGIME_FEATURES, SYMBOL_MARKET_FEATURES
from data_checks.bars_suite import validate_bars
from data_checks.features_suite import validate_feature_table
from data_checks.results import DataCheckResult
from marlops.pipeline import ValidationResult
from orchestration.assets import feature_table, market_bars, validation_report
from orchestration.resources import MarketDataResource, MarlopsResource


def _as_check_result(result: DataCheckResult) -> AssetCheckResult:
    return AssetCheckResult(
        passed=result.success,
        severity=AssetCheckSeverity.ERROR,
        metadata={"rows": result.n_rows, "failures": len(result.failures),
                  "acknowledged_rows": len(result.acknowledged),
                  "summary": MetadataValue.md(result.summary())},
    )


@asset_check(asset=market_bars, blocking=True, description="Great Expectations suite for OHLCV bars; reviewed rows "
             "acknowledged in the market_data resource's acknowledgement file pass.")
def market_bars_are_valid(market_bars: pd.DataFrame, market_data: MarketDataResource,
                          marlops: MarlopsResource) -> AssetCheckResult:
    # The default volatility proxy (auto) demands no VIX series: bars without one fall back to realized volatility.
    return _as_check_result(validate_bars(market_bars, volatility_proxy=VolatilityProxyConfig(),
                                          acknowledgements=market_data.reviewed_rows(marlops.project_root)))


@asset_check(asset=feature_table, blocking=True, description="Every observation feature present and finite.")
def feature_table_is_complete(feature_table: pd.DataFrame) -> AssetCheckResult:
    return _as_check_result(validate_feature_table(feature_table, SYMBOL_MARKET_FEATURES + REGIME_FEATURES))


# One blocking check per Go/No-Go rule (config/rl/evaluation.yaml `go_no_go`), so the UI shows which rule failed.
GO_NO_GO_RULES: tuple[str, ...] = (
    "min_sharpe", "max_drawdown", "min_profit_factor", "min_holdout_bars", "min_probabilistic_sharpe",
    "min_fold_sharpe", "min_sharpe_margin_vs_benchmark", "min_sharpe_margin_vs_fallback",
)


def _go_no_go_check(rule: str) -> object:
    @asset_check(asset=validation_report, name=f"go_no_go_{rule}", blocking=True,
                 description=f"Go/No-Go rule `{rule}` on held-out bars (config/rl/evaluation.yaml).")
    def _check(validation_report: ValidationResult) -> AssetCheckResult:
        checks = {c.name: c for c in validation_report.evaluation.report.verdict.checks}
        found = checks.get(rule)
        if found is None:
            return AssetCheckResult(passed=True, metadata={"detail": "disabled in config"})
        return AssetCheckResult(passed=found.passed, severity=AssetCheckSeverity.ERROR,
                                metadata={"value": float(found.value), "threshold": float(found.threshold),
                                          "detail": found.detail})

    return _check


go_no_go_checks = [_go_no_go_check(rule) for rule in GO_NO_GO_RULES]
