"""Load OHLCV bars from CSV or Parquet: one long-format file, or a directory with one file per symbol.

The loader normalises shape (names, dtypes, UTC, order) and refuses what it cannot interpret (missing
columns, unparseable values). It does not judge data quality: holiday rows with empty prices, zero
volume, gaps and unadjusted splits pass through so that data_checks can report them by row.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from contracts.bars import BAR_COLUMNS
from market_data.errors import BarsFileError

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".pq")
TIMESTAMP_ALIASES: tuple[str, ...] = ("timestamp", "datetime", "date", "time")
SYMBOL_ALIASES: tuple[str, ...] = ("symbol", "ticker")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
MAX_REPORTED_ROWS = 10


def load_bars(path: str | Path) -> pd.DataFrame:
    """Bars with columns BAR_COLUMNS, UTC timestamps (ns), sorted by (timestamp, symbol), RangeIndex."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not files:
            raise BarsFileError(f"{root}: directory holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
        stems = [p.stem.upper() for p in files]
        clashes = sorted({s for s in stems if stems.count(s) > 1})
        if clashes:
            raise BarsFileError(f"{root}: several files map to the same symbol {clashes} (e.g. a.csv and a.parquet)")
        frames = [_read_one(p, symbol_from_stem=p.stem.upper()) for p in files]
    elif root.is_file():
        frames = [_read_one(root, symbol_from_stem=None)]
    else:
        raise BarsFileError(f"{root}: no such file or directory")
    bars = pd.concat(frames, ignore_index=True)
    bars = bars.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)
    logger.info("loaded %d bars, %d symbols from %s", len(bars), bars["symbol"].nunique(), root)
    return bars


def _read_raw(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # Everything as text first: numeric parsing below reports bad cells by row instead of failing the file.
            return pd.read_csv(path, dtype=str, keep_default_na=True, skipinitialspace=True)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BarsFileError(f"{path}: cannot read as {suffix.lstrip('.')}: {exc}") from exc
    raise BarsFileError(f"{path}: unsupported file type {suffix!r}; use one of {SUPPORTED_SUFFIXES}")


def _row_labels(path: Path, rows: np.ndarray) -> str:
    shown = rows[:MAX_REPORTED_ROWS]
    if path.suffix.lower() == ".csv":
        # Data row i sits on line i + 2 of the file (line 1 is the header).
        text = ", ".join(f"{int(r)} (line {int(r) + 2})" for r in shown)
    else:
        text = ", ".join(str(int(r)) for r in shown)
    more = f" and {len(rows) - len(shown)} more" if len(rows) > len(shown) else ""
    return text + more


def _rename_columns(path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    lowered = [str(c).strip().lower() for c in raw.columns]
    duplicated = sorted({c for c in lowered if lowered.count(c) > 1})
    if duplicated:
        raise BarsFileError(f"{path}: columns {duplicated} appear more than once (names are case-insensitive)")
    df = raw.copy()
    df.columns = lowered
    # Intraday exports often split the stamp into `date` + `time`.
    if "date" in df.columns and "time" in df.columns and not {"timestamp", "datetime"} & set(df.columns):
        df["timestamp"] = df["date"].astype(str).str.strip() + " " + df["time"].astype(str).str.strip()
        df = df.drop(columns=["date", "time"])
    for canonical, aliases in (("timestamp", TIMESTAMP_ALIASES), ("symbol", SYMBOL_ALIASES)):
        present = [a for a in aliases if a in df.columns]
        if len(present) > 1:
            raise BarsFileError(f"{path}: ambiguous {canonical} column, found several of {present}")
        if present and present[0] != canonical:
            df = df.rename(columns={present[0]: canonical})
    return df


def _parse_timestamps(path: Path, values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.as_unit("ns")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").dt.as_unit("ns")
    text = values.astype("string").str.strip()
    parsed = pd.to_datetime(text, errors="coerce", utc=True)
    retry = parsed.isna() & text.notna()
    if retry.any():
        # The default parser infers one format from the first row; a file may mix e.g. dates and date-times.
        parsed[retry] = pd.to_datetime(text[retry], errors="coerce", utc=True, format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        examples = ", ".join(repr(v) for v in values.iloc[bad[:3]].tolist())
        raise BarsFileError(
            f"{path}: unparseable or empty timestamp in rows {_row_labels(path, bad)} (values: {examples})"
        )
    return parsed.dt.as_unit("ns")


def _parse_number(path: Path, column: str, values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64")
    text = values.astype("string").str.strip()
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    # Empty cells stay NaN (holiday rows): data checks report them. Non-empty text that is no number is refused.
    bad = np.flatnonzero((parsed.isna() & text.notna() & (text != "")).to_numpy())
    if len(bad):
        examples = ", ".join(repr(v) for v in values.iloc[bad[:3]].tolist())
        raise BarsFileError(f"{path}: column '{column}' is not numeric in rows {_row_labels(path, bad)} (values: {examples})")
    return parsed


def _read_one(path: Path, *, symbol_from_stem: str | None) -> pd.DataFrame:
    df = _rename_columns(path, _read_raw(path))
    if df.empty:
        raise BarsFileError(f"{path}: file holds no rows")
    required = [c for c in BAR_COLUMNS if not (c == "symbol" and symbol_from_stem is not None)]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise BarsFileError(
            f"{path}: missing columns {missing} (found {sorted(df.columns)}; "
            f"timestamp aliases {list(TIMESTAMP_ALIASES)}, symbol aliases {list(SYMBOL_ALIASES)})"
        )
    extra = sorted(set(df.columns) - set(BAR_COLUMNS))
    if extra:
        logger.debug("%s: ignoring columns %s", path, extra)

    if symbol_from_stem is not None:
        if "symbol" in df.columns:
            given = df["symbol"].astype("string").str.strip().str.upper()
            other = np.flatnonzero((given.notna() & (given != symbol_from_stem)).to_numpy())
            if len(other):
                raise BarsFileError(
                    f"{path}: file name says symbol {symbol_from_stem!r} but rows {_row_labels(path, other)} "
                    f"say {given.iloc[other[0]]!r}"
                )
        symbols = pd.Series(symbol_from_stem, index=df.index, dtype=str)
    else:
        symbols = df["symbol"].astype("string").str.strip().str.upper()
        empty = np.flatnonzero((symbols.isna() | (symbols == "")).to_numpy())
        if len(empty):
            raise BarsFileError(f"{path}: empty symbol in rows {_row_labels(path, empty)}")
        symbols = symbols.astype(str)

    out = pd.DataFrame({"symbol": symbols.to_numpy(), "timestamp": _parse_timestamps(path, df["timestamp"]).to_numpy()})
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).dt.as_unit("ns")
    for column in PRICE_COLUMNS:
        out[column] = _parse_number(path, column, df[column]).to_numpy()
    return out[list(BAR_COLUMNS)]
