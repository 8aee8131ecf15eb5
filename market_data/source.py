"""One entry point for bars: `synthetic`, `synthetic:<preset>`, or a path to files."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from pydantic import ValidationError

from contracts.bars import BAR_COLUMNS, BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL
from market_data.errors import MarketDataError, UnknownSourceError
from market_data.files import load_bars
from market_data.synthetic import PRESETS, SyntheticConfig, generate_synthetic_market



class Acknowledgements(Protocol):
    """Reviewed acknowledgements of flagged rows (data_checks.acknowledgements.Acknowledgements): market_data may
    not import data_checks, so only what the dataset id reads is named here."""

    def fingerprint(self) -> str: ...


logger = logging.getLogger(__name__)

SYNTHETIC_PREFIX = "synthetic"
INDEX_SYMBOLS: frozenset[str] = frozenset({BENCHMARK_SYMBOL, VOLATILITY_INDEX_SYMBOL})


def trading_symbols(bars: pd.DataFrame) -> tuple[str, ...]:
    """All symbols except the benchmark and the volatility index, sorted."""
    return tuple(sorted(s for s in bars["symbol"].unique() if s not in INDEX_SYMBOLS))


def load_market(spec: str, *, seed: int = 7, n_symbols: int | None = None, n_days: int | None = None,
                frequency: str | None = None, minutes_per_day: int | None = None) -> pd.DataFrame:
    """Bars for `spec`. For files, `n_symbols` keeps the first trading symbols (sorted) plus SPY/VIX and
    `n_days` keeps the most recent timestamps; for synthetic data they size the generated market, and
    `frequency` ("1Day" default, or "1Min": `n_days` sessions of `minutes_per_day` 1-minute bars) sets its bars."""
    head, _, preset = spec.partition(":")
    if head == SYNTHETIC_PREFIX:
        preset = preset or "default"
        if preset not in PRESETS:
            raise UnknownSourceError(f"market spec {spec!r}: unknown synthetic preset {preset!r}; known: {list(PRESETS)}")
        sizes = {k: v for k, v in (("n_symbols", n_symbols), ("n_days", n_days), ("frequency", frequency),
                                   ("minutes_per_day", minutes_per_day)) if v is not None}
        try:
            config = SyntheticConfig(seed=seed, preset=preset, **sizes)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise MarketDataError(f"market spec {spec!r}: {problems}") from exc
        return generate_synthetic_market(config).bars
    path = Path(spec)
    if not path.exists():
        raise UnknownSourceError(
            f"market spec {spec!r} is neither 'synthetic' / 'synthetic:<preset>' ({list(PRESETS)}) nor an existing path"
        )
    if frequency is not None or minutes_per_day is not None:
        raise MarketDataError(f"market spec {spec!r}: frequency/minutes_per_day size synthetic markets only; "
                              "a file's bars keep their own frequency")
    bars = load_bars(path)
    if n_symbols is not None:
        if n_symbols < 1:
            raise MarketDataError(f"n_symbols must be >= 1, got {n_symbols}")
        keep = set(trading_symbols(bars)[:n_symbols]) | INDEX_SYMBOLS
        bars = bars[bars["symbol"].isin(keep)]
    if n_days is not None:
        if n_days < 1:
            raise MarketDataError(f"n_days must be >= 1, got {n_days}")
        recent = np.sort(bars["timestamp"].unique())[-n_days:]
        bars = bars[bars["timestamp"].isin(recent)]
    return bars.reset_index(drop=True)


def dataset_id(bars: pd.DataFrame, *, acknowledgements: Acknowledgements | None = None) -> str:
    """Content id of a bars frame: same rows (in any order, any timestamp resolution) -> same id.

    With reviewed `acknowledgements` (flagged rows let through) their canonical entries are hashed in too: a policy
    trained on rows a person let through is not trained on the same dataset as one without. With none (None or no
    entries) the id is exactly the bars' own."""
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise MarketDataError(f"cannot compute a dataset id: bars lack columns {missing}")
    frame = bars[list(BAR_COLUMNS)].sort_values(["timestamp", "symbol"], kind="stable")
    digest = hashlib.sha256()
    digest.update(f"{','.join(BAR_COLUMNS)}|{len(frame)}|".encode())
    digest.update("\x1f".join(frame["symbol"].astype(str)).encode())
    stamps = pd.to_datetime(frame["timestamp"], utc=True).dt.as_unit("ns").astype("int64").to_numpy()
    digest.update(np.ascontiguousarray(stamps, dtype="<i8").tobytes())
    for column in BAR_COLUMNS[2:]:
        values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        # All NaNs hash alike whatever their payload bits.
        values = np.where(np.isnan(values), np.nan, values)
        digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    reviewed = acknowledgements.fingerprint() if acknowledgements is not None else ""
    if reviewed:
        digest.update(f"|acknowledgements|{reviewed}".encode())
    return f"bars-{digest.hexdigest()[:12]}"
