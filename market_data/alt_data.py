"""Alternative data for HybridRLObservation v2: per-symbol news sentiment and macro series.

Sources answer "the records published in [start, end)":
  sentiment: (timestamp, symbol, score in [-1, 1], article_count >= 0)
  macro:     (timestamp, series, value) for the series of contracts.features.MACRO_SERIES (percent):
             rate_10y, rate_2y (treasury yields) and credit_spread (investment-grade spread).
The synthetic sources (the default) are deterministic from a seed and defined for every hour and every symbol, so
they cover whatever span and universe the synthetic market has; an hour's records do not depend on the window
asked for (an hour-by-hour backfill equals one bulk pull). File sources read CSV/Parquet with validated columns.

`FeedStore` keeps the materialised batches as Parquet under `<MARLOPS_HOME>/feeds/<feed>/<YYYY-MM-DD>.parquet`;
writing an hour replaces that hour's records (idempotent). `AltFeeds` is the as-of reader: the latest record at or
before a time, and its age. Training and serving read through the same `AltFeeds.*_asof` lookups.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from contracts.features import MACRO_SERIES
from market_data.errors import MarketDataError

logger = logging.getLogger(__name__)

SENTIMENT = "sentiment"
MACRO = "macro"
FEEDS: tuple[str, ...] = (SENTIMENT, MACRO)
SENTIMENT_COLUMNS: tuple[str, ...] = ("timestamp", "symbol", "score", "article_count")
MACRO_COLUMNS: tuple[str, ...] = ("timestamp", "series", "value")
_KEY_COLUMN = {SENTIMENT: "symbol", MACRO: "series"}
_COLUMNS = {SENTIMENT: SENTIMENT_COLUMNS, MACRO: MACRO_COLUMNS}
HOUR = pd.Timedelta(hours=1)
# Synthetic macro series publish once a day at this hour (UTC), every calendar day: a daily bar closing at 21:00
# UTC then sees a 7-hour-old value, far inside the default 72-hour freshness limit.
SYNTHETIC_MACRO_HOUR_UTC = 14


class AltDataError(MarketDataError):
    """Alternative data cannot be read, validated or stored; messages name the file/feed and the rows."""


class AltDataFileError(AltDataError):
    """A sentiment/macro file lacks columns or holds invalid rows."""


# ------------------------------------------------------------------------------------------------ sources


@runtime_checkable
class SentimentSource(Protocol):
    def sentiment(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Records published in [start, end): columns SENTIMENT_COLUMNS, sorted by (timestamp, symbol)."""
        ...


@runtime_checkable
class MacroSource(Protocol):
    def macro(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Records published in [start, end): columns MACRO_COLUMNS, sorted by (timestamp, series)."""
        ...


def _utc(value: object, what: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    if ts.tzinfo is None:
        raise AltDataError(f"{what} {ts} is naive: pass tz-aware UTC times")
    return ts.tz_convert("UTC")


def _hours(start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    """Whole hours since the epoch whose top lies in [start, end)."""
    first = math.ceil(_utc(start, "start").value / HOUR.value)
    last = math.ceil(_utc(end, "end").value / HOUR.value)  # exclusive
    return np.arange(first, max(first, last), dtype=np.int64)


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a window-independent, platform-independent hash of (seed, stream, key, hour)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def _uniform(seed: int, stream: str, key: str, hours: np.ndarray) -> np.ndarray:
    """[len(hours)] uniforms in [0, 1), one per hour, from the hash of (seed, stream, key, hour)."""
    salt = _mix(np.array([(seed & 0xFFFFFFFF) << 32 | zlib.crc32(f"{stream}/{key}".encode())], dtype=np.uint64))
    bits = _mix(hours.astype(np.uint64) ^ salt)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _phase(seed: int, stream: str, key: str) -> float:
    return float(_uniform(seed, stream, key, np.array([-1], dtype=np.int64))[0]) * 2 * math.pi


def _stamps(hours: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(hours * HOUR.value, tz="UTC").as_unit("ns")


@dataclass(frozen=True)
class SyntheticSentimentSource:
    """Hourly sentiment for every symbol: a slow per-symbol cycle (20-day period) plus hashed noise."""

    symbols: tuple[str, ...]
    seed: int = 11

    def sentiment(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        hours = _hours(start, end)
        frames = []
        for symbol in sorted(self.symbols):
            cycle = np.sin(2 * math.pi * hours / (24 * 20) + _phase(self.seed, "sentiment-phase", symbol))
            noise = 2.0 * _uniform(self.seed, "sentiment-noise", symbol, hours) - 1.0
            counts = np.floor(_uniform(self.seed, "sentiment-count", symbol, hours) * 6.0).astype(np.int64) + 1
            frames.append(pd.DataFrame({"timestamp": _stamps(hours), "symbol": symbol,
                                        "score": np.tanh(0.8 * cycle + 0.6 * noise), "article_count": counts}))
        return _sorted(SENTIMENT, frames)


# (level, amplitude of the yearly cycle, amplitude of the 41-day cycle) per series, percent.
_MACRO_SHAPES = {"rate_10y": (3.8, 0.9, 0.15), "rate_2y": (3.2, 1.1, 0.2), "credit_spread": (1.3, 0.4, 0.1)}


@dataclass(frozen=True)
class SyntheticMacroSource:
    """MACRO_SERIES once a day at SYNTHETIC_MACRO_HOUR_UTC: seeded smooth cycles plus a little hashed noise."""

    seed: int = 11

    def macro(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        hours = _hours(start, end)
        hours = hours[hours % 24 == SYNTHETIC_MACRO_HOUR_UTC]
        frames = []
        for series in sorted(MACRO_SERIES):
            level, yearly, monthly = _MACRO_SHAPES[series]
            value = (level + yearly * np.sin(2 * math.pi * hours / (24 * 365) + _phase(self.seed, "macro-y", series))
                     + monthly * np.sin(2 * math.pi * hours / (24 * 41) + _phase(self.seed, "macro-m", series))
                     + 0.02 * (_uniform(self.seed, "macro-noise", series, hours) - 0.5))
            frames.append(pd.DataFrame({"timestamp": _stamps(hours), "series": series, "value": value}))
        return _sorted(MACRO, frames)


def _empty(feed: str) -> pd.DataFrame:
    dtypes = {"timestamp": "datetime64[ns, UTC]", "symbol": object, "series": object, "score": np.float64,
              "article_count": np.int64, "value": np.float64}
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in _COLUMNS[feed]})


def _sorted(feed: str, frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return _empty(feed)
    out = pd.concat(frames, ignore_index=True)
    out["timestamp"] = pd.DatetimeIndex(out["timestamp"]).as_unit("ns")
    return out.sort_values(["timestamp", _KEY_COLUMN[feed]], kind="mergesort").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- file sources


def _rows(bad: np.ndarray, limit: int = 5) -> str:
    # 1-based data rows (the CSV header is not counted), as a person finds them in the file.
    shown = ", ".join(str(int(i) + 1) for i in bad[:limit])
    return shown + (f" and {len(bad) - limit} more" if len(bad) > limit else "")


def validate_records(feed: str, frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Columns, types and ranges of one feed's records; errors name `origin` and the data rows (1-based)."""
    if feed not in FEEDS:
        raise AltDataError(f"unknown feed {feed!r}; known: {list(FEEDS)}")
    columns = _COLUMNS[feed]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AltDataFileError(f"{origin}: lacks columns {missing} (a {feed} file needs {list(columns)})")
    frame = frame.loc[:, list(columns)].reset_index(drop=True)
    problems: list[str] = []

    def flag(mask: np.ndarray, what: str) -> None:
        bad = np.flatnonzero(mask)
        if len(bad):
            problems.append(f"rows {_rows(bad)}: {what}")

    # Naive timestamps are read as UTC (the files' documented convention); unparseable ones are refused.
    stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="mixed")
    flag(stamps.isna().to_numpy(), "timestamp missing or not a date-time")
    key = _KEY_COLUMN[feed]
    keys = frame[key]
    flag(~keys.map(lambda v: isinstance(v, str) and v.strip() != "").to_numpy(dtype=bool), f"{key} empty")
    if feed == SENTIMENT:
        score = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=np.float64)
        flag(~np.isfinite(score), "score missing or not a number")
        flag(np.isfinite(score) & (np.abs(score) > 1.0), "score outside [-1, 1]")
        count = pd.to_numeric(frame["article_count"], errors="coerce").to_numpy(dtype=np.float64)
        flag(~np.isfinite(count) | (count < 0) | (np.isfinite(count) & (count != np.round(count))),
             "article_count not a whole number >= 0")
    else:
        flag(~keys.isin(MACRO_SERIES).to_numpy(), f"series not one of {list(MACRO_SERIES)}")
        value = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=np.float64)
        flag(~np.isfinite(value), "value missing or not a number")
    if not problems:
        dup = pd.DataFrame({"t": stamps, "k": keys}).duplicated(keep="first").to_numpy()
        flag(dup, f"more than one record for the same (timestamp, {key})")
    if problems:
        raise AltDataFileError(f"{origin}: invalid {feed} records: " + "; ".join(problems))
    out = frame.assign(timestamp=stamps)
    if feed == SENTIMENT:
        out = out.assign(score=score, article_count=count.astype(np.int64))
    else:
        out = out.assign(value=value)
    return _sorted(feed, [out])


def read_records_file(feed: str, path: Path) -> pd.DataFrame:
    """A validated CSV or Parquet file of one feed."""
    path = Path(path)
    if not path.is_file():
        raise AltDataFileError(f"{path}: {feed} file not found")
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
        else:
            raise AltDataFileError(f"{path}: a {feed} file must be .csv or .parquet")
    except (OSError, ValueError) as exc:
        raise AltDataFileError(f"{path}: unreadable {feed} file: {exc}") from exc
    return validate_records(feed, frame, str(path))


def _window(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    start, end = _utc(start, "start"), _utc(end, "end")
    return frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end)].reset_index(drop=True)


class FileSentimentSource:
    """Sentiment records from a CSV/Parquet file (columns SENTIMENT_COLUMNS), validated once when opened."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._records = read_records_file(SENTIMENT, self.path)

    def sentiment(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return _window(self._records, start, end)


class FileMacroSource:
    """Macro records from a CSV/Parquet file (columns MACRO_COLUMNS), validated once when opened."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._records = read_records_file(MACRO, self.path)

    def macro(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        return _window(self._records, start, end)


def sentiment_source(spec: str, *, symbols: Sequence[str], seed: int) -> SentimentSource:
    """`synthetic` (the default, for `symbols`) or a path to a CSV/Parquet sentiment file."""
    if spec == "synthetic":
        return SyntheticSentimentSource(tuple(symbols), seed=seed)
    return FileSentimentSource(Path(spec))


def macro_source(spec: str, *, seed: int) -> MacroSource:
    """`synthetic` (the default) or a path to a CSV/Parquet macro file."""
    if spec == "synthetic":
        return SyntheticMacroSource(seed=seed)
    return FileMacroSource(Path(spec))


def pull(feed: str, source: SentimentSource | MacroSource, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """One source's records in [start, end), validated (a source's bugs stop here, not in the features)."""
    frame = source.sentiment(start, end) if feed == SENTIMENT else source.macro(start, end)  # type: ignore[union-attr]
    records = validate_records(feed, frame, f"{type(source).__name__} [{start}, {end})")
    outside = (records["timestamp"] < _utc(start, "start")) | (records["timestamp"] >= _utc(end, "end"))
    if outside.any():
        raise AltDataError(f"{type(source).__name__} returned {int(outside.sum())} {feed} records outside "
                           f"[{start}, {end})")
    return records


# ------------------------------------------------------------------------------------------------ the store


class FeedStore:
    """Materialised batches: `<root>/<feed>/<YYYY-MM-DD>.parquet` (UTC days), one writer at a time.

    `write(feed, start, end, records)` replaces every record of [start, end) (whole hours), so materialising
    an hour twice leaves the same file. Each write touches `<root>/<feed>/.updated`, which readers watch.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def under(cls, state_root: Path) -> FeedStore:
        """The store of a marlops state directory (StatePaths.root, i.e. MARLOPS_HOME): `<root>/feeds`."""
        return cls(Path(state_root) / "feeds")

    def _dir(self, feed: str) -> Path:
        if feed not in FEEDS:
            raise AltDataError(f"unknown feed {feed!r}; known: {list(FEEDS)}")
        return self.root / feed

    def write(self, feed: str, start: pd.Timestamp, end: pd.Timestamp, records: pd.DataFrame) -> int:
        """Replace the records of [start, end) (hour-aligned) with `records`; returns the rows written."""
        start, end = _utc(start, "start"), _utc(end, "end")
        if start.value % HOUR.value or end.value % HOUR.value or end <= start:
            raise AltDataError(f"{feed} batch [{start}, {end}) must span whole hours, start before end")
        records = validate_records(feed, records, f"{feed} batch [{start}, {end})")
        if ((records["timestamp"] < start) | (records["timestamp"] >= end)).any():
            raise AltDataError(f"{feed} batch [{start}, {end}) holds records outside its hours")
        directory = self._dir(feed)
        directory.mkdir(parents=True, exist_ok=True)
        day = start.floor("D")
        while day < end:
            following = day + pd.Timedelta(days=1)
            path = directory / f"{day.strftime('%Y-%m-%d')}.parquet"
            kept = self._read_file(feed, path) if path.exists() else _empty(feed)
            lo, hi = max(start, day), min(end, following)
            kept = kept[(kept["timestamp"] < lo) | (kept["timestamp"] >= hi)]
            fresh = records[(records["timestamp"] >= day) & (records["timestamp"] < following)]
            merged = _sorted(feed, [kept, fresh])
            if len(merged):
                partial = path.with_name(path.name + ".partial")
                merged.to_parquet(partial, index=False)
                os.replace(partial, path)  # readers see the old day or the new one, never half of it
            elif path.exists():
                path.unlink()
            day = following
        # A fresh token per write (not an mtime, which a coarse clock could leave unchanged between two writes).
        (directory / ".updated").write_text(f"{pd.Timestamp.now(tz='UTC').isoformat()} {uuid.uuid4().hex}")
        logger.info("feed store: %d %s records for [%s, %s)", len(records), feed, start, end)
        return len(records)

    @staticmethod
    def _read_file(feed: str, path: Path) -> pd.DataFrame:
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise AltDataError(f"{path}: unreadable {feed} batch: {exc}") from exc
        frame["timestamp"] = pd.DatetimeIndex(frame["timestamp"]).tz_convert("UTC").as_unit("ns")
        return frame

    def read(self, feed: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> pd.DataFrame:
        """The stored records of [start, end) (all when None), sorted by (timestamp, key)."""
        directory = self._dir(feed)
        files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
        if start is not None:
            first = _utc(start, "start").strftime("%Y-%m-%d")
            files = [f for f in files if f.stem >= first]
        if end is not None:
            last = _utc(end, "end").strftime("%Y-%m-%d")
            files = [f for f in files if f.stem <= last]
        frame = _sorted(feed, [self._read_file(feed, f) for f in files])
        if start is not None or end is not None:
            lo = _utc(start, "start") if start is not None else frame["timestamp"].min()
            hi = _utc(end, "end") if end is not None else frame["timestamp"].max() + HOUR
            frame = _window(frame, lo, hi) if len(frame) else frame
        return frame

    def version(self, feed: str) -> str:
        """Changes whenever a batch of `feed` is written (readers reload then); "" before the first."""
        marker = self._dir(feed) / ".updated"
        try:
            return marker.read_text()
        except FileNotFoundError:
            return ""


def materialise(feed: str, source: SentimentSource | MacroSource, store: FeedStore, start: pd.Timestamp,
                end: pd.Timestamp) -> dict[str, object]:
    """Pull [start, end) from `source` into `store`; what the Dagster assets report as metadata."""
    records = pull(feed, source, start, end)
    store.write(feed, start, end, records)
    key = _KEY_COLUMN[feed]
    latest = records["timestamp"].max() if len(records) else None
    return {"rows": len(records), "keys": sorted(str(k) for k in records[key].unique()),
            "latest_timestamp": latest.isoformat() if latest is not None else "",
            "start": _utc(start, "start").isoformat(), "end": _utc(end, "end").isoformat()}


# ----------------------------------------------------------------------------------------------- as-of reads


@dataclass(frozen=True)
class AsOf:
    """As-of values at each (time, key): the latest record at or before the time, and its age in hours.
    No record yet: values NaN and age +inf."""

    values: np.ndarray  # [T, K, V] float64
    age_hours: np.ndarray  # [T, K] float64


class AsOfTable:
    """One feed's records, per key sorted by time, for as-of lookups (the same lookup in training and serving)."""

    def __init__(self, frame: pd.DataFrame, key: str, value_columns: Sequence[str]) -> None:
        self.value_columns = tuple(value_columns)
        self._by_key: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if len(frame):
            stamps = pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8
            values = frame.loc[:, list(self.value_columns)].to_numpy(dtype=np.float64)
            keys = frame[key].to_numpy()
            order = np.lexsort((stamps, keys))
            stamps, values, keys = stamps[order], values[order], keys[order]
            bounds = np.flatnonzero(keys[1:] != keys[:-1]) + 1
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(keys)]):
                self._by_key[str(keys[lo])] = (stamps[lo:hi], values[lo:hi])

    def lookup(self, times: pd.DatetimeIndex, keys: Sequence[str]) -> AsOf:
        at = pd.DatetimeIndex(times).as_unit("ns").asi8
        values = np.full((len(at), len(keys), len(self.value_columns)), np.nan)
        age = np.full((len(at), len(keys)), np.inf)
        for j, name in enumerate(keys):
            held = self._by_key.get(name)
            if held is None:
                continue
            stamps, vals = held
            idx = np.searchsorted(stamps, at, side="right") - 1
            found = idx >= 0
            values[found, j] = vals[idx[found]]
            age[found, j] = (at[found] - stamps[idx[found]]) / HOUR.value
        return AsOf(values=values, age_hours=age)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_key))


class AltFeeds:
    """The as-of reader the feature service and training join v2 features from (features.alt_features.AltProvider).

    Built from frames (`from_frames`), straight from sources over a span (`from_sources`, training), or from the
    FeedStore (`from_store`: re-reads the store whenever a new batch lands, so a live service sees each hour)."""

    def __init__(self, sentiment: pd.DataFrame, macro: pd.DataFrame, *, store: FeedStore | None = None) -> None:
        self._store = store
        self._load(sentiment, macro)
        self._versions = self._store_versions()

    def _load(self, sentiment: pd.DataFrame, macro: pd.DataFrame) -> None:
        self._sentiment = AsOfTable(sentiment, "symbol", ("score", "article_count"))
        self._macro = AsOfTable(macro, "series", ("value",))

    def _store_versions(self) -> tuple[str, ...]:
        return tuple(self._store.version(f) for f in FEEDS) if self._store is not None else ()

    @classmethod
    def from_frames(cls, sentiment: pd.DataFrame, macro: pd.DataFrame) -> AltFeeds:
        return cls(validate_records(SENTIMENT, sentiment, "sentiment frame"),
                   validate_records(MACRO, macro, "macro frame"))

    @classmethod
    def from_sources(cls, sentiment: SentimentSource, macro: MacroSource, start: pd.Timestamp,
                     end: pd.Timestamp) -> AltFeeds:
        return cls(pull(SENTIMENT, sentiment, start, end), pull(MACRO, macro, start, end))

    @classmethod
    def from_store(cls, store: FeedStore) -> AltFeeds:
        return cls(store.read(SENTIMENT), store.read(MACRO), store=store)

    def _refresh(self) -> None:
        if self._store is None:
            return
        versions = self._store_versions()
        if versions != self._versions:
            self._load(self._store.read(SENTIMENT), self._store.read(MACRO))
            self._versions = versions

    def sentiment_asof(self, times: pd.DatetimeIndex, symbols: Sequence[str]) -> AsOf:
        """values [T, N, 2]: (score, article_count) of the latest record at or before each time."""
        self._refresh()
        return self._sentiment.lookup(times, symbols)

    def macro_asof(self, times: pd.DatetimeIndex, series: Sequence[str]) -> AsOf:
        """values [T, S, 1]: the latest value of each series at or before each time."""
        self._refresh()
        return self._macro.lookup(times, series)


def synthetic_feeds(symbols: Sequence[str], start: pd.Timestamp, end: pd.Timestamp, *, seed: int = 11) -> AltFeeds:
    """The default sources' records over [start, end) (a little history before the first bar is included by the
    caller choosing `start`)."""
    return AltFeeds.from_sources(SyntheticSentimentSource(tuple(symbols), seed=seed), SyntheticMacroSource(seed=seed),
                                 start, end)


def configured_source(feed: str, sentiment_spec: str, macro_spec: str, *, symbols: Sequence[str],
                      seed: int) -> SentimentSource | MacroSource:
    """The source of `feed` named by the config (`synthetic` or a file path)."""
    if feed == SENTIMENT:
        return sentiment_source(sentiment_spec, symbols=symbols, seed=seed)
    if feed == MACRO:
        return macro_source(macro_spec, seed=seed)
    raise AltDataError(f"unknown feed {feed!r}; known: {list(FEEDS)}")


def materialise_hour(feed: str, *, sentiment_spec: str, macro_spec: str, seed: int, symbols: Sequence[str],
                     state_root: Path, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, object]:
    """What the hourly Dagster assets run: pull [start, end) of `feed` from the configured source into the
    FeedStore under `state_root` (MARLOPS_HOME); re-running an hour rewrites the same records."""
    source = configured_source(feed, sentiment_spec, macro_spec, symbols=symbols, seed=seed)
    store = FeedStore.under(state_root)
    return materialise(feed, source, store, start, end) | {"store": str(store.root / feed)}
