"""Polling, never a fixed sleep: wait until a condition holds, failing the test with what was awaited."""

import time
from collections.abc import Callable
from typing import Any

WAIT_S = 10.0


def wait_for(condition: Callable[[], Any], what: str = "condition", timeout_s: float = WAIT_S) -> Any:
    """The first truthy value of `condition()`, polled every 20 ms; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
