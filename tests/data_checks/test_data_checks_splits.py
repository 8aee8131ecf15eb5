"""Large moves vs unadjusted splits: the price ratio and the volume decide (data_checks/bars_rules.py).

Real GX validations, two per module: one frame of genuine large moves (the check passes with warnings) and one of
split-like rows (the check fails), each event planted in its own symbol."""

import numpy as np
import pandas as pd
import pytest

from data_checks.bars_rules import DOLLAR_VOLUME_BAND, LARGE_MOVE_THRESHOLD, SPLIT_RATIO_TOLERANCE
from data_checks.bars_suite import validate_bars
from data_checks.results import DataCheckResult
from market_data.synthetic import SyntheticConfig, generate_synthetic_market

EVENT_DAY = 40


def plant(bars: pd.DataFrame, symbol: str, day: int, price: float, *, volume_on_day: float = 1.0,
          volume_after: float = 1.0) -> int:
    """Scale `symbol`'s prices from `day` on so that close/previous close on `day` is exactly `price`, its volumes by
    `volume_after` (an unadjusted split scales both), and the volume of `day` itself by `volume_on_day` too (a news
    spike). Returns the row of `day`."""
    stamps = np.sort(bars["timestamp"].unique())
    mine = bars["symbol"] == symbol
    after = mine & (bars["timestamp"] >= stamps[day])
    (row,) = bars.index[mine & (bars["timestamp"] == stamps[day])]
    (before,) = bars.index[mine & (bars["timestamp"] == stamps[day - 1])]
    bars.loc[after, ["open", "high", "low", "close"]] *= price / (bars.loc[row, "close"] / bars.loc[before, "close"])
    bars.loc[after, "volume"] *= volume_after
    bars.loc[row, "volume"] *= volume_on_day
    return int(row)


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=6, n_days=60, seed=2)).bars


@pytest.fixture(scope="module")
def moves(base) -> tuple[dict[str, int], DataCheckResult]:
    bars = base.copy()
    rows = {
        "earnings": plant(bars, "SYM00", EVENT_DAY, 1.52, volume_on_day=6.0),  # +52% on 6x volume
        "crash": plant(bars, "SYM01", 30, 0.55, volume_on_day=4.0),  # -45% on 4x volume
        # -50%: a split's price ratio, but 10x the shares traded: dollar volume 5x its median, news not a split.
        "panic": plant(bars, "SYM02", EVENT_DAY, 0.5, volume_on_day=10.0),
    }
    stamps = np.sort(bars["timestamp"].unique())
    vix = bars.index[(bars["symbol"] == "VIX") & (bars["timestamp"] == stamps[20])]
    bars.loc[vix, ["open", "high", "low", "close"]] *= 2.5  # index levels jump; they are exempt
    rows["vix"] = int(vix[0])
    return rows, validate_bars(bars)


@pytest.fixture(scope="module")
def splits(base) -> tuple[dict[str, int], DataCheckResult]:
    bars = base.copy()
    rows = {
        "forward_2_for_1": plant(bars, "SYM00", EVENT_DAY, 0.5 * 1.01, volume_after=2.0),  # a split on a +1% day
        "reverse_1_for_10": plant(bars, "SYM01", 45, 10.0, volume_after=0.1),
        "three_for_two": plant(bars, "SYM02", 35, 2.0 / 3.0, volume_after=1.5),  # -33%: below the large-move bar
        "no_volume": plant(bars, "SYM03", EVENT_DAY, 0.25, volume_after=4.0, volume_on_day=0.0),
    }
    return rows, validate_bars(bars)


def test_check_when_genuine_52pct_earnings_day_with_volume_spike_then_large_move_warning_and_passes(moves):
    rows, result = moves
    assert result.success, result.summary()
    assert result.errors == ()
    (warning,) = [f for f in result.failures if f.check == "large_move"]
    assert warning.severity == "warning"
    assert rows["earnings"] in warning.rows
    example = next(e for e in warning.examples if e.startswith(f"row {rows['earnings']}:"))
    assert "SYM00" in example and "ratio=1.520" in example


def test_check_when_crash_45pct_or_split_sized_drop_on_huge_volume_then_large_move_not_split(moves):
    rows, result = moves
    assert result.rows_for("large_move") == {rows["earnings"], rows["crash"], rows["panic"]}
    assert result.rows_for("suspected_split") == set()


def test_check_when_vix_jumps_150pct_then_index_is_exempt(moves):
    rows, result = moves
    assert rows["vix"] not in result.rows_for("large_move") | result.rows_for("suspected_split")


def test_check_when_unadjusted_2_for_1_split_with_doubled_volume_then_suspected_split_error(splits):
    rows, result = splits
    assert not result.success
    failure = next(f for f in result.errors if f.check == "suspected_split" and rows["forward_2_for_1"] in f.rows)
    assert f"{DOLLAR_VOLUME_BAND:g}x" in failure.detail and f"{SPLIT_RATIO_TOLERANCE:.0%}" in failure.detail
    example = next(e for e in failure.examples if e.startswith(f"row {rows['forward_2_for_1']}:"))
    assert "SYM00" in example and "2-for-1 split" in example


def test_check_when_reverse_split_or_3_for_2_split_then_suspected_split_error(splits):
    rows, result = splits
    flagged = result.rows_for("suspected_split")
    assert {rows["reverse_1_for_10"], rows["three_for_two"]} <= flagged
    assert result.rows_for("large_move") == set()  # each split-like row is reported once, as a split


def test_check_when_split_day_has_no_volume_then_error_saying_volume_could_not_confirm(splits):
    rows, result = splits
    failure = next(f for f in result.errors if rows["no_volume"] in f.rows)
    assert failure.check == "suspected_split" and failure.severity == "error"
    assert "volume could not confirm" in failure.detail
    assert rows["forward_2_for_1"] not in failure.rows  # confirmed splits are reported apart
    assert result.rows_for("suspected_split") == set(rows.values())


def test_check_when_move_just_under_threshold_then_nothing_reported(base):
    bars = base.copy()
    plant(bars, "SYM04", EVENT_DAY, 1.0 + LARGE_MOVE_THRESHOLD - 0.02, volume_on_day=3.0)
    result = validate_bars(bars)
    assert result.success and result.failures == (), result.summary()
