class MarketDataError(Exception):
    """Base error of market_data: a source cannot produce valid bars. Messages name the file/spec and the problem."""


class UnknownSourceError(MarketDataError):
    """A market spec is neither a known synthetic preset nor an existing path."""


class BarsFileError(MarketDataError):
    """A bars file is unreadable, lacks required columns, or holds unparseable rows."""
