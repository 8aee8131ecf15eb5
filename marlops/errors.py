class MarlopsError(Exception):
    """Base error of the marlops application layer."""


class StackError(MarlopsError):
    """A component of the serving stack failed to start, answer, or stop."""


class PipelineError(MarlopsError):
    """A lifecycle step could not produce its output."""
