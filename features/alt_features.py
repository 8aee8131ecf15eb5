"""The HybridRLObservation v2 join: as-of news sentiment per (bar, symbol) and macro series per bar.

One code path for training (`ObservationBuilder.training_tensors`, `fit_feature_spec`) and serving
(`FeatureService._snapshot`): the provider's as-of lookup at the bar's timestamp, then the raw features
  sentiment_score       the latest score at or before the bar
  sentiment_count_log   log(1 + article count) of that record
  macro_<series>        the latest value of each MACRO_SERIES at or before the bar
Stale fallback: a record older than the spec's max age (measured from the bar's timestamp; none at all counts as
stale) is not used: the raw feature takes the spec's training mean, so its normalised value is exactly 0 (neutral)
and never NaN. The join reports every stale feed (`stale_feeds`: "sentiment:<SYMBOL>" / "macro:<series>" -> age
in hours, inf when nothing was ever published) so the trading service can alert (ALT_FEED_STALE); the policy
trades on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from contracts.features import MACRO_FEATURES, MACRO_SERIES, SENTIMENT_FEATURES, FeatureBlock, FeatureSpec
from features.errors import FeatureError, MissingDataError

ALT_FEED_STALE = "ALT_FEED_STALE"  # the alert the trading service raises when a snapshot reports stale feeds
DEFAULT_SENTIMENT_MAX_AGE_HOURS = 6.0
DEFAULT_MACRO_MAX_AGE_HOURS = 72.0
# Keys of FeatureSpec.definitions for v2 specs: the thresholds are part of the spec (and its hash), so training
# and serving apply the same fallback.
SENTIMENT_MAX_AGE_KEY = "sentiment_max_age_hours"
MACRO_MAX_AGE_KEY = "macro_max_age_hours"


class AsOfValues(Protocol):
    values: np.ndarray  # [T, K, V] float64, NaN where nothing was published yet
    age_hours: np.ndarray  # [T, K] float64, inf where nothing was published yet


class AltProvider(Protocol):
    """What the v2 features read (market_data.alt_data.AltFeeds implements it)."""

    def sentiment_asof(self, times: pd.DatetimeIndex, symbols: Sequence[str]) -> AsOfValues: ...

    def macro_asof(self, times: pd.DatetimeIndex, series: Sequence[str]) -> AsOfValues: ...


@dataclass(frozen=True)
class AltFreshness:
    """How old a sentiment/macro record may be at a bar before the feature falls back to neutral."""

    sentiment_max_age_hours: float = DEFAULT_SENTIMENT_MAX_AGE_HOURS
    macro_max_age_hours: float = DEFAULT_MACRO_MAX_AGE_HOURS

    def __post_init__(self) -> None:
        if not (self.sentiment_max_age_hours > 0 and self.macro_max_age_hours > 0):
            raise FeatureError(f"alt-data max ages must be > 0 hours, got {self}")

    def definitions(self) -> dict[str, float]:
        return {SENTIMENT_MAX_AGE_KEY: float(self.sentiment_max_age_hours),
                MACRO_MAX_AGE_KEY: float(self.macro_max_age_hours)}

    @classmethod
    def of(cls, spec: FeatureSpec) -> AltFreshness:
        d = spec.definitions
        if SENTIMENT_MAX_AGE_KEY not in d or MACRO_MAX_AGE_KEY not in d:
            raise FeatureError(f"feature spec v{spec.version} lacks the alt-data max ages in its definitions "
                               f"({SENTIMENT_MAX_AGE_KEY}, {MACRO_MAX_AGE_KEY})")
        return cls(d[SENTIMENT_MAX_AGE_KEY], d[MACRO_MAX_AGE_KEY])


@dataclass(frozen=True)
class AltRaw:
    """Raw v2 features over [T] timestamps x [N] symbols, NaN where the feed is stale."""

    sentiment: np.ndarray  # [T, N, len(SENTIMENT_FEATURES)] float64
    sentiment_age: np.ndarray  # [T, N] hours
    macro: np.ndarray  # [T, len(MACRO_FEATURES)] float64
    macro_age: np.ndarray  # [T, len(MACRO_SERIES)] hours
    freshness: AltFreshness

    @property
    def sentiment_stale(self) -> np.ndarray:
        return ~(self.sentiment_age <= self.freshness.sentiment_max_age_hours)

    @property
    def macro_stale(self) -> np.ndarray:
        return ~(self.macro_age <= self.freshness.macro_max_age_hours)


def _check_provider(provider: object) -> AltProvider:
    if provider is None:
        raise FeatureError("a HybridRLObservation v2 spec needs an alt-data provider (sentiment + macro as-of "
                           "reader, e.g. market_data.alt_data.AltFeeds.from_store(FeedStore.under(MARLOPS_HOME)))")
    if not all(callable(getattr(provider, m, None)) for m in ("sentiment_asof", "macro_asof")):
        raise FeatureError(f"alt-data provider {type(provider).__name__} lacks sentiment_asof/macro_asof")
    return provider  # type: ignore[return-value]


def raw_alt(provider: AltProvider, timestamps: pd.DatetimeIndex, symbols: Sequence[str],
            freshness: AltFreshness) -> AltRaw:
    """As-of sentiment and macro values at each bar; stale entries NaN (the caller fills or skips them)."""
    provider = _check_provider(provider)
    times = pd.DatetimeIndex(timestamps)
    sent = provider.sentiment_asof(times, list(symbols))
    macro = provider.macro_asof(times, list(MACRO_SERIES))
    if sent.values.shape != (len(times), len(symbols), 2) or macro.values.shape != (len(times), len(MACRO_SERIES), 1):
        raise FeatureError(f"alt-data provider returned shapes {sent.values.shape}, {macro.values.shape}")
    score = sent.values[:, :, 0]
    count_log = np.log1p(np.maximum(sent.values[:, :, 1], 0.0))
    sentiment = np.stack([score, count_log], axis=-1)
    values = macro.values[:, :, 0].copy()
    out = AltRaw(sentiment=sentiment, sentiment_age=np.asarray(sent.age_hours, dtype=np.float64),
                 macro=values, macro_age=np.asarray(macro.age_hours, dtype=np.float64), freshness=freshness)
    out.sentiment[out.sentiment_stale] = np.nan
    out.macro[out.macro_stale] = np.nan
    return out


def neutral_fill(values: np.ndarray, block: FeatureBlock, names: Sequence[str]) -> np.ndarray:
    """Stale (NaN) entries of the last axis's `names` replaced by the block's training means: z = 0 exactly."""
    means = np.asarray([block.means[block.names.index(n)] for n in names], dtype=np.float64)
    return np.where(np.isnan(values), np.broadcast_to(means, values.shape), values)


def stale_feeds(raw: AltRaw, symbols: Sequence[str], row: int = 0) -> dict[str, float]:
    """The stale feeds at timestamp `row`: "sentiment:<SYMBOL>" / "macro:<series>" -> age in hours (inf: none)."""
    out = {f"sentiment:{s}": float(raw.sentiment_age[row, j]) for j, s in enumerate(symbols)
           if raw.sentiment_stale[row, j]}
    out |= {f"macro:{s}": float(raw.macro_age[row, j]) for j, s in enumerate(MACRO_SERIES) if raw.macro_stale[row, j]}
    return out


class AltJoin:
    """The v2 join for one spec: adds SENTIMENT_FEATURES to symbol rows and MACRO_FEATURES to master rows."""

    def __init__(self, spec: FeatureSpec, provider: object) -> None:
        self.spec = spec
        self.provider = _check_provider(provider)
        self.freshness = AltFreshness.of(spec)

    def snapshot(self, ts: pd.Timestamp, market_rows: pd.DataFrame,
                 master_row: pd.Series) -> tuple[pd.DataFrame, pd.Series, dict[str, float]]:
        """One bar (serving): rows indexed by symbol get the sentiment columns, the master row the macro values."""
        symbols = [str(s) for s in market_rows.index]
        raw = raw_alt(self.provider, pd.DatetimeIndex([ts]), symbols, self.freshness)
        sentiment = neutral_fill(raw.sentiment[0], self.spec.symbol, SENTIMENT_FEATURES)
        macro = neutral_fill(raw.macro[0], self.spec.master, MACRO_FEATURES)
        rows = market_rows.assign(**{n: sentiment[:, k] for k, n in enumerate(SENTIMENT_FEATURES)})
        master = pd.concat([master_row, pd.Series(macro, index=list(MACRO_FEATURES), name=master_row.name)])
        return rows, master, stale_feeds(raw, symbols)

    def tables(self, rows: pd.DataFrame, master_rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
        """Many bars (training): `rows` indexed (timestamp, symbol) in timestamp-major order over a full grid,
        `master_rows` indexed by the same timestamps. Returns the joined tables and the count of stale values."""
        timestamps = pd.DatetimeIndex(master_rows.index)
        symbols = list(dict.fromkeys(rows.index.get_level_values("symbol")))
        if len(rows) != len(timestamps) * len(symbols):
            raise MissingDataError(f"alt join needs a full (timestamp, symbol) grid, got {len(rows)} rows for "
                                   f"{len(timestamps)} x {len(symbols)}")
        raw = raw_alt(self.provider, timestamps, symbols, self.freshness)
        sentiment = neutral_fill(raw.sentiment, self.spec.symbol, SENTIMENT_FEATURES).reshape(-1, 2)
        macro = neutral_fill(raw.macro, self.spec.master, MACRO_FEATURES)
        out_rows = rows.assign(**{n: sentiment[:, k] for k, n in enumerate(SENTIMENT_FEATURES)})
        out_master = master_rows.assign(**{n: macro[:, k] for k, n in enumerate(MACRO_FEATURES)})
        return out_rows, out_master, int(raw.sentiment_stale.sum() + raw.macro_stale.sum())


def fit_tables(provider: object, market: pd.DataFrame, master: pd.DataFrame,
               freshness: AltFreshness) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training tables for fitting a v2 spec: raw sentiment/macro columns added, NaN where stale (the spec's
    means and stds are fitted on the fresh values only). `market` is indexed (timestamp, symbol), any rows."""
    stamps = market.index.get_level_values("timestamp")
    names = market.index.get_level_values("symbol")
    symbols = sorted(set(names))
    grid = pd.DatetimeIndex(sorted(set(stamps) | set(master.index)))
    raw = raw_alt(_check_provider(provider), grid, symbols, freshness)
    ti = grid.get_indexer(stamps)
    si = pd.Index(symbols).get_indexer(names)
    market = market.assign(**{n: raw.sentiment[ti, si, k] for k, n in enumerate(SENTIMENT_FEATURES)})
    mi = grid.get_indexer(master.index)
    master = master.assign(**{n: raw.macro[mi, k] for k, n in enumerate(MACRO_FEATURES)})
    return market, master
