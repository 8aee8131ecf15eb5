"""The bars suite through real Great Expectations. GX is slow to import: one validation per scenario,
run once per module and shared by the tests that read it."""

import numpy as np
import pandas as pd
import pytest

from data_checks.bars_suite import validate_bars
from data_checks.results import DataCheckResult
from market_data.synthetic import SyntheticConfig, generate_synthetic_market

# Rows planted with problems (positions in the frame that is validated).
HIGH_BELOW_LOW, NEGATIVE_OPEN, NULL_CLOSE, DUPLICATED, ZERO_VOLUME = 5, 7, 9, 11, 15


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=5, n_days=60, seed=2)).bars


@pytest.fixture(scope="module")
def results(clean) -> dict[str, tuple[pd.DataFrame, DataCheckResult]]:
    bad = clean.copy()
    bad.loc[HIGH_BELOW_LOW, "high"] = bad.loc[HIGH_BELOW_LOW, "low"] - 1.0
    bad.loc[NEGATIVE_OPEN, "open"] = -3.0
    bad.loc[NULL_CLOSE, "close"] = np.nan
    bad.loc[ZERO_VOLUME, "volume"] = 0.0
    bad = pd.concat([bad.iloc[: DUPLICATED + 1], bad.iloc[[DUPLICATED]], bad.iloc[DUPLICATED + 1 :]], ignore_index=True)

    stamps = np.sort(clean["timestamp"].unique())
    cross = clean.copy()
    gap = (cross["symbol"] == "SYM02") & cross["timestamp"].isin(stamps[20:23])
    cross = cross.loc[~gap].reset_index(drop=True)
    split = (cross["symbol"] == "SYM03") & (cross["timestamp"] >= stamps[40])
    cross.loc[split, ["open", "high", "low", "close"]] /= 2.0  # an unadjusted 2:1 split
    late_listing = ~((cross["symbol"] == "SYM04") & (cross["timestamp"] < stamps[10]))
    cross = cross.loc[late_listing].reset_index(drop=True)

    frames = {
        "clean": clean,
        "bad": bad,
        "cross": cross,
        "thin": clean.drop(columns=["volume"]).rename(columns={"close": "Close"}),
    }
    return {name: (frame, validate_bars(frame)) for name, frame in frames.items()}


def test_bars_suite_when_clean_synthetic_then_passes_without_failures(results):
    _, result = results["clean"]
    assert result.success and result.failures == ()
    assert result.n_rows == 60 * 7


def test_bars_suite_when_rows_planted_bad_then_each_flagged_by_row_number(results):
    frame, result = results["bad"]
    assert not result.success
    assert result.rows_for("high_ge_low") == {HIGH_BELOW_LOW}
    assert result.rows_for("price_positive") == {NEGATIVE_OPEN}
    assert result.rows_for("not_null") == {NULL_CLOSE}
    assert result.rows_for("unique_symbol_timestamp") == {DUPLICATED, DUPLICATED + 1}
    # The null close is reported once, not again by the pair rules it belongs to.
    assert NULL_CLOSE not in result.rows_for("high_ge_close") | result.rows_for("low_le_close")
    assert HIGH_BELOW_LOW in result.rows_for("high_ge_open") | result.rows_for("high_ge_close")


def test_bars_suite_when_zero_volume_on_traded_symbol_then_warning_only(results, clean):
    frame, result = results["bad"]
    zero = [f for f in result.failures if f.check == "zero_volume"]
    assert len(zero) == 1 and zero[0].severity == "warning"
    assert set(zero[0].rows) == {ZERO_VOLUME + 1}  # shifted by the duplicated row inserted before it
    assert result.rows_for("zero_volume").isdisjoint(set(np.flatnonzero(frame["symbol"] == "VIX")))


def test_bars_suite_when_summary_rendered_then_names_symbol_and_timestamp_of_bad_rows(results):
    frame, result = results["bad"]
    text = result.summary()
    row = frame.iloc[HIGH_BELOW_LOW]
    assert text.startswith("bars: FAILED")
    assert f"row {HIGH_BELOW_LOW}: {row['symbol']} @ {row['timestamp']}" in text
    assert "high_ge_low" in text and "WARNING zero_volume" in text


def test_bars_suite_when_gap_and_split_then_flagged_but_late_listing_is_not(results):
    frame, result = results["cross"]
    gaps = [f for f in result.failures if f.check == "calendar_gap"]
    assert len(gaps) == 1
    (row,) = gaps[0].rows
    assert frame.iloc[row]["symbol"] == "SYM02"
    assert "3 missing bar(s)" in gaps[0].examples[0]
    (split_row,) = result.rows_for("suspected_split")
    assert frame.iloc[split_row]["symbol"] == "SYM03"
    assert not any("SYM04" in e for f in result.failures for e in f.examples)


def test_bars_suite_when_columns_missing_then_required_column_failures_name_them(results):
    _, result = results["thin"]
    missing = {f.column for f in result.failures if f.check == "required_column"}
    assert missing == {"volume", "close"}
    assert not result.success
    assert all("could not evaluate" not in f.detail for f in result.failures)


@pytest.mark.parametrize("preset", ["default", "planted-alpha", "no-alpha"])
def test_bars_suite_when_any_synthetic_preset_then_passes(preset):
    bars = generate_synthetic_market(SyntheticConfig(n_symbols=20, n_days=300, preset=preset)).bars
    result = validate_bars(bars)
    assert result.success and result.failures == (), result.summary()
