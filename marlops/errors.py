class MarlopsError(Exception):
    """Base error of the marlops application layer."""


class StackError(MarlopsError):
    """A component of the serving stack failed to start, answer, or stop."""


class PipelineError(MarlopsError):
    """A lifecycle step could not produce its output."""


class DataQualityError(PipelineError):
    """The data checks flagged the bars (gaps, suspected splits, bad rows): nothing is trained or scored on them."""

    def __init__(self, result: object, hint: str = "") -> None:
        summary = getattr(result, "summary", None)
        text = summary() if callable(summary) else str(result)
        # `hint`: the way forward beyond fixing rows (e.g. acknowledging reviewed ones), appended after the summary.
        super().__init__(f"the bars failed their data checks; fix or drop the rows named below\n{text}"
                         + (f"\n{hint}" if hint else ""))
        self.result = result


class RoutingError(MarlopsError):
    """A routing change was refused (invalid, or the store cannot be read or written)."""
