import numpy as np
import pandas as pd
import pytest

from contracts.features import MASTER_MARKET_FEATURES
from features.market_features import WARMUP_BARS, compute_market_features
from features.master_features import compute_master_market_features
from market_data.synthetic import SyntheticConfig, generate_synthetic_market


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=7, n_days=90, seed=8)).bars


def test_master_features_when_computed_then_columns_and_warm_up_follow_contract(bars):
    master = compute_master_market_features(bars)
    assert tuple(master.columns) == MASTER_MARKET_FEATURES
    assert master.index.name == "timestamp"
    stamps = np.sort(bars["timestamp"].unique())
    assert master.index[0] == stamps[WARMUP_BARS - 1] and len(master) == len(stamps) - WARMUP_BARS + 1
    assert np.isfinite(master.to_numpy()).all()


def test_master_features_when_computed_then_cross_sections_match_symbol_features(bars):
    master = compute_master_market_features(bars)
    symbol = compute_market_features(bars)
    breadth = (symbol["ret_5"] > 0).groupby(level="timestamp").mean()
    avg_vol = symbol["vol_20"].groupby(level="timestamp").mean()
    np.testing.assert_allclose(master["breadth_5"], breadth.loc[master.index], rtol=0, atol=1e-15)
    np.testing.assert_allclose(master["avg_vol_20"], avg_vol.loc[master.index], rtol=1e-12)
    assert master["breadth_5"].between(0, 1).all()


def test_master_features_when_computed_then_vix_change_is_five_bar_log_change(bars):
    master = compute_master_market_features(bars)
    vix = bars[bars["symbol"] == "VIX"].set_index("timestamp")["close"]
    expected = np.log(vix / vix.shift(5)).loc[master.index]
    np.testing.assert_allclose(master["vix_change_5"], expected, rtol=1e-14)
    spy = bars[bars["symbol"] == "SPY"].set_index("timestamp")["close"]
    np.testing.assert_allclose(master["bench_ret_20"], np.log(spy / spy.shift(20)).loc[master.index], rtol=1e-14)


def test_master_features_when_bars_after_t_change_then_rows_up_to_t_unchanged(bars):
    stamps = np.sort(bars["timestamp"].unique())
    tampered = bars.copy()
    later = tampered["timestamp"] > stamps[50]
    tampered.loc[later, ["open", "high", "low", "close"]] *= 1.5
    before = compute_master_market_features(bars)
    after = compute_master_market_features(tampered)
    pd.testing.assert_frame_equal(after.loc[: stamps[50]], before.loc[: stamps[50]], check_exact=True)
