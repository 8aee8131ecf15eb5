import numpy as np
import pandas as pd
import pytest

from contracts.features import MASTER_FEATURES, MASTER_MARKET_FEATURES, PORTFOLIO_FEATURES, SYMBOL_FEATURES
from features.errors import FeatureError
from features.market_features import compute_market_features
from features.master_features import compute_master_market_features
from features.observation import ObservationBuilder, TrainingTensors, observation_checksum
from features.spec import fit_feature_spec
from market_data.synthetic import SyntheticConfig, generate_synthetic_market

DM = len(SYMBOL_FEATURES) - len(PORTFOLIO_FEATURES)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=5, n_days=110, seed=12, preset="planted-alpha")).bars


@pytest.fixture(scope="module")
def builder(bars) -> ObservationBuilder:
    return ObservationBuilder(fit_feature_spec(bars, clip=3.0))


@pytest.fixture(scope="module")
def tensors(builder, bars) -> TrainingTensors:
    return builder.training_tensors(bars)


def _rows_at(bars: pd.DataFrame, index: int) -> pd.DataFrame:
    features = compute_market_features(bars)
    t = features.index.get_level_values("timestamp").unique()[index]
    return features.xs(t, level="timestamp")


def test_symbol_market_matrix_when_built_then_float32_normalised_and_clipped(builder, bars):
    rows = _rows_at(bars, 10)
    matrix = builder.symbol_market_matrix(rows)
    assert matrix.shape == (5, DM) and matrix.dtype == np.float32
    assert np.abs(matrix).max() <= 3.0
    spec = builder.spec
    j = SYMBOL_FEATURES.index("ret_1")
    expected = np.clip((rows["ret_1"].to_numpy() - spec.symbol.means[j]) / spec.symbol.stds[j], -3, 3)
    np.testing.assert_array_equal(matrix[:, j], expected.astype(np.float32))


def test_symbol_observations_when_positions_given_then_portfolio_block_appended(builder, bars):
    rows = _rows_at(bars, 3)
    levels = np.array([0.0, 0.25, 0.5, 1.0, -0.5])
    obs = builder.symbol_observations(rows, levels, 0.7)
    assert obs.shape == (5, len(SYMBOL_FEATURES)) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[:, :DM], builder.symbol_market_matrix(rows))
    np.testing.assert_array_equal(obs[:, DM], levels.astype(np.float32))
    np.testing.assert_array_equal(obs[:, DM + 1], np.full(5, 0.7, dtype=np.float32))


def test_symbol_observations_when_position_count_wrong_then_error(builder, bars):
    with pytest.raises(FeatureError, match="got 2 position levels for 5 symbols"):
        builder.symbol_observations(_rows_at(bars, 3), np.zeros(2), 0.0)


def test_symbol_market_matrix_when_value_not_finite_then_error_names_row(builder, bars):
    rows = _rows_at(bars, 3).copy()
    rows.loc["SYM02", "vol_20"] = np.nan
    with pytest.raises(FeatureError, match="non-finite values in rows SYM02"):
        builder.symbol_market_matrix(rows)


def test_master_observation_when_built_then_market_and_portfolio_parts(builder, bars):
    master = compute_master_market_features(bars)
    obs = builder.master_observation(master.iloc[7], drawdown=0.12, gross_exposure=0.9)
    assert obs.shape == (1, len(MASTER_FEATURES)) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[0, len(MASTER_MARKET_FEATURES):], np.array([0.12, 0.9], dtype=np.float32))
    np.testing.assert_array_equal(obs[:, : len(MASTER_MARKET_FEATURES)], builder.master_market_matrix(master.iloc[[7]]))


def test_training_tensors_when_built_then_shapes_and_forward_returns(tensors, bars):
    t, n = len(tensors.timestamps), len(tensors.symbols)
    assert tensors.symbols == tuple(f"SYM{i:02d}" for i in range(5))
    assert tensors.symbol_market.shape == (t, n, DM) and tensors.symbol_market.dtype == np.float32
    assert tensors.master_market.shape == (t, len(MASTER_MARKET_FEATURES)) and tensors.master_market.dtype == np.float32
    assert tensors.forward_returns.shape == (t, n) and tensors.forward_returns.dtype == np.float64
    close = bars.pivot(index="timestamp", columns="symbol", values="close")[list(tensors.symbols)]
    close = close.loc[tensors.timestamps]
    np.testing.assert_array_equal(tensors.forward_returns[:-1], (close.shift(-1) / close - 1).to_numpy()[:-1])
    assert (tensors.forward_returns[-1] == 0).all()


def test_training_tensors_when_built_then_rows_equal_per_step_matrices(builder, tensors, bars):
    features = compute_market_features(bars)
    for k in (0, 17, len(tensors.timestamps) - 1):
        rows = features.xs(tensors.timestamps[k], level="timestamp").loc[list(tensors.symbols)]
        step = builder.symbol_market_matrix(rows)
        assert observation_checksum(step) == observation_checksum(tensors.symbol_market[k])


def test_observation_checksum_when_same_values_then_equal_and_when_shape_differs_then_not():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert observation_checksum(a) == observation_checksum(a.astype(np.float64))
    assert observation_checksum(a) == observation_checksum(np.asfortranarray(a))
    assert observation_checksum(a) != observation_checksum(a.reshape(4, 3))
    b = a.copy()
    b[1, 1] = np.nextafter(b[1, 1], np.float32(100))
    assert observation_checksum(a) != observation_checksum(b)


def test_builder_when_spec_feature_names_differ_then_error(builder):
    spec = builder.spec
    renamed = spec.symbol.model_copy(update={"names": ("other",) + spec.symbol.names[1:]})
    with pytest.raises(FeatureError, match="spec symbol features"):
        ObservationBuilder(spec.model_copy(update={"symbol": renamed}))
