"""Data checks for OHLCV bars: a Great Expectations suite for row-level rules, pandas for cross-row rules.

Row numbers in the result are positions in the given frame (0-based), whatever its index.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from contracts.bars import BAR_COLUMNS, BENCHMARK_SYMBOL
from contracts.config import VolatilityProxyConfig
from data_checks import gx_runtime
from data_checks.acknowledgements import Acknowledgements, apply_acknowledgements
from data_checks.bars_rules import (
    DOLLAR_VOLUME_BAND,
    DOLLAR_VOLUME_MIN_BARS,
    DOLLAR_VOLUME_WINDOW,
    LARGE_MOVE_THRESHOLD,
    NON_TRADED_SYMBOLS,
    SPLIT_RATIO_TOLERANCE,
    SPLIT_RATIOS,
)
from data_checks.results import CheckFailure, DataCheckResult, Severity, result_from_failures

logger = logging.getLogger(__name__)

SUITE_NAME = "bars"
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
MAX_EXAMPLES = 20

# (check name, higher column, lower column): high >= low and high/low bracket open and close.
ORDER_RULES: tuple[tuple[str, str, str], ...] = (
    ("high_ge_low", "high", "low"),
    ("high_ge_open", "high", "open"),
    ("high_ge_close", "high", "close"),
    ("low_le_open", "open", "low"),
    ("low_le_close", "close", "low"),
)


def _expectations() -> list[Any]:
    import great_expectations.expectations as gxe

    def meta(check: str, column: str | None) -> dict[str, Any]:
        return {"check": check, "column": column}

    items: list[Any] = []
    for column in BAR_COLUMNS:
        items.append(gxe.ExpectColumnToExist(column=column, meta=meta("required_column", column)))
    for column in BAR_COLUMNS:
        items.append(gxe.ExpectColumnValuesToNotBeNull(column=column, meta=meta("not_null", column)))
    for column in PRICE_COLUMNS:
        items.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=0, strict_min=True, meta=meta("price_positive", column)
            )
        )
    items.append(gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0, meta=meta("volume_non_negative", "volume")))
    for check, higher, lower in ORDER_RULES:
        items.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=higher,
                column_B=lower,
                or_equal=True,
                # A missing price is reported once, by not_null, not again by every pair it belongs to.
                ignore_row_if="either_value_is_missing",
                meta=meta(check, f"{higher},{lower}"),
            )
        )
    items.append(
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["symbol", "timestamp"], meta=meta("unique_symbol_timestamp", "symbol,timestamp")
        )
    )
    return items


def describe_rows(frame: pd.DataFrame, rows: Iterable[int], columns: Iterable[str] = ()) -> tuple[str, ...]:
    """'row 12: SYM01 @ 2023-01-05 21:00:00+00:00 high=1.0 low=2.0' for the first MAX_EXAMPLES rows."""
    shown = []
    wanted = [c for c in columns if c in frame.columns]
    for row in list(rows)[:MAX_EXAMPLES]:
        record = frame.iloc[row]
        symbol = record["symbol"] if "symbol" in frame.columns else "?"
        stamp = record["timestamp"] if "timestamp" in frame.columns else "?"
        values = " ".join(f"{c}={record[c]}" for c in wanted)
        shown.append(f"row {row}: {symbol} @ {stamp}" + (f" {values}" if values else ""))
    return tuple(shown)


def _failure(
    frame: pd.DataFrame,
    check: str,
    column: str | None,
    rows: Iterable[int],
    *,
    severity: Severity = "error",
    detail: str = "",
    show: Iterable[str] = (),
) -> CheckFailure:
    rows = tuple(sorted(int(r) for r in rows))
    return CheckFailure(
        check=check,
        column=column,
        rows=rows,
        examples=describe_rows(frame, rows, show),
        severity=severity,
        detail=detail,
    )


def _gx_failures(frame: pd.DataFrame) -> list[CheckFailure]:
    validation = gx_runtime.validation_for(SUITE_NAME, SUITE_NAME, _expectations)
    outcome = gx_runtime.run_validation(validation, frame)
    failures = []
    for result in outcome.results:
        if result.success:
            continue
        info = result.expectation_config.meta or {}
        check, column = str(info.get("check")), info.get("column")
        involved = [c for c in str(column or "").split(",") if c]
        if check != "required_column" and any(c not in frame.columns for c in involved):
            continue  # already reported by required_column
        raised = (result.exception_info or {}).get("raised_exception", False)
        if raised:
            message = str(result.exception_info.get("exception_message", "")).splitlines()[0][:300]
            failures.append(CheckFailure(check=check, column=column, detail=f"could not evaluate: {message}"))
            continue
        if check == "required_column":
            failures.append(CheckFailure(check=check, column=column, detail=f"column '{column}' is missing"))
            continue
        rows = result.result.get("unexpected_index_list") or []
        failures.append(
            _failure(frame, check, column, rows, detail=f"{len(rows)} unexpected value(s)", show=involved)
        )
    return failures


def _timestamps_ok(frame: pd.DataFrame) -> CheckFailure | None:
    dtype = frame["timestamp"].dtype
    if isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC":
        return None
    return CheckFailure(
        check="timestamp_utc", column="timestamp", detail=f"timestamp dtype is {dtype}, expected tz-aware UTC datetimes"
    )


def required_symbols(proxy: VolatilityProxyConfig | None) -> tuple[str, ...]:
    """The benchmark plus what the volatility proxy reads (None: index, i.e. a VIX series)."""
    proxy = proxy or VolatilityProxyConfig(source="index")
    return (BENCHMARK_SYMBOL, *(s for s in proxy.input_symbols if s != BENCHMARK_SYMBOL))


def _split_label(split: float) -> str:
    if split > 1.0:
        return f"1-for-{split:g} reverse split"
    n = 1.0 / split
    return f"{n:g}-for-1 split" if abs(n - round(n)) < 1e-9 else "3-for-2 split"


# Beyond these ratios a move may be split-like; nearer 1 nothing is examined (cheap pre-filter on every row).
_BELOW_ONE_EDGE = max(r for r in SPLIT_RATIOS if r < 1.0) * (1.0 + SPLIT_RATIO_TOLERANCE)
_ABOVE_ONE_EDGE = min(r for r in SPLIT_RATIOS if r > 1.0) * (1.0 - SPLIT_RATIO_TOLERANCE)


def _move_failures(frame: pd.DataFrame, data: pd.DataFrame) -> list[CheckFailure]:
    """`suspected_split` (error) where the price ratio is split-like and volume agrees or cannot tell;
    `large_move` (warning) for other |1-bar return| > LARGE_MOVE_THRESHOLD. Rules: data_checks/bars_rules.py."""
    traded = data[~data["symbol"].isin(NON_TRADED_SYMBOLS)].sort_values(["symbol", "timestamp"], kind="stable")
    if traded.empty:
        return []
    symbols = traded["symbol"].astype(str).to_numpy()
    close = traded["close"].to_numpy(dtype="float64", na_value=np.nan)
    volume = pd.to_numeric(traded["volume"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    first = np.r_[True, symbols[1:] != symbols[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(symbols)), 0))
    previous = np.r_[np.nan, close[:-1]]
    previous[first] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = close / previous
        dollar = close * volume
    usable = np.isfinite(dollar) & (volume > 0) & (close > 0)
    large = np.abs(ratio - 1.0) > LARGE_MOVE_THRESHOLD
    maybe = np.flatnonzero(np.isfinite(ratio) & (large | (ratio <= _BELOW_ONE_EDGE) | (ratio >= _ABOVE_ONE_EDGE)))
    splits = np.asarray(SPLIT_RATIOS)

    confirmed: list[tuple[int, str]] = []
    unconfirmed: list[tuple[int, str]] = []
    moves: list[tuple[int, str]] = []
    stamps = traded["timestamp"].to_numpy()
    for i in maybe:
        distance = np.abs(ratio[i] / splits - 1.0)
        nearest = int(np.argmin(distance))
        split_like = bool(distance[nearest] <= SPLIT_RATIO_TOLERANCE)
        lo = max(int(group_start[i]), i - DOLLAR_VOLUME_WINDOW)
        trailing = dollar[lo:i][usable[lo:i]]
        median = float(np.median(trailing)) if len(trailing) >= DOLLAR_VOLUME_MIN_BARS else np.nan
        known = bool(usable[i]) and np.isfinite(median) and median > 0
        multiple = dollar[i] / median if known else np.nan
        row = int(traded.index[i])
        head = (f"row {row}: {symbols[i]} @ {pd.Timestamp(stamps[i])} close={close[i]:g} "
                f"previous close={previous[i]:g} ratio={ratio[i]:.3f}")
        if split_like and not known:
            unconfirmed.append((row, f"{head} (~{_split_label(splits[nearest])}), volume={volume[i]:g}, "
                                     f"{len(trailing)} trailing bar(s) with volume"))
        elif split_like and 1.0 / DOLLAR_VOLUME_BAND <= multiple <= DOLLAR_VOLUME_BAND:
            confirmed.append((row, f"{head} (~{_split_label(splits[nearest])}), dollar volume {multiple:.2f}x its "
                                   f"trailing median"))
        elif large[i]:
            volume_note = f"dollar volume {multiple:.2f}x its trailing median" if known else "volume unknown"
            moves.append((row, f"{head}, {volume_note}"))

    failures: list[CheckFailure] = []
    ack = "adjust the series for the split, or acknowledge a reviewed row (data_checks/acknowledgements.py)"
    for found, check, severity, detail in (
        (confirmed, "suspected_split", "error",
         f"close/previous close within {SPLIT_RATIO_TOLERANCE:.0%} of a split ratio and dollar volume within "
         f"{DOLLAR_VOLUME_BAND:g}x of its trailing {DOLLAR_VOLUME_WINDOW}-bar median: unadjusted split; {ack}"),
        (unconfirmed, "suspected_split", "error",
         f"close/previous close within {SPLIT_RATIO_TOLERANCE:.0%} of a split ratio and volume missing or zero on "
         f"the row or its trailing bars: volume could not confirm or rule out a split; fix the volume, {ack}"),
        (moves, "large_move", "warning",
         f"|1-bar return| > {LARGE_MOVE_THRESHOLD:.0%}, not split-like (price ratio or volume): kept as real; "
         "check it is news, not a bad print"),
    ):
        if found:
            found.sort()
            failures.append(CheckFailure(check=check, column="close", rows=tuple(r for r, _ in found),
                                         examples=tuple(e for _, e in found[:MAX_EXAMPLES]),
                                         severity=severity, detail=detail))  # type: ignore[arg-type]
    return failures


def _pandas_failures(frame: pd.DataFrame, proxy: VolatilityProxyConfig | None = None) -> list[CheckFailure]:
    failures: list[CheckFailure] = []
    present = set(frame["symbol"].dropna().unique())
    absent = [s for s in required_symbols(proxy) if s not in present]
    if absent:
        why = "" if proxy is None else f" (benchmark and volatility proxy source {proxy.source!r}, symbol {proxy.symbol})"
        failures.append(CheckFailure(check="index_symbols_present", column="symbol",
                                     detail=f"no rows for {absent}{why}"))

    stamp_problem = _timestamps_ok(frame)
    if stamp_problem is not None:
        return failures + [stamp_problem]
    valid = frame["symbol"].notna() & frame["timestamp"].notna()
    data = frame.loc[valid]

    # Sorted by (timestamp, symbol): a row that sorts before its predecessor breaks the order.
    stamps = data["timestamp"].to_numpy()
    symbols = data["symbol"].astype(str).to_numpy()
    earlier = (stamps[1:] < stamps[:-1]) | ((stamps[1:] == stamps[:-1]) & (symbols[1:] < symbols[:-1]))
    if earlier.any():
        failures.append(
            _failure(frame, "sorted_by_timestamp_symbol", "timestamp,symbol", data.index[1:][earlier],
                     detail="rows out of (timestamp, symbol) order")
        )

    calendar = np.sort(data["timestamp"].unique())
    position = pd.Series(np.arange(len(calendar)), index=pd.DatetimeIndex(calendar))
    gap_rows, gap_notes = [], []
    for symbol, group in data.groupby("symbol", sort=True):
        ordered = group.sort_values("timestamp", kind="stable")
        slots = position.loc[pd.DatetimeIndex(ordered["timestamp"].drop_duplicates())].to_numpy()
        jumps = np.flatnonzero(np.diff(slots) > 1)
        for j in jumps:
            missing = calendar[slots[j] + 1 : slots[j + 1]]
            after = ordered.loc[ordered["timestamp"] == calendar[slots[j + 1]]].index[0]
            gap_rows.append(after)
            gap_notes.append(
                f"row {after}: {symbol} resumes @ {pd.Timestamp(calendar[slots[j + 1]])} after {len(missing)} missing "
                f"bar(s) {pd.Timestamp(missing[0])} .. {pd.Timestamp(missing[-1])}"
            )
    if gap_rows:
        failures.append(
            CheckFailure(
                check="calendar_gap", column="timestamp", rows=tuple(sorted(int(r) for r in gap_rows)),
                examples=tuple(gap_notes[:MAX_EXAMPLES]),
                detail="symbol lacks bars the rest of the universe has (rows = first bar after each gap)",
            )
        )

    if pd.api.types.is_numeric_dtype(frame["close"].dtype):
        failures += _move_failures(frame, data)
    if pd.api.types.is_numeric_dtype(frame["volume"].dtype):
        zero = data.index[((data["volume"] == 0) & ~data["symbol"].isin(NON_TRADED_SYMBOLS)).to_numpy()]
        if len(zero):
            failures.append(
                _failure(frame, "zero_volume", "volume", zero, severity="warning", show=["volume"],
                         detail="no trades on a traded symbol (halt, holiday row, or missing volume)")
            )
    return failures


def validate_bars(bars: pd.DataFrame, *, volatility_proxy: VolatilityProxyConfig | None = None,
                  acknowledgements: Acknowledgements | None = None) -> DataCheckResult:
    """Check raw bars. The benchmark must be present, and what `volatility_proxy` reads: VIX for `index` (also
    when None), the ETF for `etf`, the benchmark for `realized`; `auto` demands no VIX (it falls back).

    `acknowledgements` (data_checks/acknowledgements.py) let reviewed flagged rows through: they leave the failures
    of their check and are listed in `result.acknowledged`; entries matching no flagged row are a warning."""
    frame = bars.reset_index(drop=True)
    failures = _gx_failures(frame)
    if {"symbol", "timestamp", "close", "volume"} <= set(frame.columns):
        failures += _pandas_failures(frame, volatility_proxy)
    result = apply_acknowledgements(result_from_failures(SUITE_NAME, failures, len(frame)), frame, acknowledgements)
    log = logger.info if result.success else logger.warning
    log("bars check %s: %d rows, %d errors, %d warnings, %d acknowledged row(s)",
        "passed" if result.success else "failed", len(frame), len(result.errors), len(result.warnings),
        len(result.acknowledged))
    return result
