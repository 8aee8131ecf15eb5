"""Per-symbol feed validation (market_data.feed_checks) and the feed config: each reason code, pure functions."""

import math

import pandas as pd
import pytest
from pydantic import ValidationError

from contracts.config import FeedConfig, MarketDataConfig
from market_data.bar_source import BarBatch
from market_data.feed_checks import (
    BAR_INCONSISTENT,
    BAR_MISSING,
    FEED_STALE,
    NO_QUORUM,
    REASON_CODES,
    carried_forward,
    check_bars,
    inconsistent_mask,
)

T = pd.Timestamp("2024-03-05 21:00", tz="UTC")


def _row(symbol: str, ts: pd.Timestamp = T, *, o: float = 100.0, h: float = 101.0, low: float = 99.0,
         c: float = 100.5, v: float = 1000.0) -> dict:
    return {"symbol": symbol, "timestamp": ts, "open": o, "high": h, "low": low, "close": c, "volume": v}


def _frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def test_reason_codes_when_listed_then_upper_case_and_unique():
    assert len(set(REASON_CODES)) == len(REASON_CODES) == 4
    assert all(code == code.upper() for code in REASON_CODES)
    assert NO_QUORUM in REASON_CODES


def test_check_when_every_row_valid_and_fresh_then_no_codes():
    assert check_bars(_frame(_row("AAA"), _row("BBB")), T, ["AAA", "BBB"]) == {}


def test_check_when_symbol_has_no_row_then_bar_missing():
    assert check_bars(_frame(_row("AAA")), T, ["AAA", "BBB"]) == {"BBB": BAR_MISSING}


def test_check_when_provider_delivered_nothing_then_every_symbol_bar_missing():
    assert check_bars(None, T, ["AAA", "BBB"]) == {"AAA": BAR_MISSING, "BBB": BAR_MISSING}


def test_check_when_row_timestamp_lags_the_bar_then_feed_stale():
    earlier = T - pd.Timedelta(days=1)
    assert check_bars(_frame(_row("AAA", earlier), _row("BBB")), T, ["AAA", "BBB"]) == {"AAA": FEED_STALE}


def test_check_when_live_row_lags_wall_clock_beyond_limit_then_feed_stale():
    bars = _frame(_row("AAA"))
    assert check_bars(bars, T, ["AAA"], now=T + pd.Timedelta(seconds=30), max_clock_lag_s=60) == {}
    assert check_bars(bars, T, ["AAA"], now=T + pd.Timedelta(seconds=90), max_clock_lag_s=60) == {"AAA": FEED_STALE}


@pytest.mark.parametrize("broken", [
    {"h": 99.5},  # high below the close
    {"low": 100.8},  # low above the close... and the open
    {"h": 98.0, "low": 99.0},  # high below low
    {"o": 0.0},  # non-positive price
    {"c": -1.0},
    {"c": math.nan},  # non-finite price
    {"h": math.inf},
    {"v": -5.0},  # negative volume
    {"v": math.nan},
])
def test_check_when_ohlcv_broken_then_bar_inconsistent(broken):
    bars = _frame(_row("AAA"), _row("BBB", **broken))
    assert check_bars(bars, T, ["AAA", "BBB"]) == {"BBB": BAR_INCONSISTENT}


def test_check_when_flat_bar_with_zero_volume_then_valid():
    # A volatility index row (open=high=low=close, volume 0) is a real bar.
    assert not inconsistent_mask(_frame(_row("VIX", o=14.0, h=14.0, low=14.0, c=14.0, v=0.0))).any()


def test_check_when_row_stale_and_broken_then_stale_wins():
    bars = _frame(_row("AAA", T - pd.Timedelta(days=1), h=1.0))
    assert check_bars(bars, T, ["AAA"]) == {"AAA": FEED_STALE}


def test_carried_forward_when_built_then_flat_bar_at_t_without_volume():
    row = carried_forward("AAA", 12.5, T)
    assert row == {"symbol": "AAA", "timestamp": T, "open": 12.5, "high": 12.5, "low": 12.5, "close": 12.5,
                   "volume": 0.0}


def test_bar_batch_when_built_by_a_plain_source_then_no_flags_and_no_feed_status():
    batch = BarBatch(timestamp=T, bars=_frame(_row("AAA")))
    assert dict(batch.flags) == {} and batch.feed is None


def test_feed_config_when_defaults_then_majority_quorum_and_half_percent_tolerance():
    feed = MarketDataConfig().feed
    assert feed.quorum is None and feed.tolerance == 0.005 and feed.release_after_bars >= 1


@pytest.mark.parametrize("bad", [{"tolerance": 0}, {"tolerance": 1.5}, {"quorum": 0}, {"stale_after_intervals": 0},
                                 {"release_after_bars": 0}, {"grace_seconds": -1}, {"max_clock_lag_seconds": 0},
                                 {"unknown_key": 1}])
def test_feed_config_when_value_out_of_range_then_validation_error_names_it(bad):
    with pytest.raises(ValidationError) as info:
        FeedConfig(**bad)
    assert next(iter(bad)) in str(info.value)
