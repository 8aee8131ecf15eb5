import numpy as np
import pandas as pd
import pytest

from data_checks.errors import DataCheckError
from data_checks.features_suite import validate_feature_table
from features.market_features import MARKET_FEATURE_COLUMNS, compute_market_features
from market_data.synthetic import SyntheticConfig, generate_synthetic_market


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return compute_market_features(generate_synthetic_market(SyntheticConfig(n_symbols=4, n_days=50, seed=6)).bars)


def test_feature_suite_when_table_complete_then_passes(table):
    result = validate_feature_table(table, MARKET_FEATURE_COLUMNS)
    assert result.success and result.failures == () and result.n_rows == len(table)


def test_feature_suite_when_null_inf_and_missing_column_then_each_named(table):
    bad = table.copy()
    bad.iloc[3, bad.columns.get_loc("ret_20")] = np.inf
    bad.iloc[4, bad.columns.get_loc("ret_5")] = np.nan
    result = validate_feature_table(bad.drop(columns=["rsi_14"]), MARKET_FEATURE_COLUMNS)
    assert not result.success
    assert result.rows_for("finite") == {3}
    assert result.rows_for("not_null") == {4}
    assert [f.column for f in result.failures if f.check == "present"] == ["rsi_14"]
    t, symbol = bad.index[4]
    assert f"row 4: {symbol} @ {t}" in result.summary()


def test_feature_suite_when_no_columns_requested_then_error(table):
    with pytest.raises(DataCheckError, match="at least one column"):
        validate_feature_table(table, [])
