"""The bars suite's check names and thresholds, in one place (the suite, the acknowledgement file and the docs read
them from here).

Large moves and splits: real daily series have genuine large moves (earnings, biotech readouts, crashes), and
unadjusted data has splits. A split moves the close by a split ratio (2:1 forward -> x0.5, 1:10 reverse -> x10) and,
in unadjusted data, scales the share volume by about 1/ratio, so the *dollar* volume (close * volume) stays near its
usual level. News moves the close by an arbitrary ratio and usually multiplies the dollar volume. So:

- close/previous close within SPLIT_RATIO_TOLERANCE of a split ratio, and dollar volume within a factor
  DOLLAR_VOLUME_BAND of its trailing median -> `suspected_split` (error);
- the same price ratio but no usable volume (missing/zero on the row, or fewer than DOLLAR_VOLUME_MIN_BARS trailing
  bars with volume) -> `suspected_split` (error): nothing can rule the split out; a reviewer can acknowledge it;
- any other |1-bar return| > LARGE_MOVE_THRESHOLD -> `large_move` (warning: the row is kept, and named).
"""

from __future__ import annotations

from contracts.bars import VOLATILITY_INDEX_SYMBOL

# |close / previous close - 1| above this is reported: as a split when split-like, else as a large move.
LARGE_MOVE_THRESHOLD = 0.40
# Common split factors n: forward n-for-1 (close x 1/n) and reverse 1-for-n (close x n).
SPLIT_FACTORS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 25, 30, 40, 50)
# 3-for-2 forward splits (close x 2/3) are common too; their reverse (x 1.5) practically never happens, and a +50%
# news day would sit on it.
EXTRA_SPLIT_RATIOS: tuple[float, ...] = (2.0 / 3.0,)
SPLIT_RATIOS: tuple[float, ...] = tuple(sorted(
    {1.0 / n for n in SPLIT_FACTORS} | {float(n) for n in SPLIT_FACTORS} | set(EXTRA_SPLIT_RATIOS)))
# Relative distance |ratio / split ratio - 1| still called split-like: a day's drift on top of the split
# (a 2:1 split on a +2% day gives 0.51).
SPLIT_RATIO_TOLERANCE = 0.03
# Dollar volume on the row within [median / band, median * band] of the trailing median: volume moved like a split.
DOLLAR_VOLUME_BAND = 2.5
DOLLAR_VOLUME_WINDOW = 20  # trailing bars of the same symbol (the row itself excluded)
DOLLAR_VOLUME_MIN_BARS = 5  # fewer trailing bars with volume > 0: volume cannot confirm either way

# Index levels are not traded: they may move > 40% (VIX did in 2018) and have no volume.
NON_TRADED_SYMBOLS: frozenset[str] = frozenset({VOLATILITY_INDEX_SYMBOL})

# Every check the bars suite can emit.
ORDER_CHECKS: tuple[str, ...] = ("high_ge_low", "high_ge_open", "high_ge_close", "low_le_open", "low_le_close")
BARS_CHECKS: tuple[str, ...] = (
    "required_column", "not_null", "price_positive", "volume_non_negative", *ORDER_CHECKS, "unique_symbol_timestamp",
    "index_symbols_present", "timestamp_utc", "sorted_by_timestamp_symbol", "calendar_gap", "suspected_split",
    "large_move", "zero_volume",
)
# What a reviewed acknowledgement may let through: rows that are plausible real data (a split/move, a halt, a
# vendor's slightly inconsistent high/low). The rest either name no row (a missing column) or would break feature
# computation (a null or negative price, a duplicated or unsorted row): those rows must be fixed or dropped.
ACKNOWLEDGEABLE_CHECKS: tuple[str, ...] = ("suspected_split", "large_move", "calendar_gap", "zero_volume",
                                           *ORDER_CHECKS)
UNUSED_ACKNOWLEDGEMENT = "unused_acknowledgement"  # warning: an entry that matched no flagged row
