import pandas as pd
import pytest

from market_data.errors import MarketDataError
from market_data.replay import ReplayClock, bars_at
from market_data.synthetic import SyntheticConfig, generate_synthetic_market


class FakeTime:
    """A monotonic clock that only moves when something sleeps or works."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _stamps(n: int) -> list[pd.Timestamp]:
    return list(pd.date_range("2024-01-01 21:00", periods=n, freq="D", tz="UTC"))


def test_replay_when_timestamps_unsorted_with_repeats_then_yields_each_once_in_order():
    stamps = _stamps(4)
    clock = ReplayClock([stamps[2], stamps[0], stamps[2], stamps[3], stamps[1], stamps[0]])
    seen = []
    for ts in clock:
        assert clock.now == ts
        seen.append(ts)
    assert seen == stamps
    assert len(clock) == 4 and clock.position == 3


def test_replay_when_before_first_bar_then_now_is_none():
    assert ReplayClock(_stamps(2)).now is None


def test_replay_when_speed_none_then_never_sleeps():
    fake = FakeTime()
    assert list(ReplayClock(_stamps(5), sleep=fake.sleep, monotonic=fake.monotonic)) == _stamps(5)
    assert fake.sleeps == []


def test_replay_when_speed_60_then_sleeps_bar_seconds_over_speed_between_bars():
    fake = FakeTime()
    clock = ReplayClock(_stamps(4), speed=60.0, bar_seconds=120.0, sleep=fake.sleep, monotonic=fake.monotonic)
    assert clock.interval_seconds == 2.0
    list(clock)
    assert fake.sleeps == [2.0, 2.0, 2.0]


def test_replay_when_consumer_is_slow_then_sleep_shrinks_to_hold_the_schedule():
    fake = FakeTime()
    clock = ReplayClock(_stamps(4), speed=1.0, bar_seconds=10.0, sleep=fake.sleep, monotonic=fake.monotonic)
    work = [4.0, 12.0, 1.0, 0.0]  # the second bar's work overruns the 10 s interval
    for i, _ in enumerate(clock):
        fake.now += work[i]
    # Deadlines are 1010, 1020, 1030: bar 2 is already late (no sleep), bar 3 waits until 1030 again.
    assert fake.sleeps == [6.0, 7.0]


def test_replay_when_speed_not_positive_then_error():
    with pytest.raises(MarketDataError, match="speed must be > 0"):
        ReplayClock(_stamps(2), speed=0)


def test_replay_when_no_timestamps_then_error():
    with pytest.raises(MarketDataError, match="at least one timestamp"):
        ReplayClock([])


def test_bars_at_when_timestamp_given_naive_or_aware_then_rows_of_that_bar():
    bars = generate_synthetic_market(SyntheticConfig(n_symbols=3, n_days=5)).bars
    stamp = bars["timestamp"].unique()[2]
    rows = bars_at(bars, stamp)
    assert len(rows) == 5 and (rows["timestamp"] == stamp).all()
    assert isinstance(rows.index, pd.RangeIndex) and rows.index[0] == 0
    pd.testing.assert_frame_equal(bars_at(bars, pd.Timestamp(stamp).tz_convert(None)), rows)
    assert bars_at(bars, "1999-01-01").empty
