"""Per-symbol validation of one provider's bars at a bar timestamp T. Pure: no I/O, no clock of its own.

Each symbol of the universe gets at most one reason code (first that applies, in this order):
- BAR_MISSING: the provider has no row for the symbol at T.
- FEED_STALE: the row is stamped before T (a provider repeating its last bar), or, for a live feed, its
  timestamp lags the wall clock `now` by more than `max_clock_lag_s` seconds.
- BAR_INCONSISTENT: prices not finite or not > 0, high < max(open, close), low > min(open, close),
  high < low, or volume negative / not finite.
A symbol without a code is a valid fresh bar: it may vote (quorum) or be accepted (one provider).
NO_QUORUM is decided by the vote (market_data.quorum), not here; it is listed with the others so the
codes live in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

BAR_MISSING = "BAR_MISSING"
FEED_STALE = "FEED_STALE"
BAR_INCONSISTENT = "BAR_INCONSISTENT"
NO_QUORUM = "NO_QUORUM"
REASON_CODES: tuple[str, ...] = (BAR_MISSING, FEED_STALE, BAR_INCONSISTENT, NO_QUORUM)


def utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    stamp = pd.Timestamp(ts)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _floats(bars: pd.DataFrame, column: str) -> np.ndarray:
    values = bars[column]
    if pd.api.types.is_float_dtype(values.dtype) or pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype=float)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def inconsistent_mask(bars: pd.DataFrame) -> np.ndarray:
    """True for rows whose OHLCV cannot be a real bar (see the module doc)."""
    o, h, low, c, v = (_floats(bars, k) for k in ("open", "high", "low", "close", "volume"))
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(o) & np.isfinite(h) & np.isfinite(low) & np.isfinite(c))
        bad |= (o <= 0) | (h <= 0) | (low <= 0) | (c <= 0)
        bad |= (h < np.maximum(o, c)) | (low > np.minimum(o, c)) | (h < low)
        bad |= ~np.isfinite(v) | (v < 0)
    return bad


def _utc_stamps(bars: pd.DataFrame) -> pd.Series:
    stamps = bars["timestamp"]
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        return stamps  # the usual case: no conversion per bar (comparisons across time zones are exact)
    return pd.to_datetime(stamps, utc=True)


def check_bars(bars: pd.DataFrame | None, timestamp: pd.Timestamp, symbols: Iterable[str], *,
               now: pd.Timestamp | None = None, max_clock_lag_s: float | None = None) -> dict[str, str]:
    """symbol -> reason code for every symbol of `symbols` that this provider cannot vote for at `timestamp`.

    `bars`: the provider's rows for this bar (None: it delivered nothing). A symbol with several rows is
    judged on its first. `now`/`max_clock_lag_s`: live feeds only (None: no wall-clock check).
    """
    wanted = list(dict.fromkeys(symbols))
    if bars is None or bars.empty:
        return dict.fromkeys(wanted, BAR_MISSING)
    index: dict[str, int] = {}
    for i, symbol in enumerate(bars["symbol"].tolist()):
        index.setdefault(str(symbol), i)
    stamps = _utc_stamps(bars)
    lagging = (stamps < utc(timestamp)).to_numpy()
    if now is not None and max_clock_lag_s is not None:
        lagging = lagging | (stamps < utc(now) - pd.Timedelta(seconds=max_clock_lag_s)).to_numpy()
    broken = inconsistent_mask(bars)
    codes: dict[str, str] = {}
    for symbol in wanted:
        i = index.get(symbol)
        if i is None:
            codes[symbol] = BAR_MISSING
        elif lagging[i]:
            codes[symbol] = FEED_STALE
        elif broken[i]:
            codes[symbol] = BAR_INCONSISTENT
    return codes


def carried_forward(symbol: str, close: float, timestamp: pd.Timestamp) -> dict[str, object]:
    """The stand-in bar of a flagged symbol: last accepted close, flat, no volume, stamped this bar.

    It keeps the feature window whole (features stay computable) while adding no price information."""
    return {"symbol": symbol, "timestamp": utc(timestamp), "open": close, "high": close, "low": close,
            "close": close, "volume": 0.0}
