"""The live drift monitor on real features: stationary bars stay quiet, a planted shift of a key feature is
caught within a few bars, the score stays in [0, 1], and a spec without a reference still gets the sigma test."""

import numpy as np
import pandas as pd
import pytest

from contracts.config import DriftThresholdsConfig, load_drift
from data_checks.drift import ks_distance_to_quantiles, psi_against_quantiles
from features.drift_monitor import DriftMonitor
from features.service import FeatureService
from features.spec import fit_feature_spec
from market_data.source import load_market, trading_symbols

TRAIN, MONITOR = 700, 200


@pytest.fixture(scope="module")
def stream() -> tuple[object, list[tuple[pd.Timestamp, pd.DataFrame, pd.Series]]]:
    bars = load_market("synthetic:planted-alpha", seed=5, n_symbols=8, n_days=TRAIN + MONITOR)
    stamps = np.sort(bars["timestamp"].unique())
    history = bars[bars["timestamp"] < stamps[TRAIN]]
    spec = fit_feature_spec(history, seed=5)
    service = FeatureService(spec, trading_symbols(bars), history=history)
    snaps = [service.on_bars(bars[bars["timestamp"] == ts]) for ts in stamps[TRAIN:]]
    return spec, [(s.timestamp, s.market_rows, s.master_row) for s in snaps]


def _shift(spec, rows: pd.DataFrame, name: str, sigmas: float) -> pd.DataFrame:
    i = spec.symbol.names.index(name)
    return rows.assign(**{name: rows[name] + sigmas * spec.symbol.stds[i]})


def test_monitor_when_bars_come_from_the_training_process_then_no_halt_and_scores_in_unit_interval(stream) -> None:
    spec, bars = stream
    monitor = DriftMonitor(spec, load_drift())
    verdicts = [monitor.observe(*bar) for bar in bars]
    assert not any(v.breaches for v in verdicts)
    assert all(0.0 <= v.score <= 1.0 for v in verdicts)
    assert max(v.score for v in verdicts) < load_drift().monitor.alert_score
    last = {f.name: f for f in verdicts[-1].features}
    assert last["vol_20"].ks is not None and last["vol_20"].psi is not None  # symbol features: KS and PSI
    assert last["avg_vol_20"].ks is None  # master-only features: sigma, mean, variance only
    assert abs(last["ret_1"].mean) < 1 and 0.2 < last["ret_1"].variance < 5


def test_monitor_when_a_key_feature_shifts_six_sigma_then_halt_reason_within_three_bars(stream) -> None:
    spec, bars = stream
    monitor = DriftMonitor(spec, load_drift())
    at = 120
    halted = None
    for i, (ts, rows, master) in enumerate(bars):
        verdict = monitor.observe(ts, _shift(spec, rows, "vol_20", 6.0) if i >= at else rows, master)
        if verdict.breaches:
            halted = i
            reason = verdict.halt_reason()
            break
    assert halted is not None and at <= halted <= at + 2
    assert reason is not None and reason.startswith("key feature drift: vol_20 ") and "(limit 4)" in reason
    assert verdict.score > load_drift().monitor.alert_score  # the score alert fires with the halt


def test_monitor_when_spec_has_no_reference_then_sigma_test_only(stream) -> None:
    spec, bars = stream
    old = spec.model_copy(update={"drift_reference": None})
    assert old.spec_hash() != spec.spec_hash() and "drift_reference" not in old.canonical_json()
    monitor = DriftMonitor(old, load_drift())
    verdict = [monitor.observe(*bar) for bar in bars[:40]][-1]
    assert all(f.ks is None and f.psi is None for f in verdict.features)
    assert {f.name for f in verdict.features} >= {"vix_level", "vol_20", "sl_prob_up"}


def test_monitor_when_key_feature_unknown_then_reported_unmonitored(stream) -> None:
    spec, _ = stream
    thresholds = DriftThresholdsConfig(key_features={"vol_20": 4.0, "sentiment_score": 4.0})
    assert DriftMonitor(spec, thresholds).unmonitored_keys == ("sentiment_score",)


def test_thresholds_when_key_limit_not_positive_then_error_names_it() -> None:
    with pytest.raises(ValueError, match="vol_20"):
        DriftThresholdsConfig(key_features={"vol_20": 0.0})


def test_ks_and_psi_against_quantiles_when_same_vs_shifted_sample_then_small_vs_large() -> None:
    rng = np.random.default_rng(0)
    levels = np.linspace(0, 1, 41)
    quantiles = np.quantile(rng.standard_normal(20_000), levels)
    same, shifted = rng.standard_normal(2_000), rng.standard_normal(2_000) + 1.5
    assert ks_distance_to_quantiles(same, quantiles, levels) < 0.05
    assert ks_distance_to_quantiles(shifted, quantiles, levels) > 0.5
    assert psi_against_quantiles(same, quantiles) < 0.05 < 1.0 < psi_against_quantiles(shifted, quantiles)
