"""The timestamp rule shared by the local Alpaca server and `AlpacaBarSource`.

Our bars are stamped with their CLOSE time (UTC); Alpaca stamps a bar with its START (`t`).

- `1Min`: `t = close - 1 minute`; back: `close = t + 1 minute`.
- `1Day`: `t` = 00:00 America/New_York of the close's New York date, in UTC (what Alpaca sends,
  e.g. 2024-01-02T05:00:00Z); back: `close` = that New York date at `DAILY_CLOSE_UTC` (21:00 UTC).
  21:00 UTC is our synthetic convention and is never before the real 16:00 New York close (it is
  16:00 EST / 17:00 EDT), so a live daily bar is never stamped before it could be known. Any frame
  whose daily stamps sit at 21:00 UTC round-trips server -> source to identical timestamps.

Timeframe strings follow Alpaca's grammar (`<n>Min|T`, `<n>Hour|H`, `<n>Day|D`, `<n>Week|W`,
`<n>Month|M`); only `1Min` and `1Day` are converted here.
"""

from __future__ import annotations

import re
from datetime import time

import pandas as pd

from market_data.errors import MarketDataError

NEW_YORK = "America/New_York"
DAILY_CLOSE_UTC = time(21, 0)
MINUTE = "1Min"
DAY = "1Day"
SUPPORTED_TIMEFRAMES: tuple[str, ...] = (MINUTE, DAY)
_TIMEFRAME = re.compile(r"^(\d+)(Min|T|Hour|H|Day|D|Week|W|Month|M)$")
_CANONICAL = {"Min": "Min", "T": "Min", "Hour": "Hour", "H": "Hour", "Day": "Day", "D": "Day",
              "Week": "Week", "W": "Week", "Month": "Month", "M": "Month"}


class TimeframeError(MarketDataError):
    """A timeframe string is not Alpaca's grammar or not one this code converts (1Min, 1Day)."""


def parse_timeframe(text: str) -> str:
    """Alpaca's timeframe text -> canonical form (`1Min`, `1Day`); raises TimeframeError otherwise."""
    match = _TIMEFRAME.match(text.strip())
    if not match:
        raise TimeframeError(f"invalid timeframe {text!r}: expected <n>Min|T|Hour|H|Day|D|Week|W|Month|M")
    canonical = f"{int(match.group(1))}{_CANONICAL[match.group(2)]}"
    if canonical not in SUPPORTED_TIMEFRAMES:
        raise TimeframeError(f"unsupported timeframe {text!r}: only {list(SUPPORTED_TIMEFRAMES)} are served")
    return canonical


def close_to_alpaca_start(close: pd.Series | pd.Timestamp, timeframe: str) -> pd.Series | pd.Timestamp:
    """Our close-time stamps (tz-aware UTC) -> Alpaca's bar start `t` (UTC)."""
    if timeframe == MINUTE:
        return close - pd.Timedelta(minutes=1)
    if timeframe == DAY:
        if isinstance(close, pd.Series):
            return close.dt.tz_convert(NEW_YORK).dt.normalize().dt.tz_convert("UTC")
        return close.tz_convert(NEW_YORK).normalize().tz_convert("UTC")
    raise TimeframeError(f"unsupported timeframe {timeframe!r}")


def alpaca_start_to_close(start: pd.Timestamp, timeframe: str) -> pd.Timestamp:
    """Alpaca's bar start `t` -> our close-time stamp (tz-aware UTC, nanosecond unit)."""
    start = pd.Timestamp(start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    if timeframe == MINUTE:
        return (start + pd.Timedelta(minutes=1)).as_unit("ns")
    if timeframe == DAY:
        day = start.tz_convert(NEW_YORK).date()
        return pd.Timestamp.combine(day, DAILY_CLOSE_UTC).tz_localize("UTC").as_unit("ns")
    raise TimeframeError(f"unsupported timeframe {timeframe!r}")


def timeframe_delta(timeframe: str) -> pd.Timedelta:
    return pd.Timedelta(minutes=1) if timeframe == MINUTE else pd.Timedelta(days=1)


def infer_timeframe(stamps: pd.Series) -> str:
    """1Day when consecutive distinct stamps are mostly >= 1 day apart, else 1Min."""
    unique = pd.Series(sorted(pd.unique(stamps)))
    if len(unique) < 2:
        return DAY
    return DAY if unique.diff().dropna().median() >= pd.Timedelta(hours=12) else MINUTE
