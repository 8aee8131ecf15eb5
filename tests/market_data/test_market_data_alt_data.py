"""Sentiment and macro sources, file validation, the feed store and the as-of reader."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contracts.features import MACRO_SERIES
from market_data.alt_data import (
    MACRO,
    SENTIMENT,
    AltDataError,
    AltDataFileError,
    AltFeeds,
    FeedStore,
    FileMacroSource,
    FileSentimentSource,
    MacroSource,
    SentimentSource,
    SyntheticMacroSource,
    SyntheticSentimentSource,
    materialise,
)
from market_data.synthetic import SyntheticConfig, generate_synthetic_market, symbol_names

T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")
H = pd.Timedelta(hours=1)
SYMBOLS = ("SYM00", "SYM01", "SYM02")


def test_synthetic_sources_when_pulled_hour_by_hour_then_equal_one_bulk_pull() -> None:
    source = SyntheticSentimentSource(SYMBOLS, seed=4)
    bulk = source.sentiment(T0, T0 + 30 * H)
    hourly = pd.concat([source.sentiment(T0 + k * H, T0 + (k + 1) * H) for k in range(30)], ignore_index=True)
    pd.testing.assert_frame_equal(bulk, hourly.sort_values(["timestamp", "symbol"]).reset_index(drop=True))
    assert len(bulk) == 30 * len(SYMBOLS)
    assert bulk["score"].between(-1, 1).all() and (bulk["article_count"] >= 1).all()
    assert isinstance(source, SentimentSource) and isinstance(SyntheticMacroSource(), MacroSource)


def test_synthetic_sources_when_seed_changes_then_records_change_and_same_seed_repeats() -> None:
    a = SyntheticSentimentSource(SYMBOLS, seed=1).sentiment(T0, T0 + 5 * H)
    b = SyntheticSentimentSource(SYMBOLS, seed=1).sentiment(T0, T0 + 5 * H)
    c = SyntheticSentimentSource(SYMBOLS, seed=2).sentiment(T0, T0 + 5 * H)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["score"], c["score"])


def test_synthetic_sources_when_market_span_asked_then_every_bar_has_fresh_records() -> None:
    bars = generate_synthetic_market(SyntheticConfig(n_symbols=3, n_days=40, seed=2)).bars
    first, last = bars["timestamp"].min(), bars["timestamp"].max()
    feeds = AltFeeds.from_sources(SyntheticSentimentSource(symbol_names(3)), SyntheticMacroSource(),
                                  first - pd.Timedelta(days=2), last + H)
    stamps = pd.DatetimeIndex(np.sort(bars["timestamp"].unique()))
    sentiment = feeds.sentiment_asof(stamps, symbol_names(3))
    macro = feeds.macro_asof(stamps, MACRO_SERIES)
    assert sentiment.age_hours.max() <= 1.0 and macro.age_hours.max() <= 24.0
    assert np.isfinite(sentiment.values).all() and np.isfinite(macro.values).all()


def test_macro_synthetic_when_a_day_pulled_then_one_record_per_series_at_the_publication_hour() -> None:
    records = SyntheticMacroSource(seed=3).macro(T0, T0 + 24 * H)
    assert sorted(records["series"]) == sorted(MACRO_SERIES)
    assert (records["timestamp"] == T0 + 14 * H).all()


def _write(tmp_path: Path, name: str, frame: pd.DataFrame) -> Path:
    path = tmp_path / name
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def test_file_source_when_valid_csv_then_window_is_half_open(tmp_path: Path) -> None:
    frame = pd.DataFrame({"timestamp": ["2024-03-04T00:00:00Z", "2024-03-04T01:00:00Z", "2024-03-04T02:00:00Z"],
                          "symbol": ["AAA", "AAA", "BBB"], "score": [0.5, -0.2, 1.0], "article_count": [3, 0, 7]})
    source = FileSentimentSource(_write(tmp_path, "s.csv", frame))
    got = source.sentiment(T0, T0 + 2 * H)
    assert got["score"].tolist() == [0.5, -0.2] and got["article_count"].dtype == np.int64


def test_file_source_when_parquet_macro_valid_then_read(tmp_path: Path) -> None:
    frame = pd.DataFrame({"timestamp": pd.DatetimeIndex([T0, T0], tz="UTC"), "series": ["rate_10y", "rate_2y"],
                          "value": [4.1, 3.9]})
    got = FileMacroSource(_write(tmp_path, "m.parquet", frame)).macro(T0, T0 + H)
    assert got["value"].tolist() == [4.1, 3.9]


def test_file_source_when_columns_missing_then_error_names_them(tmp_path: Path) -> None:
    frame = pd.DataFrame({"timestamp": ["2024-03-04T00:00:00Z"], "symbol": ["AAA"], "score": [0.1]})
    with pytest.raises(AltDataFileError, match=r"lacks columns \['article_count'\]"):
        FileSentimentSource(_write(tmp_path, "s.csv", frame))


def test_file_source_when_rows_invalid_then_error_names_each_row_and_problem(tmp_path: Path) -> None:
    frame = pd.DataFrame({"timestamp": ["2024-03-04T00:00:00Z", "not a time", "2024-03-04T02:00:00Z",
                                        "2024-03-04T03:00:00Z"],
                          "symbol": ["AAA", "AAA", "", "AAA"], "score": [1.5, 0.1, 0.2, float("nan")],
                          "article_count": [1, 2, -1, 2.5]})
    with pytest.raises(AltDataFileError) as err:
        FileSentimentSource(_write(tmp_path, "s.csv", frame))
    message = str(err.value)
    assert "s.csv" in message
    assert "rows 2: timestamp missing or not a date-time" in message
    assert "rows 3: symbol empty" in message
    assert "rows 1: score outside [-1, 1]" in message
    assert "rows 4: score missing or not a number" in message
    assert "rows 3, 4: article_count not a whole number >= 0" in message


def test_file_source_when_macro_series_unknown_or_duplicated_then_refused(tmp_path: Path) -> None:
    unknown = pd.DataFrame({"timestamp": ["2024-03-04T00:00:00Z"], "series": ["gdp"], "value": [1.0]})
    with pytest.raises(AltDataFileError, match=r"rows 1: series not one of"):
        FileMacroSource(_write(tmp_path, "m.csv", unknown))
    twice = pd.DataFrame({"timestamp": ["2024-03-04T00:00:00Z"] * 2, "series": ["rate_2y"] * 2, "value": [1.0, 2.0]})
    with pytest.raises(AltDataFileError, match=r"rows 2: more than one record for the same \(timestamp, series\)"):
        FileMacroSource(_write(tmp_path, "m2.csv", twice))


def test_file_source_when_suffix_unknown_or_missing_then_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AltDataFileError, match="file not found"):
        FileMacroSource(tmp_path / "nope.csv")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(AltDataFileError, match=r"must be \.csv or \.parquet"):
        FileMacroSource(tmp_path / "m.txt")


def test_store_when_hour_written_twice_then_same_records_once(tmp_path: Path) -> None:
    store = FeedStore.under(tmp_path)
    source = SyntheticSentimentSource(SYMBOLS, seed=4)
    for _ in range(2):
        facts = materialise(SENTIMENT, source, store, T0 + 5 * H, T0 + 6 * H)
    assert facts["rows"] == len(SYMBOLS) and facts["keys"] == list(SYMBOLS)
    assert facts["latest_timestamp"] == (T0 + 5 * H).isoformat()
    stored = store.read(SENTIMENT)
    pd.testing.assert_frame_equal(stored, source.sentiment(T0 + 5 * H, T0 + 6 * H))
    assert (tmp_path / "feeds" / "sentiment" / "2024-03-04.parquet").is_file()


def test_store_when_appended_hour_by_hour_across_days_then_equals_bulk(tmp_path: Path) -> None:
    store = FeedStore(tmp_path / "feeds")
    source = SyntheticSentimentSource(SYMBOLS, seed=4)
    start = T0 + 20 * H
    for k in range(8):  # crosses midnight into the next day's file
        materialise(SENTIMENT, source, store, start + k * H, start + (k + 1) * H)
    pd.testing.assert_frame_equal(store.read(SENTIMENT), source.sentiment(start, start + 8 * H))
    pd.testing.assert_frame_equal(store.read(SENTIMENT, start + 2 * H, start + 5 * H),
                                  source.sentiment(start + 2 * H, start + 5 * H))
    assert len(list((tmp_path / "feeds" / "sentiment").glob("*.parquet"))) == 2


def test_store_when_batch_not_hour_aligned_or_records_outside_then_refused(tmp_path: Path) -> None:
    store = FeedStore(tmp_path)
    records = SyntheticMacroSource().macro(T0, T0 + 24 * H)
    with pytest.raises(AltDataError, match="whole hours"):
        store.write(MACRO, T0 + pd.Timedelta(minutes=30), T0 + 2 * H, records.iloc[:0])
    with pytest.raises(AltDataError, match="records outside its hours"):
        store.write(MACRO, T0, T0 + H, records)


def test_asof_when_reading_store_then_latest_record_at_or_before_and_its_age(tmp_path: Path) -> None:
    store = FeedStore(tmp_path)
    source = SyntheticSentimentSource(SYMBOLS, seed=4)
    materialise(SENTIMENT, source, store, T0, T0 + 3 * H)
    feeds = AltFeeds.from_store(store)
    at = pd.DatetimeIndex([T0 + 2 * H + pd.Timedelta(minutes=30), T0 - H])
    got = feeds.sentiment_asof(at, ["SYM01", "ZZZ"])
    expected = source.sentiment(T0 + 2 * H, T0 + 3 * H).set_index("symbol").loc["SYM01"]
    assert got.values[0, 0, 0] == expected["score"] and got.values[0, 0, 1] == expected["article_count"]
    assert got.age_hours[0, 0] == 0.5
    assert np.isnan(got.values[1]).all() and np.isinf(got.age_hours[1]).all() and np.isinf(got.age_hours[0, 1])


def test_asof_when_store_gains_an_hour_then_reader_sees_it_without_rebuilding(tmp_path: Path) -> None:
    store = FeedStore(tmp_path)
    source = SyntheticSentimentSource(SYMBOLS, seed=4)
    materialise(SENTIMENT, source, store, T0, T0 + H)
    feeds = AltFeeds.from_store(store)
    at = pd.DatetimeIndex([T0 + 3 * H])
    assert feeds.sentiment_asof(at, ["SYM00"]).age_hours[0, 0] == 3.0
    materialise(SENTIMENT, source, store, T0 + 2 * H, T0 + 3 * H)
    assert feeds.sentiment_asof(at, ["SYM00"]).age_hours[0, 0] == 1.0
