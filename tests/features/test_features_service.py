import numpy as np
import pandas as pd
import pytest

from contracts.features import REGIME_FEATURES
from features.errors import FeatureError
from features.market_features import WARMUP_BARS, compute_market_features
from features.master_features import compute_master_market_features
from features.observation import ObservationBuilder, observation_checksum
from features.service import FeatureService
from features.spec import fit_feature_spec
from market_data.replay import ReplayClock, bars_at
from market_data.synthetic import SyntheticConfig, generate_synthetic_market

SYMBOLS = tuple(f"SYM{i:02d}" for i in range(6))


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    # Seed 3 has several regime flips inside the replayed stretch (checked in the regime test).
    return generate_synthetic_market(SyntheticConfig(n_symbols=6, n_days=170, seed=3, preset="planted-alpha")).bars


@pytest.fixture(scope="module")
def stamps(bars) -> np.ndarray:
    return np.sort(bars["timestamp"].unique())


@pytest.fixture(scope="module")
def spec(bars, stamps):
    return fit_feature_spec(bars[bars["timestamp"] <= stamps[99]])


def test_service_when_replaying_then_every_step_equals_bulk_training_tensors(bars, stamps, spec):
    tensors = ObservationBuilder(spec).training_tensors(bars)
    market = compute_market_features(bars)
    master = compute_master_market_features(bars)
    service = FeatureService(spec, SYMBOLS, history=bars[bars["timestamp"] < stamps[110]])
    levels = np.linspace(0.0, 1.0, len(SYMBOLS))
    steps = 0
    for ts in ReplayClock(stamps[110:]):
        snapshot = service.on_bars(bars_at(bars, ts))
        k = tensors.timestamps.get_loc(snapshot.timestamp)
        pd.testing.assert_frame_equal(
            snapshot.market_rows, market.xs(ts, level="timestamp").loc[list(SYMBOLS)], check_exact=True
        )
        pd.testing.assert_series_equal(snapshot.master_row, master.loc[ts], check_exact=True)
        per_step = service.symbol_observations(snapshot, levels, 0.4)
        bulk = np.concatenate(
            [tensors.symbol_market[k], service.builder.symbol_portfolio_matrix(levels, 0.4)], axis=1
        )
        assert observation_checksum(per_step) == observation_checksum(bulk)
        master_step = service.master_observation(snapshot, drawdown=0.05, gross_exposure=0.4)
        master_bulk = np.concatenate(
            [tensors.master_market[k : k + 1], service.builder.master_portfolio_vector(0.05, 0.4)], axis=1
        )
        assert observation_checksum(master_step) == observation_checksum(master_bulk)
        assert snapshot.prices == {
            s: float(c) for s, c in bars_at(bars, ts).set_index("symbol").loc[list(SYMBOLS), "close"].items()
        }
        steps += 1
    assert steps == len(stamps) - 110
    assert service.n_bars == service.window


def test_service_when_started_without_history_then_warms_up_before_first_snapshot(bars, stamps, spec):
    service = FeatureService(spec, SYMBOLS, window=WARMUP_BARS)
    for ts in stamps[: WARMUP_BARS - 1]:
        with pytest.raises(FeatureError, match=f"history too short: .* {WARMUP_BARS} needed"):
            service.on_bars(bars_at(bars, ts))
    snapshot = service.on_bars(bars_at(bars, stamps[WARMUP_BARS - 1]))
    assert snapshot.timestamp == stamps[WARMUP_BARS - 1]
    assert snapshot.symbols == SYMBOLS


def test_service_when_regime_flags_change_then_snapshot_reports_shift(bars, stamps, spec):
    master = compute_master_market_features(bars)
    flags = master[list(REGIME_FEATURES)].loc[stamps[110] :]
    expected = (flags != flags.shift(1)).any(axis=1).to_numpy().copy()
    expected[0] = False  # the first snapshot has nothing to compare with
    assert expected.sum() >= 2, "fixture should contain regime flips"
    service = FeatureService(spec, SYMBOLS, history=bars[bars["timestamp"] < stamps[110]])
    shifts = [service.on_bars(bars_at(bars, ts)).regime_shift for ts in stamps[110:]]
    assert shifts == expected.tolist()


def test_service_when_symbol_missing_at_t_then_only_that_symbol_is_left_out(bars, stamps, spec):
    service = FeatureService(spec, SYMBOLS, history=bars[bars["timestamp"] < stamps[60]])
    whole = FeatureService(spec, SYMBOLS, history=bars[bars["timestamp"] < stamps[60]]).on_bars(bars_at(bars, stamps[60]))
    rows = bars_at(bars, stamps[60])
    snap = service.on_bars(rows[rows["symbol"] != "SYM04"])
    assert snap.unavailable == {"SYM04": "BAR_MISSING"}
    assert "SYM04" not in snap.market_rows.index and "SYM04" not in snap.prices
    assert snap.available == tuple(s for s in SYMBOLS if s != "SYM04")
    others = [s for s in SYMBOLS if s != "SYM04"]
    pd.testing.assert_frame_equal(snap.market_rows.loc[others], whole.market_rows.loc[others])


def test_service_when_market_input_missing_at_t_then_error_names_it(bars, stamps, spec):
    service = FeatureService(spec, SYMBOLS, history=bars[bars["timestamp"] < stamps[60]])
    rows = bars_at(bars, stamps[60])
    with pytest.raises(FeatureError, match=r"lack symbols \['SPY'\]"):
        service.on_bars(rows[rows["symbol"] != "SPY"])


def test_service_when_bars_go_back_in_time_then_error(bars, stamps, spec):
    service = FeatureService(spec, SYMBOLS, history=bars[bars["timestamp"] < stamps[60]])
    service.on_bars(bars_at(bars, stamps[60]))
    with pytest.raises(FeatureError, match="must move forward in time"):
        service.on_bars(bars_at(bars, stamps[59]))


def test_service_when_bars_span_two_timestamps_then_error(bars, stamps, spec):
    service = FeatureService(spec, SYMBOLS)
    with pytest.raises(FeatureError, match="exactly one timestamp, got 2"):
        service.on_bars(bars[bars["timestamp"].isin(stamps[:2])])


def test_service_when_a_recent_bar_was_missing_then_that_symbol_is_incomplete(bars, stamps, spec):
    history = bars[bars["timestamp"] < stamps[60]]
    history = history[~((history["symbol"] == "SYM02") & (history["timestamp"] == stamps[55]))]
    service = FeatureService(spec, SYMBOLS, history=history)
    snap = service.on_bars(bars_at(bars, stamps[60]))
    assert snap.unavailable == {"SYM02": "FEATURES_INCOMPLETE"}
    assert "SYM02" not in snap.market_rows.index


def test_service_when_every_symbol_is_incomplete_then_error_says_so(bars, stamps, spec):
    history = bars[bars["timestamp"] < stamps[60]]
    gone = history["symbol"].isin(SYMBOLS) & (history["timestamp"] == stamps[55])
    service = FeatureService(spec, SYMBOLS, history=history[~gone])
    with pytest.raises(FeatureError, match=r"incomplete for symbols \[.*'SYM02'.*\]: a bar in the last"):
        service.on_bars(bars_at(bars, stamps[60]))


def test_service_when_window_shorter_than_warm_up_then_error(spec):
    with pytest.raises(FeatureError, match="shorter than the feature warm-up"):
        FeatureService(spec, SYMBOLS, window=WARMUP_BARS - 1)


def test_service_when_index_symbol_requested_then_error(spec):
    with pytest.raises(FeatureError, match=r"\['SPY'\] are market inputs"):
        FeatureService(spec, ("SYM00", "SPY"))
