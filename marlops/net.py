import time
from collections.abc import Callable

import httpx

from marlops.errors import StackError


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll `predicate` until it is true; raise StackError naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def http_ok(url: str, headers: dict[str, str] | None = None) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return httpx.get(url, headers=headers, timeout=2.0).status_code < 500
        except httpx.HTTPError:
            return False

    return probe
