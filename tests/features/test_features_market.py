import numpy as np
import pandas as pd
import pytest

from contracts.features import REGIME_FEATURES, SYMBOL_MARKET_FEATURES
from features.errors import FeatureError
from features.market_features import (
    BEAR_RETURN_THRESHOLD,
    HIGH_VOL_VIX_THRESHOLD,
    WARMUP_BARS,
    compute_market_features,
)
from market_data.synthetic import SyntheticConfig, generate_synthetic_market


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=6, n_days=120, seed=21)).bars


@pytest.fixture(scope="module")
def features(bars) -> pd.DataFrame:
    return compute_market_features(bars)


def _wide(bars: pd.DataFrame, column: str) -> pd.DataFrame:
    return bars.pivot(index="timestamp", columns="symbol", values=column)


def test_features_when_computed_then_columns_index_and_symbols_follow_contract(features, bars):
    assert tuple(features.columns) == SYMBOL_MARKET_FEATURES + REGIME_FEATURES
    assert features.index.names == ["timestamp", "symbol"]
    assert set(features.index.get_level_values("symbol")) == {f"SYM{i:02d}" for i in range(6)}
    assert np.isfinite(features.to_numpy()).all()
    assert features.index.is_monotonic_increasing


def test_features_when_computed_then_warm_up_rows_dropped(features, bars):
    stamps = np.sort(bars["timestamp"].unique())
    first = features.index.get_level_values("timestamp").min()
    assert first == stamps[WARMUP_BARS - 1]
    assert features.index.get_level_values("timestamp").nunique() == len(stamps) - WARMUP_BARS + 1


def test_features_when_computed_then_match_their_definitions(features, bars):
    close = _wide(bars, "close")
    volume = _wide(bars, "volume")
    t, sym = features.index[40]
    row = features.loc[(t, sym)]
    i = close.index.get_loc(t)
    c = close[sym]
    assert row["ret_1"] == pytest.approx(np.log(c.iloc[i] / c.iloc[i - 1]), abs=1e-15)
    assert row["ret_20"] == pytest.approx(np.log(c.iloc[i] / c.iloc[i - 20]), abs=1e-15)
    one_bar = np.log(c / c.shift(1))
    assert row["vol_20"] == pytest.approx(one_bar.iloc[i - 19 : i + 1].std(ddof=1), rel=1e-12)
    v = volume[sym].iloc[i - 19 : i + 1]
    assert row["volume_z_20"] == pytest.approx((v.iloc[-1] - v.mean()) / v.std(ddof=1), rel=1e-10)
    assert row["sma_gap_20"] == pytest.approx(c.iloc[i] / c.iloc[i - 19 : i + 1].mean() - 1, rel=1e-10)
    changes = c.diff().iloc[i - 13 : i + 1]
    gains, losses = changes.clip(lower=0).sum(), (-changes).clip(lower=0).sum()
    assert row["rsi_14"] == pytest.approx((gains - losses) / (gains + losses), rel=1e-10)
    spy = close["SPY"]
    assert row["bench_ret_5"] == pytest.approx(np.log(spy.iloc[i] / spy.iloc[i - 5]), abs=1e-15)
    assert row["vix_level"] == close["VIX"].iloc[i] / 100
    assert row["regime_high_vol"] == float(close["VIX"].iloc[i] > HIGH_VOL_VIX_THRESHOLD)
    assert row["regime_bear"] == float(np.log(spy.iloc[i] / spy.iloc[i - 20]) < BEAR_RETURN_THRESHOLD)


def test_features_when_computed_then_rsi_bounded_and_regimes_binary(features):
    assert features["rsi_14"].between(-1, 1).all()
    for name in REGIME_FEATURES:
        assert set(features[name].unique()) <= {0.0, 1.0}


def test_features_when_bars_after_t_change_then_features_up_to_t_unchanged(bars, features):
    stamps = np.sort(bars["timestamp"].unique())
    cut = stamps[70]
    later = bars["timestamp"] > cut
    rng = np.random.default_rng(0)
    tampered = bars.copy()
    scale = np.exp(rng.normal(0, 0.3, later.sum()))
    for column in ("open", "high", "low", "close"):
        tampered.loc[later, column] = tampered.loc[later, column] * scale
    tampered.loc[later, "volume"] = tampered.loc[later, "volume"] * 7
    changed = compute_market_features(tampered)
    upto = features.index.get_level_values("timestamp") <= cut
    pd.testing.assert_frame_equal(changed.loc[upto], features.loc[upto], check_exact=True)
    after = features.index.get_level_values("timestamp") > cut
    assert not np.allclose(changed.loc[after, "ret_1"], features.loc[after, "ret_1"])


def test_features_when_symbol_listed_later_then_rows_start_after_its_own_warm_up(bars):
    stamps = np.sort(bars["timestamp"].unique())
    ragged = bars[~((bars["symbol"] == "SYM03") & (bars["timestamp"] < stamps[50]))]
    features = compute_market_features(ragged)
    first = features.xs("SYM03", level="symbol").index.min()
    assert first == stamps[50 + WARMUP_BARS - 1]
    others = features.xs("SYM00", level="symbol").index.min()
    assert others == stamps[WARMUP_BARS - 1]


def test_features_when_a_bar_is_missing_then_windows_touching_it_are_dropped(bars):
    stamps = np.sort(bars["timestamp"].unique())
    holed = bars[~((bars["symbol"] == "SYM01") & (bars["timestamp"] == stamps[60]))]
    sym = compute_market_features(holed).xs("SYM01", level="symbol").index
    assert stamps[59] in sym and stamps[60] not in sym
    assert stamps[60 + WARMUP_BARS - 1] not in sym and stamps[60 + WARMUP_BARS] in sym


def test_features_when_benchmark_missing_then_error_names_it(bars):
    with pytest.raises(FeatureError, match=r"lack \['SPY'\]"):
        compute_market_features(bars[bars["symbol"] != "SPY"])


def test_features_when_duplicate_bar_then_error_names_symbol(bars):
    doubled = pd.concat([bars, bars.iloc[[3]]], ignore_index=True)
    with pytest.raises(FeatureError, match=f"repeated \\(timestamp, symbol\\), e.g. {bars.iloc[3]['symbol']}"):
        compute_market_features(doubled)
