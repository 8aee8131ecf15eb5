"""Market time for the lifecycle: trading days counted on one clock.

In accelerated replay the last `lifecycle.replay_trading_days` of the data are the market the lifecycle trades
(withheld from training, validation and staging); each stage takes the next trading days after the clock, and
the clock (kept in the lifecycle store) only moves forward. Live, the same windows are read off the trading
service's bars as days pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from marlops.lifecycle.errors import LifecycleError

MARKET_TZ = "America/New_York"


@dataclass(frozen=True)
class Window:
    start: pd.Timestamp  # first bar traded
    end: pd.Timestamp  # last bar traded (inclusive)
    trading_days: int

    def as_dict(self) -> dict[str, object]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "trading_days": self.trading_days}


def split_for_lifecycle(bars: pd.DataFrame, replay_trading_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, feed): history = every bar before the last `replay_trading_days` trading days (what training,
    validation and staging may see); feed = all bars, the market the lifecycle replays after history."""
    if replay_trading_days <= 0:
        return bars, bars
    days = _days(bars["timestamp"])
    unique = days.unique()
    if len(unique) <= replay_trading_days:
        raise LifecycleError(f"the data has {len(unique)} trading days; the lifecycle withholds the last "
                             f"{replay_trading_days} (lifecycle.replay_trading_days) and needs history before them")
    first_live = sorted(unique)[-replay_trading_days]
    history = bars[days < first_live].reset_index(drop=True)
    return history, bars


def window_after(feed: pd.DataFrame, after: pd.Timestamp, trading_days: int, *, what: str) -> Window:
    """The next `trading_days` trading days of `feed` strictly after `after`."""
    stamps = pd.DatetimeIndex(sorted(pd.to_datetime(feed["timestamp"]).unique()))
    later = stamps[stamps > pd.Timestamp(after)]
    days = _days(pd.Series(later))
    unique = list(dict.fromkeys(days))
    if len(unique) < trading_days:
        raise LifecycleError(
            f"{what} needs {trading_days} trading days after {pd.Timestamp(after).isoformat()}, the market has "
            f"{len(unique)} left: wait for more market data (live), or replay more days "
            f"(lifecycle.replay_trading_days in config/rl/lifecycle.yaml)")
    keep = later[days.isin(unique[:trading_days]).to_numpy()]
    return Window(start=pd.Timestamp(keep[0]), end=pd.Timestamp(keep[-1]), trading_days=trading_days)


def trading_days_between(feed: pd.DataFrame, after: pd.Timestamp, until: pd.Timestamp) -> int:
    stamps = pd.Series(pd.to_datetime(feed["timestamp"]).unique())
    inside = stamps[(stamps > pd.Timestamp(after)) & (stamps <= pd.Timestamp(until))]
    return int(_days(inside).nunique())


def _days(stamps: pd.Series) -> pd.Series:
    ts = pd.to_datetime(stamps)
    if ts.dt.tz is None:
        ts = ts.dt.tz_localize("UTC")
    return ts.dt.tz_convert(MARKET_TZ).dt.normalize().reset_index(drop=True)
