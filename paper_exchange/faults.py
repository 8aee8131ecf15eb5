"""Fault injection for the paper exchange: the failures a gateway meets at a real broker, on demand.

A `FaultPlan` (seed + rules) is installed with `POST /_sim/faults` or `--faults FILE`. For each
trading request (never /_sim/*) the rules are tried in order; a rule that matches the method and
path and still has firings left fires with its probability, drawn from `random.Random(seed)`, so
the same plan and the same request stream give the same faults. The first rule that fires wins.

Kinds:
- latency: wait `delay_s`, then serve normally.
- timeout: wait `delay_s` (longer than the client's timeout) and answer when the client has gone.
  after="after": the request IS processed first (an order lands in the book) - the ambiguous case;
  after="before": nothing is processed, the late answer is a 504.
- http_500 / http_503: an Alpaca-shaped error; with after="after" the request was processed anyway.
- http_429: a rate-limit refusal with X-RateLimit-* (remaining 0, reset in 1 s) and Retry-After: 1.
- reject: an order submission refused 403 "insufficient buying power (injected)"; nothing recorded.
- partial_fill: the order fills `fill_ratio` of its qty and stays open (`POST /_sim/fill_open`
  fills the rest later).
"""

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

FaultKind = Literal["latency", "timeout", "http_500", "http_503", "http_429", "reject", "partial_fill"]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

ORDERS_PATH = "/v2/orders"
SIM_PREFIX = "/_sim"
# request.state attribute through which the middleware tells the order endpoint to fill partially.
FILL_RATIO_STATE = "injected_fill_ratio"
# The order-only kinds act on an order submission and mean nothing for any other request.
_ORDER_ONLY_KINDS: frozenset[str] = frozenset({"reject", "partial_fill"})
_DELAY_KINDS: frozenset[str] = frozenset({"latency", "timeout"})
_AFTER_KINDS: frozenset[str] = frozenset({"timeout", "http_500", "http_503"})
_HISTORY_KEPT = 10_000

_ERRORS: dict[str, tuple[int, int, str]] = {
    "http_500": (500, 50000000, "internal server error (injected)"),
    "http_503": (503, 50300000, "service unavailable (injected)"),
    "timeout": (504, 50400000, "gateway timeout (injected)"),
    "reject": (403, 40310000, "insufficient buying power (injected)"),
    "http_429": (429, 42910000, "rate limit exceeded (injected)"),
}


class FaultRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    probability: float = Field(default=1.0, ge=0, le=1)
    count: int | None = Field(default=None, ge=1)  # fire at most this many times; None = unlimited
    methods: tuple[HttpMethod, ...] | None = Field(default=None, min_length=1)  # None = every method
    path_prefix: str = Field(default="/v2/", min_length=1, max_length=200)
    delay_s: float = Field(default=0.0, ge=0, le=600)
    fill_ratio: float | None = Field(default=None, gt=0, lt=1)
    after: Literal["before", "after"] = "before"

    @field_validator("methods", mode="before")
    @classmethod
    def _upper_methods(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(m.upper() if isinstance(m, str) else m for m in value)
        return value

    @field_validator("path_prefix")
    @classmethod
    def _trading_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path_prefix must start with '/', got {value!r}")
        if value.startswith(SIM_PREFIX):
            raise ValueError(f"path_prefix {value!r} could never fire: faults never apply to /_sim/*")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "FaultRule":
        if self.kind in _DELAY_KINDS and self.delay_s <= 0:
            raise ValueError(f"{self.kind} needs delay_s > 0")
        if self.kind not in _DELAY_KINDS and self.delay_s:
            raise ValueError(f"delay_s applies to latency and timeout only, not {self.kind}")
        if (self.kind == "partial_fill") != (self.fill_ratio is not None):
            raise ValueError("fill_ratio is required for partial_fill and applies to nothing else")
        if self.after == "after" and self.kind not in _AFTER_KINDS:
            raise ValueError(f"after='after' applies to timeout, http_500 and http_503 only, not {self.kind}")
        if self.kind in _ORDER_ONLY_KINDS and not self.matches_request("POST", ORDERS_PATH):
            raise ValueError(f"{self.kind} acts on order submissions: methods must include POST and "
                             f"path_prefix must cover {ORDERS_PATH}")
        return self

    def matches_request(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        if not path.startswith(self.path_prefix):
            return False
        if self.kind in _ORDER_ONLY_KINDS:
            return method.upper() == "POST" and path == ORDERS_PATH
        return True


class FaultPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    rules: tuple[FaultRule, ...] = Field(default=(), max_length=64)


class FaultInjector:
    """The installed plan and what it has fired so far. Thread-safe."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0  # not reset by install: requests already being served finish regardless
        self.install(plan or FaultPlan())

    def install(self, plan: FaultPlan) -> None:
        """Replace the plan; the RNG, the remaining counts and the fired counters start afresh."""
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)
            self._left: list[int | None] = [rule.count for rule in plan.rules]
            self._fired: Counter[str] = Counter()
            self._history: list[dict[str, Any]] = []
            self._requests = 0

    def clear(self) -> None:
        self.install(FaultPlan())

    def choose(self, method: str, path: str) -> FaultRule | None:
        """The rule that fires for this request, if any (and count it)."""
        if path.startswith(SIM_PREFIX):
            return None
        with self._lock:
            if not self._plan.rules:
                return None
            self._requests += 1
            for index, rule in enumerate(self._plan.rules):
                left = self._left[index]
                if left == 0 or not rule.matches_request(method, path):
                    continue
                # One draw per matching rule, whatever its probability, keeps the sequence seed-determined.
                if self._rng.random() >= rule.probability:
                    continue
                if left is not None:
                    self._left[index] = left - 1
                self._fired[rule.kind] += 1
                self._history.append({"request": self._requests, "rule": index, "kind": rule.kind,
                                      "method": method.upper(), "path": path})
                del self._history[:-_HISTORY_KEPT]
                return rule
        return None

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Count a faulted request as in flight while it is served (a sleeping timeout included), so a
        test can wait until the exchange has really finished with it."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "in_flight": self._in_flight,
                "plan": self._plan.model_dump(mode="json"),
                "fired": dict(self._fired),
                "remaining": list(self._left),
                "requests": self._requests,
                "history": list(self._history),
            }


def _error(kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    status, code, message = _ERRORS[kind]
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


async def _drain(response: Response) -> None:
    # Read the processed request's body to the end so its handler has fully finished before we drop it.
    body = getattr(response, "body_iterator", None)
    if body is not None:
        async for _chunk in body:
            pass


async def apply_fault(
    rule: FaultRule,
    request: Request,
    call_next: Callable[[Request], Awaitable[Response]],
    *,
    rate_limit: int,
    clock: Callable[[], float] = time.time,
) -> Response:
    """Serve `request` the way `rule` says. Waits use asyncio.sleep so the exchange keeps serving others."""
    if rule.kind == "latency":
        await asyncio.sleep(rule.delay_s)
        return await call_next(request)
    if rule.kind == "timeout":
        if rule.after == "after":
            response = await call_next(request)
            await asyncio.sleep(rule.delay_s)
            return response  # the client has given up by now
        await asyncio.sleep(rule.delay_s)
        return _error("timeout")
    if rule.kind in ("http_500", "http_503"):
        if rule.after == "after":
            await _drain(await call_next(request))
        return _error(rule.kind)
    if rule.kind == "http_429":
        return _error("http_429", headers={
            "X-RateLimit-Limit": str(rate_limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(clock()) + 1),
            "Retry-After": "1",
        })
    if rule.kind == "reject":
        return _error("reject")
    # partial_fill
    setattr(request.state, FILL_RATIO_STATE, rule.fill_ratio)
    return await call_next(request)
