from pathlib import Path

import pandas as pd
import pytest

from market_data.errors import MarketDataError
from market_data.source import dataset_id, load_market, trading_symbols
from market_data.synthetic import SyntheticConfig, generate_synthetic_market


def test_load_market_when_synthetic_preset_then_matches_generator():
    bars = load_market("synthetic:planted-alpha", seed=3, n_symbols=4, n_days=30)
    expected = generate_synthetic_market(SyntheticConfig(seed=3, n_symbols=4, n_days=30, preset="planted-alpha")).bars
    pd.testing.assert_frame_equal(bars, expected)


def test_load_market_when_plain_synthetic_then_default_preset_and_sizes():
    bars = load_market("synthetic", n_days=25)
    assert bars["timestamp"].nunique() == 25
    assert len(trading_symbols(bars)) == 20
    assert dataset_id(bars) == dataset_id(generate_synthetic_market(SyntheticConfig(n_days=25)).bars)


def test_load_market_when_preset_unknown_then_error_lists_presets():
    with pytest.raises(MarketDataError, match=r"unknown synthetic preset 'bull'.*planted-alpha"):
        load_market("synthetic:bull")


def test_load_market_when_path_missing_then_error_names_spec():
    with pytest.raises(MarketDataError, match="'nowhere/bars.csv' is neither"):
        load_market("nowhere/bars.csv")


def test_load_market_when_file_with_limits_then_keeps_first_symbols_and_latest_days(tmp_path: Path):
    bars = generate_synthetic_market(SyntheticConfig(n_symbols=5, n_days=40, seed=1)).bars
    path = tmp_path / "bars.parquet"
    bars.to_parquet(path)
    subset = load_market(str(path), n_symbols=2, n_days=10)
    assert sorted(subset["symbol"].unique()) == ["SPY", "SYM00", "SYM01", "VIX"]
    assert subset["timestamp"].nunique() == 10
    assert subset["timestamp"].max() == bars["timestamp"].max()
    assert isinstance(subset.index, pd.RangeIndex)


def test_dataset_id_when_rows_shuffled_then_unchanged_and_when_value_changes_then_differs():
    bars = generate_synthetic_market(SyntheticConfig(n_symbols=3, n_days=20)).bars
    ident = dataset_id(bars)
    assert ident.startswith("bars-") and len(ident) == len("bars-") + 12
    assert dataset_id(bars.sample(frac=1.0, random_state=0)) == ident
    changed = bars.copy()
    changed.loc[7, "close"] += 0.0001
    assert dataset_id(changed) != ident


def test_dataset_id_when_timestamp_resolution_differs_then_unchanged():
    bars = generate_synthetic_market(SyntheticConfig(n_symbols=2, n_days=10)).bars
    coarse = bars.assign(timestamp=bars["timestamp"].dt.as_unit("s"))
    assert dataset_id(coarse) == dataset_id(bars)


def test_dataset_id_when_column_missing_then_error():
    with pytest.raises(MarketDataError, match=r"lack columns \['volume'\]"):
        dataset_id(pd.DataFrame(columns=["symbol", "timestamp", "open", "high", "low", "close"]))


def test_load_market_when_synthetic_size_invalid_then_market_data_error_names_field():
    with pytest.raises(MarketDataError, match="n_days: Input should be greater than or equal to 2"):
        load_market("synthetic", n_days=1)
