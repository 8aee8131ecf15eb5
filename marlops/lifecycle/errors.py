"""Errors of the lifecycle package."""

from marlops.errors import MarlopsError


class LifecycleError(MarlopsError):
    """A lifecycle step cannot go on (missing input, a store it cannot read or write)."""


class RfcNotFoundError(LifecycleError):
    """No deployment RFC with that id."""


class ApprovalRefusedError(LifecycleError):
    """An approval or rejection was refused: no token, unknown token, wrong role, or a stale RFC digest.
    `code` is an upper-case reason (NO_TOKEN, UNKNOWN_TOKEN, ROLE_NOT_ALLOWED, STALE_DIGEST, RFC_CLOSED, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
