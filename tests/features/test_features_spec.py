import numpy as np
import pandas as pd
import pytest

from contracts.features import (
    MASTER_FEATURES,
    MASTER_PORTFOLIO_FEATURES,
    PORTFOLIO_FEATURES,
    REGIME_FEATURES,
    SYMBOL_FEATURES,
    FeatureSpec,
)
from features.errors import FeatureError
from features.market_features import compute_market_features
from features.spec import fit_feature_spec
from market_data.synthetic import SyntheticConfig, generate_synthetic_market


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=6, n_days=150, seed=4, preset="planted-alpha")).bars


@pytest.fixture(scope="module")
def spec(bars) -> FeatureSpec:
    return fit_feature_spec(bars)


def test_spec_when_fitted_twice_then_identical_hash(bars, spec):
    again = fit_feature_spec(bars)
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()
    assert len(spec.spec_hash()) == 64


def test_spec_when_one_constant_changes_then_hash_changes(spec):
    means = list(spec.symbol.means)
    means[0] += 1e-12
    nudged = spec.model_copy(update={"symbol": spec.symbol.model_copy(update={"means": tuple(means)})})
    assert nudged.spec_hash() != spec.spec_hash()
    assert spec.model_copy(update={"clip": 4.0}).spec_hash() != spec.spec_hash()
    coef = list(spec.sl_model.coef)
    coef[0] *= 1.5
    retuned = spec.model_copy(update={"sl_model": spec.sl_model.model_copy(update={"coef": tuple(coef)})})
    assert retuned.spec_hash() != spec.spec_hash()


def test_spec_when_training_window_differs_then_hash_differs(bars, spec):
    stamps = np.sort(bars["timestamp"].unique())
    shorter = fit_feature_spec(bars[bars["timestamp"] <= stamps[120]])
    assert shorter.spec_hash() != spec.spec_hash()


def test_spec_when_fitted_then_blocks_follow_feature_order_and_identity_features(spec, bars):
    assert spec.symbol.names == SYMBOL_FEATURES and spec.master.names == MASTER_FEATURES
    for block, identity in ((spec.symbol, REGIME_FEATURES + PORTFOLIO_FEATURES),
                            (spec.master, REGIME_FEATURES + MASTER_PORTFOLIO_FEATURES)):
        for name, mean, std in zip(block.names, block.means, block.stds, strict=True):
            if name in identity:
                assert (mean, std) == (0.0, 1.0), name
            else:
                assert std >= 1e-6, name
    market = compute_market_features(bars)
    i = SYMBOL_FEATURES.index("ret_5")
    assert spec.symbol.means[i] == pytest.approx(market["ret_5"].mean(), rel=1e-12)
    assert spec.symbol.stds[i] == pytest.approx(market["ret_5"].std(ddof=0), rel=1e-12)


def test_spec_when_fitted_then_canonical_json_round_trips(spec):
    restored = FeatureSpec.model_validate_json(spec.canonical_json())
    assert restored.spec_hash() == spec.spec_hash()


def test_spec_when_training_frame_shorter_than_warm_up_then_error(bars):
    stamps = np.sort(bars["timestamp"].unique())
    with pytest.raises(FeatureError, match="no complete feature rows"):
        fit_feature_spec(bars[bars["timestamp"] <= stamps[10]])
