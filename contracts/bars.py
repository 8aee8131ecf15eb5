from datetime import datetime

from pydantic import Field

from contracts.base import Frozen

BAR_COLUMNS: tuple[str, ...] = ("symbol", "timestamp", "open", "high", "low", "close", "volume")
BENCHMARK_SYMBOL = "SPY"
VOLATILITY_INDEX_SYMBOL = "VIX"


class Bar(Frozen):
    """One OHLCV bar of one symbol. `timestamp` is the bar's close time in UTC."""

    symbol: str = Field(min_length=1)
    timestamp: datetime
    open: float = Field(gt=0)
    high: float = Field(gt=0)
    low: float = Field(gt=0)
    close: float = Field(gt=0)
    volume: float = Field(ge=0)
