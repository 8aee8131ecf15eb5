"""HybridRLObservation v2: sentiment + macro joined as of each bar, the same way in training and serving."""

import numpy as np
import pandas as pd
import pytest

from contracts.features import (
    MACRO_FEATURES,
    MASTER_FEATURES,
    SENTIMENT_FEATURES,
    SYMBOL_FEATURES,
    master_feature_names,
    symbol_feature_names,
)
from features.alt_features import AltFreshness
from features.errors import FeatureError
from features.observation import ObservationBuilder, observation_checksum
from features.service import FeatureService
from features.spec import fit_feature_spec
from market_data.alt_data import AltFeeds, SyntheticMacroSource, SyntheticSentimentSource
from market_data.replay import ReplayClock, bars_at
from market_data.synthetic import SyntheticConfig, generate_synthetic_market

SYMBOLS = tuple(f"SYM{i:02d}" for i in range(6))
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=6, n_days=130, seed=3, preset="planted-alpha")).bars


@pytest.fixture(scope="module")
def stamps(bars) -> np.ndarray:
    return np.sort(bars["timestamp"].unique())


@pytest.fixture(scope="module")
def records(bars) -> tuple[pd.DataFrame, pd.DataFrame]:
    start, end = bars["timestamp"].min() - 5 * DAY, bars["timestamp"].max() + DAY
    return (SyntheticSentimentSource(SYMBOLS, seed=5).sentiment(start, end),
            SyntheticMacroSource(seed=5).macro(start, end))


@pytest.fixture(scope="module")
def feeds(records) -> AltFeeds:
    return AltFeeds.from_frames(*records)


@pytest.fixture(scope="module")
def spec_v2(bars, stamps, feeds):
    return fit_feature_spec(bars[bars["timestamp"] <= stamps[79]], observation_version=2, alt=feeds)


@pytest.fixture(scope="module")
def spec_v1(bars, stamps):
    return fit_feature_spec(bars[bars["timestamp"] <= stamps[79]])


def test_fit_when_version_2_then_spec_names_are_the_v2_lists_and_hash_differs(spec_v1, spec_v2):
    assert spec_v2.version == 2 and spec_v1.version == 1
    assert spec_v2.symbol.names == symbol_feature_names(2) and spec_v2.master.names == master_feature_names(2)
    assert spec_v1.symbol.names == SYMBOL_FEATURES and spec_v1.master.names == MASTER_FEATURES
    assert set(SENTIMENT_FEATURES) <= set(spec_v2.symbol.names) and set(MACRO_FEATURES) <= set(spec_v2.master.names)
    # Portfolio features stay last, so simulators fill the same tail in both versions.
    assert spec_v2.symbol.names[-2:] == SYMBOL_FEATURES[-2:] and spec_v2.master.names[-2:] == MASTER_FEATURES[-2:]
    assert spec_v2.definitions["sentiment_max_age_hours"] == 6.0 and spec_v2.definitions["macro_max_age_hours"] == 72.0
    assert spec_v1.spec_hash() != spec_v2.spec_hash()
    # The v1 spec's market constants do not depend on whether v2 was fitted beside it.
    shared = spec_v1.symbol.names.index("ret_5"), spec_v2.symbol.names.index("ret_5")
    assert spec_v1.symbol.means[shared[0]] == spec_v2.symbol.means[shared[1]]


def test_builder_when_spec_names_do_not_match_its_version_then_refused(spec_v1, spec_v2):
    with pytest.raises(FeatureError, match="differ from this build's v1"):
        ObservationBuilder(spec_v2.model_copy(update={"version": 1}))
    with pytest.raises(FeatureError, match="differ from this build's v2"):
        ObservationBuilder(spec_v1.model_copy(update={"version": 2}))
    with pytest.raises(FeatureError, match="unknown HybridRLObservation version 3"):
        ObservationBuilder(spec_v1.model_copy(update={"version": 3}))


def test_service_when_v2_spec_without_provider_then_clear_error(spec_v2):
    with pytest.raises(FeatureError, match="v2 spec needs an alt-data provider"):
        FeatureService(spec_v2, SYMBOLS)


def test_training_tensors_when_v2_spec_without_provider_then_clear_error(bars, spec_v2):
    with pytest.raises(FeatureError, match="v2 spec needs an alt-data provider"):
        ObservationBuilder(spec_v2).training_tensors(bars)


def test_service_when_replaying_v2_then_every_step_equals_bulk_training_tensors(bars, stamps, spec_v2, feeds):
    tensors = ObservationBuilder(spec_v2).training_tensors(bars, alt=feeds)
    assert tensors.symbol_market.shape[2] == len(symbol_feature_names(2)) - 2
    assert tensors.master_market.shape[1] == len(master_feature_names(2)) - 2
    service = FeatureService(spec_v2, SYMBOLS, history=bars[bars["timestamp"] < stamps[100]], alt=feeds)
    levels = np.linspace(0.0, 1.0, len(SYMBOLS))
    steps = 0
    for ts in ReplayClock(stamps[100:]):
        snapshot = service.on_bars(bars_at(bars, ts))
        k = tensors.timestamps.get_loc(snapshot.timestamp)
        assert snapshot.stale_feeds == {}
        per_step = service.symbol_observations(snapshot, levels, 0.4)
        assert per_step.shape == (len(SYMBOLS), len(symbol_feature_names(2)))
        bulk = np.concatenate([tensors.symbol_market[k], service.builder.symbol_portfolio_matrix(levels, 0.4)], axis=1)
        assert observation_checksum(per_step) == observation_checksum(bulk)
        master_step = service.master_observation(snapshot, drawdown=0.05, gross_exposure=0.4)
        master_bulk = np.concatenate(
            [tensors.master_market[k : k + 1], service.builder.master_portfolio_vector(0.05, 0.4)], axis=1)
        assert observation_checksum(master_step) == observation_checksum(master_bulk)
        steps += 1
    assert steps == len(stamps) - 100
    # The sentiment columns carry information (not a constant fallback) in the served observations.
    j = spec_v2.symbol.names.index("sentiment_score")
    assert np.std(tensors.symbol_market[:, :, j]) > 0.1


def _stale_feeds(records, cutoff: pd.Timestamp, macro_cutoff: pd.Timestamp | None = None) -> AltFeeds:
    sentiment, macro = records
    keep_sym = (sentiment["timestamp"] < cutoff) | (sentiment["symbol"] != "SYM02")
    keep_macro = macro["timestamp"] < (macro_cutoff if macro_cutoff is not None else macro["timestamp"].max() + DAY)
    return AltFeeds.from_frames(sentiment[keep_sym], macro[keep_macro])


def test_snapshot_when_sentiment_older_than_max_age_then_neutral_value_and_reported_stale(
        bars, stamps, spec_v2, records):
    ts = pd.Timestamp(stamps[110])
    # SYM02's last record is 7 hours before the bar: older than the spec's 6 h.
    feeds = _stale_feeds(records, ts - pd.Timedelta(hours=7) + pd.Timedelta(seconds=1))
    service = FeatureService(spec_v2, SYMBOLS, history=bars[bars["timestamp"] < ts], alt=feeds)
    snapshot = service.on_bars(bars_at(bars, ts))
    assert snapshot.stale_feeds == {"sentiment:SYM02": 7.0}
    obs = service.symbol_observations(snapshot, np.zeros(len(SYMBOLS)), 0.0)
    assert np.isfinite(obs).all()
    cols = [spec_v2.symbol.names.index(n) for n in SENTIMENT_FEATURES]
    row = SYMBOLS.index("SYM02")
    np.testing.assert_array_equal(obs[row, cols], np.zeros(len(cols), dtype=np.float32))
    assert np.abs(obs[np.arange(len(SYMBOLS)) != row][:, cols]).sum() > 0  # the fresh symbols keep their values


def test_snapshot_when_sentiment_exactly_max_age_old_then_still_used(bars, stamps, spec_v2, records):
    ts = pd.Timestamp(stamps[110])
    feeds = _stale_feeds(records, ts - pd.Timedelta(hours=6) + pd.Timedelta(seconds=1))
    service = FeatureService(spec_v2, SYMBOLS, history=bars[bars["timestamp"] < ts], alt=feeds)
    assert service.on_bars(bars_at(bars, ts)).stale_feeds == {}


def test_snapshot_when_macro_never_published_recently_then_neutral_and_reported(bars, stamps, spec_v2, records):
    ts = pd.Timestamp(stamps[110])
    feeds = _stale_feeds(records, ts + DAY, macro_cutoff=ts - 4 * DAY)
    service = FeatureService(spec_v2, SYMBOLS, history=bars[bars["timestamp"] < ts], alt=feeds)
    snapshot = service.on_bars(bars_at(bars, ts))
    assert sorted(snapshot.stale_feeds) == ["macro:credit_spread", "macro:rate_10y", "macro:rate_2y"]
    assert all(age > 72.0 for age in snapshot.stale_feeds.values())
    obs = service.master_observation(snapshot, drawdown=0.0, gross_exposure=0.0)
    cols = [spec_v2.master.names.index(n) for n in MACRO_FEATURES]
    np.testing.assert_array_equal(obs[0, cols], np.zeros(len(cols), dtype=np.float32))


def test_snapshot_when_symbol_has_no_sentiment_at_all_then_age_infinite_and_neutral(bars, stamps, spec_v2, records):
    ts = pd.Timestamp(stamps[110])
    feeds = _stale_feeds(records, pd.Timestamp("1990-01-01", tz="UTC"))  # SYM02 never published
    service = FeatureService(spec_v2, SYMBOLS, history=bars[bars["timestamp"] < ts], alt=feeds)
    snapshot = service.on_bars(bars_at(bars, ts))
    assert snapshot.stale_feeds == {"sentiment:SYM02": float("inf")}


def test_training_when_feed_stale_then_tensors_hold_the_same_neutral_value_as_serving(bars, stamps, spec_v2, records):
    ts = pd.Timestamp(stamps[110])
    feeds = _stale_feeds(records, ts - 3 * DAY)
    tensors = ObservationBuilder(spec_v2).training_tensors(bars, alt=feeds)
    service = FeatureService(spec_v2, SYMBOLS, history=bars[bars["timestamp"] < ts], alt=feeds)
    snapshot = service.on_bars(bars_at(bars, ts))
    k = tensors.timestamps.get_loc(ts)
    assert observation_checksum(service.symbol_market_matrix(snapshot)) == observation_checksum(
        tensors.symbol_market[k])
    cols = [spec_v2.symbol.names.index(n) for n in SENTIMENT_FEATURES]
    assert (tensors.symbol_market[k, SYMBOLS.index("SYM02"), cols] == 0.0).all()


def test_fit_when_freshness_configured_then_thresholds_enter_the_spec_hash(bars, stamps, feeds, spec_v2):
    other = fit_feature_spec(bars[bars["timestamp"] <= stamps[79]], observation_version=2, alt=feeds,
                             freshness=AltFreshness(sentiment_max_age_hours=12.0))
    assert other.definitions["sentiment_max_age_hours"] == 12.0
    assert other.spec_hash() != spec_v2.spec_hash()


def test_service_when_v1_spec_then_snapshot_has_no_alt_columns_and_no_stale_feeds(bars, stamps, spec_v1, feeds):
    ts = pd.Timestamp(stamps[110])
    service = FeatureService(spec_v1, SYMBOLS, history=bars[bars["timestamp"] < ts], alt=feeds)
    snapshot = service.on_bars(bars_at(bars, ts))
    assert snapshot.stale_feeds == {} and not set(SENTIMENT_FEATURES) & set(snapshot.market_rows.columns)
    assert service.symbol_observations(snapshot, np.zeros(len(SYMBOLS)), 0.0).shape == (len(SYMBOLS),
                                                                                        len(SYMBOL_FEATURES))
