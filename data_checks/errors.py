class DataCheckError(Exception):
    """Base error of data_checks: a check cannot run at all (as opposed to data that fails a check)."""


class DriftInputError(DataCheckError):
    """Reference or current samples are missing a feature or hold no finite values."""


class AcknowledgementError(DataCheckError):
    """An acknowledgement file cannot be used: unreadable, malformed, or an entry fails validation (named)."""
