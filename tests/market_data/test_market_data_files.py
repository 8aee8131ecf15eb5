from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contracts.bars import BAR_COLUMNS
from market_data.errors import MarketDataError
from market_data.files import load_bars
from market_data.synthetic import SyntheticConfig, generate_synthetic_market

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def synthetic_bars() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=3, n_days=15, seed=2)).bars


def test_load_when_sample_csv_has_mixed_case_aliases_then_normalised():
    bars = load_bars(DATA / "sample_bars.csv")
    assert tuple(bars.columns) == BAR_COLUMNS
    assert isinstance(bars.index, pd.RangeIndex)
    assert str(bars["timestamp"].dt.tz) == "UTC"
    assert sorted(bars["symbol"].unique()) == ["AAPL", "MSFT", "SPY", "VIX"]
    # Input rows are out of order; output is sorted by (timestamp, symbol).
    assert bars.iloc[0][["symbol", "open"]].tolist() == ["AAPL", 187.15]
    assert bars["timestamp"].is_monotonic_increasing


def test_load_when_row_has_empty_prices_then_kept_as_nan_for_data_checks():
    bars = load_bars(DATA / "sample_bars.csv")
    holiday = bars[bars["timestamp"] == pd.Timestamp("2024-01-04", tz="UTC")]
    assert holiday["symbol"].tolist() == ["MSFT"]
    assert holiday[["open", "high", "low", "close", "volume"]].isna().all().all()


def test_load_when_parquet_then_same_frame_as_written(tmp_path, synthetic_bars):
    path = tmp_path / "bars.parquet"
    synthetic_bars.to_parquet(path)
    pd.testing.assert_frame_equal(load_bars(path), synthetic_bars)


def test_load_when_csv_round_trip_then_same_frame(tmp_path, synthetic_bars):
    path = tmp_path / "bars.csv"
    synthetic_bars.to_csv(path, index=False)
    pd.testing.assert_frame_equal(load_bars(path), synthetic_bars, check_exact=False, rtol=1e-12)


def test_load_when_directory_of_symbol_files_then_symbol_is_upper_cased_stem():
    bars = load_bars(DATA / "per_symbol")
    assert sorted(bars["symbol"].unique()) == ["MSFT", "SPY"]
    assert bars["timestamp"].iloc[0] == pd.Timestamp("2024-01-02 14:30", tz="UTC")
    assert len(bars) == 4


def test_load_when_directory_mixes_parquet_and_csv_then_all_symbols_loaded(tmp_path, synthetic_bars):
    for symbol, group in synthetic_bars.groupby("symbol"):
        frame = group.drop(columns=["symbol"]).rename(columns={"timestamp": "Date"})
        if symbol.startswith("SYM0"):
            frame.to_parquet(tmp_path / f"{symbol.lower()}.parquet")
        else:
            frame.to_csv(tmp_path / f"{symbol}.csv", index=False)
    pd.testing.assert_frame_equal(load_bars(tmp_path), synthetic_bars, check_exact=False, rtol=1e-12)


def test_load_when_timestamps_naive_or_offset_then_converted_to_utc(tmp_path):
    path = tmp_path / "bars.csv"
    path.write_text(
        "time,symbol,open,high,low,close,volume\n"
        "2024-03-01 09:30:00-05:00,ABC,1,2,0.5,1.5,10\n"
        "2024-03-01 15:00:00,ABC,1,2,0.5,1.5,10\n"
    )
    bars = load_bars(path)
    assert bars["timestamp"].tolist() == [
        pd.Timestamp("2024-03-01 14:30", tz="UTC"),
        pd.Timestamp("2024-03-01 15:00", tz="UTC"),
    ]


def test_load_when_date_and_time_columns_split_then_combined(tmp_path):
    path = tmp_path / "intraday.csv"
    path.write_text("Date,Time,Ticker,Open,High,Low,Close,Volume\n2024-03-01,14:35,abc,1,2,0.5,1.5,10\n")
    bars = load_bars(path)
    assert bars["timestamp"].iloc[0] == pd.Timestamp("2024-03-01 14:35", tz="UTC")
    assert bars["symbol"].iloc[0] == "ABC"


def test_load_when_columns_missing_then_error_names_file_and_columns(tmp_path):
    path = tmp_path / "thin.csv"
    path.write_text("date,symbol,close\n2024-01-02,ABC,1.0\n")
    with pytest.raises(MarketDataError) as info:
        load_bars(path)
    message = str(info.value)
    assert "thin.csv" in message
    assert "['open', 'high', 'low', 'volume']" in message


def test_load_when_timestamp_unparseable_then_error_names_rows_and_lines(tmp_path):
    path = tmp_path / "bad_time.csv"
    path.write_text(
        "date,symbol,open,high,low,close,volume\n"
        "2024-01-02,ABC,1,2,0.5,1.5,10\n"
        "not-a-date,ABC,1,2,0.5,1.5,10\n"
        "2024-01-04,ABC,1,2,0.5,1.5,10\n"
        ",ABC,1,2,0.5,1.5,10\n"
    )
    with pytest.raises(MarketDataError) as info:
        load_bars(path)
    message = str(info.value)
    assert "bad_time.csv" in message and "timestamp" in message
    assert "1 (line 3)" in message and "3 (line 5)" in message
    assert "not-a-date" in message


def test_load_when_price_not_numeric_then_error_names_column_and_row(tmp_path):
    path = tmp_path / "bad_price.csv"
    path.write_text("date,symbol,open,high,low,close,volume\n2024-01-02,ABC,1,2,0.5,one,10\n")
    with pytest.raises(MarketDataError, match=r"bad_price.csv: column 'close' is not numeric in rows 0 \(line 2\)"):
        load_bars(path)


def test_load_when_parquet_lacks_symbol_then_error_mentions_aliases(tmp_path):
    path = tmp_path / "nosym.parquet"
    pd.DataFrame({"date": pd.to_datetime(["2024-01-02"]), "open": [1.0], "high": [1.0], "low": [1.0],
                  "close": [1.0], "volume": [1.0]}).to_parquet(path)
    with pytest.raises(MarketDataError, match=r"nosym.parquet: missing columns \['symbol'\].*ticker"):
        load_bars(path)


def test_load_when_per_symbol_file_disagrees_with_its_name_then_error(tmp_path):
    (tmp_path / "abc.csv").write_text("date,symbol,open,high,low,close,volume\n2024-01-02,XYZ,1,2,0.5,1.5,10\n")
    with pytest.raises(MarketDataError, match=r"abc.csv: file name says symbol 'ABC'.*'XYZ'"):
        load_bars(tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("missing.csv", None, "no such file"),
        ("", None, "holds no .csv"),
        ("bars.json", "{}", "unsupported file type"),
        ("empty.csv", "date,symbol,open,high,low,close,volume\n", "no rows"),
        ("blank.csv", "", "cannot read"),
    ],
)
def test_load_when_path_unusable_then_market_data_error(tmp_path, name, content, pattern):
    target = tmp_path / name
    if content is not None:
        target.write_text(content)
    with pytest.raises(MarketDataError, match=pattern):
        load_bars(target)


def test_load_when_columns_repeat_case_insensitively_then_error(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("date,symbol,open,Open,high,low,close,volume\n2024-01-02,ABC,1,1,2,0.5,1.5,10\n")
    with pytest.raises(MarketDataError, match=r"\['open'\] appear more than once"):
        load_bars(path)


def test_load_when_volume_zero_then_kept(tmp_path):
    path = tmp_path / "zero.csv"
    path.write_text("date,symbol,open,high,low,close,volume\n2024-01-02,ABC,1,2,0.5,1.5,0\n")
    assert load_bars(path)["volume"].tolist() == [0.0]
    assert np.isfinite(load_bars(path)["close"]).all()
