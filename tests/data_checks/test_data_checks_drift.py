import numpy as np
import pandas as pd
import pytest

from contracts.config import DriftThresholdsConfig, FeatureDriftThreshold
from data_checks.drift import compute_drift, population_stability_index
from data_checks.errors import DataCheckError


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"ret_1": rng.normal(0, 0.02, 3000), "vix_level": rng.normal(0.16, 0.04, 3000)})


def test_drift_when_current_is_reference_then_no_feature_drifts(reference):
    report = compute_drift(reference, reference, DriftThresholdsConfig())
    assert not report.drifted
    for feature in report.features:
        assert feature.ks_stat == 0.0 and feature.psi == pytest.approx(0.0) and feature.sigma_shift == 0.0


def test_drift_when_fresh_sample_from_same_distribution_then_no_drift(reference):
    rng = np.random.default_rng(2)
    current = pd.DataFrame({"ret_1": rng.normal(0, 0.02, 500), "vix_level": rng.normal(0.16, 0.04, 500)})
    assert not compute_drift(reference, current, DriftThresholdsConfig()).drifted


def test_drift_when_one_feature_shifted_then_only_it_drifts_with_reasons(reference):
    rng = np.random.default_rng(3)
    current = pd.DataFrame({"ret_1": rng.normal(0, 0.02, 500), "vix_level": rng.normal(0.36, 0.04, 500)})
    report = compute_drift(reference, current, DriftThresholdsConfig())
    assert report.drifted and report.drifted_features == ("vix_level",)
    vix = report.features[1]
    assert vix.ks_pvalue < 1e-10 and vix.psi > 1.0 and vix.sigma_shift > 4.0
    assert len(vix.reasons) == 3
    assert "vix_level" in report.summary()


def test_drift_when_per_feature_threshold_looser_then_that_feature_passes(reference):
    rng = np.random.default_rng(4)
    current = pd.DataFrame({"ret_1": rng.normal(0.01, 0.02, 500), "vix_level": rng.normal(0.16, 0.04, 500)})
    strict = compute_drift(reference, current, DriftThresholdsConfig())
    loose = DriftThresholdsConfig(
        features={"ret_1": FeatureDriftThreshold(ks_pvalue_min=0.0, psi_max=10.0, sigma_max=10.0)}
    )
    assert strict.drifted_features == ("ret_1",)
    assert not compute_drift(reference, current, loose).drifted


def test_psi_when_current_outside_reference_range_then_counted_in_outer_bins():
    reference = np.linspace(0, 1, 1000)
    assert population_stability_index(reference, reference + 5.0) > 5.0


def test_drift_when_feature_missing_or_empty_then_error_names_it(reference):
    with pytest.raises(DataCheckError, match=r"current sample lacks features \['vix_level'\]"):
        compute_drift(reference, reference[["ret_1"]], DriftThresholdsConfig())
    empty = reference.assign(ret_1=np.nan)
    with pytest.raises(DataCheckError, match="'ret_1' holds no finite values"):
        compute_drift(reference, empty, DriftThresholdsConfig())
