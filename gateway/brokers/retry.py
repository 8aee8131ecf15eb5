"""Retry of broker calls that may succeed on another try: exponential backoff with full jitter.

Retried: BrokerUnavailableError (timeout, connection refused or reset: the outcome is unknown) and
BrokerRejectedError with HTTP 5xx or 429. Never another 4xx: the broker has decided, and asking
again gets the same answer. On 429 the broker's Retry-After / X-RateLimit-Reset is honoured, capped
at max_delay_s. The jitter comes from random.Random(settings.seed), so a run's waits are reproducible.

A retried call must be safe to repeat; an order submission is, because it reuses its client_order_id
(the broker refuses a second order with the same id; AlpacaBroker turns that refusal into a lookup).
"""

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import TypeVar

from gateway.errors import BrokerRejectedError, BrokerUnavailableError
from gateway.settings import RetrySettings

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_CAUSE_DEPTH = 5


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, BrokerUnavailableError):
        return True
    if isinstance(exc, BrokerRejectedError):
        return exc.status_code is not None and (exc.status_code >= 500 or exc.status_code == 429)
    return False


def retry_after_s(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asked us to wait: Retry-After (seconds or an HTTP date), else X-RateLimit-Reset
    (unix seconds, Alpaca's). None when neither is present or readable."""
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass  # not seconds: an HTTP date
        try:
            moment = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            logger.warning("ignoring malformed Retry-After header %r", retry_after)
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return max(0.0, moment.timestamp() - now)
    reset = headers.get("X-RateLimit-Reset")
    if reset is not None:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            logger.warning("ignoring malformed X-RateLimit-Reset header %r", reset)
    return None


def response_headers(exc: BaseException) -> Mapping[str, str] | None:
    """The HTTP response headers behind an error: the error or one of its causes (alpaca-py's APIError,
    requests' HTTPError) carries a `.response` with `.headers`."""
    current: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if current is None:
            return None
        headers = getattr(getattr(current, "response", None), "headers", None)
        if isinstance(headers, Mapping):
            return headers
        current = current.__cause__ or current.__context__
    return None


class RetryPolicy:
    def __init__(
        self,
        settings: RetrySettings,
        sleep: Callable[[float], None] = time.sleep,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random(settings.seed)
        self._lock = threading.Lock()

    def backoff_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2^(attempt-1))] after failed attempt `attempt`."""
        ceiling = min(self.settings.max_delay_s, self.settings.base_delay_s * 2.0 ** (attempt - 1))
        with self._lock:
            return self._rng.uniform(0.0, ceiling)

    def delay_s(self, attempt: int, error: BaseException) -> float:
        delay = self.backoff_s(attempt)
        if isinstance(error, BrokerRejectedError) and error.status_code == 429:
            headers = response_headers(error)
            asked = retry_after_s(headers, self._clock()) if headers is not None else None
            if asked is not None:
                delay = max(delay, asked)
        return min(delay, self.settings.max_delay_s)

    def call(
        self,
        what: str,
        fn: Callable[[], _T],
        retry_on: Callable[[BaseException], bool] = is_retryable,
    ) -> _T:
        """`fn()`, retried per the settings while `retry_on(error)`; the last error is re-raised."""
        attempts = self.settings.max_attempts
        attempt = 1
        while True:
            try:
                return fn()
            except Exception as exc:
                if not retry_on(exc):
                    raise
                if attempt >= attempts:
                    if attempts > 1:
                        logger.error("broker %s failed on all %d attempts; giving up: %s", what, attempts, exc)
                    raise
                delay = self.delay_s(attempt, exc)
                logger.warning("broker %s failed (attempt %d of %d): %s; retrying in %.3fs",
                               what, attempt, attempts, exc, delay)
                self._sleep(delay)
                attempt += 1
