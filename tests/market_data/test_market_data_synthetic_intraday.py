"""The synthetic market's 1-minute option: regular sessions (09:30-16:00 New York), seeded and deterministic;
daily bars unchanged."""

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from contracts.bars import BAR_COLUMNS
from market_data.errors import MarketDataError
from market_data.source import dataset_id, load_market
from market_data.synthetic import SyntheticConfig, generate_synthetic_market, session_minutes


def _minute(**kw: object) -> SyntheticConfig:
    return SyntheticConfig(**{"n_symbols": 4, "n_days": 3, "seed": 5, "frequency": "1Min", **kw})  # type: ignore[arg-type]


def test_daily_when_default_frequency_then_bars_are_unchanged():
    # Pinned before the 1-minute option existed: the daily generator must not move.
    cfg = SyntheticConfig(n_symbols=5, n_days=60, seed=4, preset="planted-alpha")
    assert cfg.frequency == "1Day"
    assert dataset_id(generate_synthetic_market(cfg).bars) == "bars-8b09831e07af"


def test_minute_when_same_config_then_identical_frame_and_seed_changes_it():
    cfg = _minute(preset="planted-alpha")
    first, second = generate_synthetic_market(cfg), generate_synthetic_market(cfg)
    pd.testing.assert_frame_equal(first.bars, second.bars)
    pd.testing.assert_series_equal(first.regimes, second.regimes)
    assert dataset_id(first.bars) != dataset_id(generate_synthetic_market(_minute(seed=6, preset="planted-alpha")).bars)


def test_minute_when_generated_then_390_bars_per_regular_session_stamped_at_their_close():
    # 2024-03-08 (EST), 2024-03-11 and 12 (EDT): the UTC stamps follow New York's clock change.
    bars = generate_synthetic_market(_minute(start="2024-03-08")).bars
    assert tuple(bars.columns) == BAR_COLUMNS and isinstance(bars.index, pd.RangeIndex)
    assert str(bars["timestamp"].dt.tz) == "UTC" and bars["timestamp"].dt.unit == "ns"
    pd.testing.assert_frame_equal(bars, bars.sort_values(["timestamp", "symbol"]).reset_index(drop=True))
    assert not bars.duplicated(["timestamp", "symbol"]).any()
    stamps = pd.DatetimeIndex(bars["timestamp"].unique())
    assert len(stamps) == 3 * 390
    local = stamps.tz_convert("America/New_York")
    per_day = pd.Series(local.time).groupby(local.date).agg(["min", "max", "size"])
    assert per_day["size"].tolist() == [390, 390, 390]
    assert {str(t) for t in per_day["min"]} == {"09:31:00"} and {str(t) for t in per_day["max"]} == {"16:00:00"}
    assert [str(d) for d in per_day.index] == ["2024-03-08", "2024-03-11", "2024-03-12"]
    assert stamps[0] == pd.Timestamp("2024-03-08 14:31", tz="UTC") and stamps[-1] == pd.Timestamp("2024-03-12 20:00", tz="UTC")
    assert (bars.groupby("timestamp").size() == 4 + 2).all()  # SYM00..03 + SPY + VIX at every minute


def test_minute_when_generated_then_ohlc_consistent_and_per_minute_scale_is_the_daily_model():
    bars = generate_synthetic_market(_minute(n_symbols=10, n_days=10, seed=2)).bars
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars[["open", "high", "low", "close"]] > 0).all().all()
    traded = bars[bars["symbol"] != "VIX"]
    assert (traded["volume"] >= 1).all()
    vix = bars[bars["symbol"] == "VIX"]
    assert (vix["volume"] == 0).all() and (vix["close"] >= 9.0).all()
    close = bars.pivot(index="timestamp", columns="symbol", values="close")
    daily_equivalent = np.log(close / close.shift(1)).iloc[1:].drop(columns="VIX").std() * np.sqrt(390)
    # Daily model: SPY ~0.8% calm, symbols ~1-3%: minutes scaled by sqrt(390) land in the same range.
    assert daily_equivalent.between(0.004, 0.05).all(), daily_equivalent.to_dict()


def test_minute_when_capped_then_each_session_keeps_its_first_minutes():
    stamps = session_minutes("2024-01-02", 2, 5)
    local = stamps.tz_convert("America/New_York").strftime("%Y-%m-%d %H:%M").tolist()
    assert local == ["2024-01-02 09:31", "2024-01-02 09:32", "2024-01-02 09:33", "2024-01-02 09:34", "2024-01-02 09:35",
                     "2024-01-03 09:31", "2024-01-03 09:32", "2024-01-03 09:33", "2024-01-03 09:34", "2024-01-03 09:35"]
    bars = generate_synthetic_market(_minute(minutes_per_day=5, n_days=2, start="2024-01-02")).bars
    assert pd.DatetimeIndex(bars["timestamp"].unique()).equals(stamps)
    with pytest.raises(ValidationError):
        _minute(minutes_per_day=391)


def test_load_market_when_minute_frequency_then_synthetic_minute_bars_and_files_refuse_it(tmp_path):
    bars = load_market("synthetic:planted-alpha", seed=5, n_symbols=3, n_days=2, frequency="1Min", minutes_per_day=30)
    assert bars["timestamp"].nunique() == 60 and set(bars["symbol"]) == {"SYM00", "SYM01", "SYM02", "SPY", "VIX"}
    with pytest.raises(MarketDataError, match="frequency"):
        load_market("synthetic", frequency="5Min")
    path = tmp_path / "bars.csv"
    load_market("synthetic", n_symbols=2, n_days=30).to_csv(path, index=False)
    with pytest.raises(MarketDataError, match="synthetic markets only"):
        load_market(str(path), frequency="1Min")
