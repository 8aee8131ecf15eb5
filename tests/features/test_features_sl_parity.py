import numpy as np
import pytest

from features.service import FeatureService
from features.sl_parity import sl_parity
from features.spec import fit_feature_spec
from market_data.source import load_market, trading_symbols


@pytest.fixture(scope="module")
def served():
    bars = load_market("synthetic:planted-alpha", seed=2, n_symbols=6, n_days=200)
    stamps = np.sort(bars["timestamp"].unique())
    history = bars[bars["timestamp"] < stamps[150]]
    service = FeatureService(fit_feature_spec(history), trading_symbols(bars), history=history)
    return service, [service.on_bars(bars[bars["timestamp"] == ts]) for ts in stamps[150:153]][-1]


def test_sl_parity_when_served_features_match_training_path_then_difference_at_float32_rounding(served) -> None:
    service, snapshot = served
    parity = sl_parity(service, snapshot)
    assert parity.compared == 6 and parity.max_abs_diff < 1e-6


def test_sl_parity_when_served_features_skew_from_training_path_then_difference_names_the_symbol(served) -> None:
    service, snapshot = served
    skewed_rows = snapshot.market_rows.copy()
    skewed_rows.loc["SYM03", "ret_5"] += 0.2  # a served feature that the training code would not compute
    skewed = type(snapshot)(**{**snapshot.__dict__, "market_rows": skewed_rows})
    parity = sl_parity(service, skewed)
    assert parity.worst_symbol == "SYM03" and parity.max_abs_diff > 1e-3
