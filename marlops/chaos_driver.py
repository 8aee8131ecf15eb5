"""The crash test's replay: seeded prices and decisions, bar by bar, into the real gateway, with a
killer that SIGKILLs the gateway at random moments and a restart that re-sends the interrupted bar.

A kill is scheduled with a threading.Timer after a random delay in [0, typical request duration]
from the moment the bar's request is sent, so kills land while orders route (mid-request) as well
as just after the answer came back. After each kill the driver waits for the process to die,
restarts it with the same arguments, re-posts the master directive and re-sends the same bar:
200 (the gateway had not committed that timestep) and 409 stale_timestep (it had) are both fine;
any other answer is recorded as a failure.
"""

import logging
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np

from contracts.decisions import MasterDirective, SymbolDecision, TimestepDecisions
from marlops.chaos_procs import BROKER_HEADERS, ChaosError, ManagedProcess

logger = logging.getLogger(__name__)

POLICY_VERSION = "chaos-v1"
FIRST_BAR = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)  # after the close, New York
# The gateway caps a directive's TTL at its directive_ttl_seconds (10 days of market time by
# default), so a directive is re-posted every few bars (5 weekday bars span at most 7 days).
DIRECTIVE_TTL_S = 864_000.0
DIRECTIVE_EVERY_BARS = 5
DEFAULT_REQUEST_S = 0.5  # kill-delay scale until real request durations are measured
PROGRESS_EVERY_BARS = 10
EXECUTION_NOISE = 0.001  # fill price vs bar close: ~10 bps


def weekday_timesteps(start: datetime = FIRST_BAR) -> Iterator[datetime]:
    day = start
    while True:
        if day.weekday() < 5:
            yield day
        day += timedelta(days=1)


class SyntheticMarket:
    """Random-walk prices and random target levels for `symbols`, from one seed."""

    def __init__(self, symbols: tuple[str, ...], seed: int) -> None:
        prices_seq, decisions_seq = np.random.SeedSequence(seed).spawn(2)
        self.symbols = symbols
        self._price_rng = np.random.default_rng(prices_seq)
        self._decision_rng = np.random.default_rng(decisions_seq)
        self._prices = self._price_rng.uniform(20.0, 400.0, size=len(symbols))

    def step(self) -> tuple[dict[str, float], dict[str, float]]:
        """(bar closes the decisions are made on, prices the exchange fills at). They differ by a
        few basis points, as fills do: equity then moves with every fill, so a bar planned again
        after a crash gets other quantities (other client ids) and a gateway that re-plans a bar
        it already routed shows up as a duplicate or a lost intent."""
        self._prices = self._prices * np.exp(self._price_rng.normal(0.0, 0.02, size=len(self.symbols)))
        fills = self._prices * np.exp(self._price_rng.normal(0.0, EXECUTION_NOISE, size=len(self.symbols)))
        closes = {s: round(float(p), 2) for s, p in zip(self.symbols, self._prices, strict=True)}
        return closes, {s: round(float(p), 2) for s, p in zip(self.symbols, fills, strict=True)}

    def decisions(self, bar_index: int, timestep: datetime, prices: dict[str, float]) -> TimestepDecisions:
        # A fresh target in [-1, 1] every bar, so nearly every symbol trades every bar.
        levels = np.round(self._decision_rng.uniform(-1.0, 1.0, size=len(self.symbols)), 3)
        return TimestepDecisions(
            timestep=timestep,
            bar_index=bar_index,
            policy_version=POLICY_VERSION,
            observation_checksum=f"chaos-{bar_index}",
            decisions=tuple(
                SymbolDecision(symbol=s, action=round((float(level) + 1.0) * 2.0), target_level=float(level),
                               price=prices[s])
                for s, level in zip(self.symbols, levels, strict=True)
            ),
        )


def normal_directive(issued_at: datetime, directive_id: str) -> MasterDirective:
    return MasterDirective(directive_id=directive_id, issued_at=issued_at, ttl_seconds=DIRECTIVE_TTL_S,
                           mode="normal", max_position_size=0.10, risk_scale=1.0, defensive=False,
                           policy_version=POLICY_VERSION)


@dataclass(frozen=True)
class KillRecord:
    bar_index: int
    delay_s: float
    landed: str  # "mid_request": before the bar's answer came back; "after_response": after it
    first_status: int | None  # the interrupted request's answer, None when the kill cut it off
    resend_status: int | None
    restart_s: float  # from the kill to the restarted gateway answering /healthz

    def as_dict(self) -> dict[str, Any]:
        return {"bar_index": self.bar_index, "delay_s": round(self.delay_s, 4), "landed": self.landed,
                "first_status": self.first_status, "resend_status": self.resend_status,
                "restart_s": round(self.restart_s, 3)}


@dataclass
class ReplayResult:
    bars: int = 0
    intents_answered: int = 0  # orders listed in the gateway's 200 answers (a lower bound on intents)
    kills: list[KillRecord] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    resend_accepted: int = 0
    resend_stale: int = 0
    request_durations_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class ReplayPlan:
    n_bars: int
    min_orders: int
    min_kills: int
    seed: int
    request_timeout_s: float
    max_bars: int


class ChaosReplay:
    def __init__(self, plan: ReplayPlan, market: SyntheticMarket, *, gateway: ManagedProcess,
                 exchange_url: str) -> None:
        self.plan = plan
        self.market = market
        self.gateway = gateway
        self._kill_rng = random.Random(plan.seed)
        # Kill bars from bar 2 on, so the first kill delays are scaled by measured requests.
        candidates = range(min(2, plan.n_bars - 1), plan.n_bars)
        self.kill_bars = frozenset(self._kill_rng.sample(candidates, min(plan.min_kills, len(candidates))))
        self._exchange = httpx.Client(base_url=exchange_url, headers=BROKER_HEADERS, timeout=30.0)
        self._http = self._gateway_client()
        self._recent_s: deque[float] = deque(maxlen=20)
        self._kill_at: float | None = None
        self.result = ReplayResult()

    def _gateway_client(self) -> httpx.Client:
        # A fresh client per gateway process: pooled connections to a killed process are dead.
        return httpx.Client(base_url=self.gateway.url, timeout=self.plan.request_timeout_s)

    def close(self) -> None:
        self._http.close()
        self._exchange.close()

    # ---- the replay --------------------------------------------------------------------------
    def run(self) -> ReplayResult:
        timesteps = weekday_timesteps()
        bar = 0
        started = time.monotonic()
        while not self._done(bar):
            if bar >= self.plan.max_bars:
                logger.error("stopping after %d bars (the cap): intents %d, kills %d", bar,
                             self.result.intents_answered, len(self.result.kills))
                break
            timestep = next(timesteps)
            prices, fill_prices = self.market.step()
            self._post_prices(fill_prices)
            if bar % DIRECTIVE_EVERY_BARS == 0:
                self._post_directive(timestep, f"chaos-bar{bar}")
            batch = self.market.decisions(bar, timestep, prices)
            if bar in self.kill_bars or (bar >= self.plan.n_bars and len(self.result.kills) < self.plan.min_kills):
                self._killed_bar(batch)
            else:
                self._plain_bar(batch)
            bar += 1
            self.result.bars = bar
            if bar % PROGRESS_EVERY_BARS == 0:
                logger.info("chaos: %d bars, %d intents answered, %d kills, %d failures (%.0fs)", bar,
                            self.result.intents_answered, len(self.result.kills), len(self.result.failures),
                            time.monotonic() - started)
        return self.result

    def _done(self, bar: int) -> bool:
        return (bar >= self.plan.n_bars and self.result.intents_answered >= self.plan.min_orders
                and len(self.result.kills) >= self.plan.min_kills)

    def _plain_bar(self, batch: TimestepDecisions) -> None:
        sent = time.monotonic()
        try:
            response = self._post_decisions(batch)
        except httpx.TransportError as exc:
            # Nobody killed it: the gateway died or hung on its own. That is a finding, not a kill.
            self._fail(batch.bar_index, None, f"gateway did not answer ({exc.__class__.__name__}: {exc}); "
                                              f"alive={self.gateway.alive()}")
            if self.gateway.alive():
                self.gateway.kill()
            self._restart(batch.timestep, batch.bar_index)
            self._resend(batch)
            return
        elapsed = time.monotonic() - sent
        if response.status_code == 200:
            self._recent_s.append(elapsed)
            self.result.request_durations_s.append(elapsed)
            self._count_orders(response)
        else:
            self._fail(batch.bar_index, response.status_code, response.text[:500])

    def _killed_bar(self, batch: TimestepDecisions) -> None:
        typical = statistics.median(self._recent_s) if self._recent_s else DEFAULT_REQUEST_S
        delay = self._kill_rng.uniform(0.0, typical)
        self._kill_at = None
        timer = threading.Timer(delay, self._kill_now)
        first_status: int | None = None
        answered_at: float | None = None
        timer.start()
        try:
            response = self._post_decisions(batch)
            answered_at = time.monotonic()
            first_status = response.status_code
            if response.status_code == 200:
                self._count_orders(response)
            else:
                self._fail(batch.bar_index, response.status_code, "before the kill: " + response.text[:500])
        except httpx.TransportError:
            pass  # the kill cut the request off: expected
        finally:
            timer.join()
        kill_at = self._kill_at
        landed = "after_response" if answered_at is not None and kill_at is not None and answered_at <= kill_at \
            else "mid_request"
        restart_started = time.monotonic()
        self._restart(batch.timestep, batch.bar_index)
        restart_s = time.monotonic() - (kill_at if kill_at is not None else restart_started)
        resend_status = self._resend(batch)
        self.result.kills.append(KillRecord(batch.bar_index, delay, landed, first_status, resend_status, restart_s))
        logger.debug("kill #%d at bar %d after %.3fs (%s); re-sent bar answered %s", len(self.result.kills),
                     batch.bar_index, delay, landed, resend_status)

    def _kill_now(self) -> None:
        self._kill_at = time.monotonic()
        if not self.gateway.kill():
            logger.warning("the gateway was already dead when the kill fired")

    def _restart(self, timestep: datetime, bar_index: int) -> None:
        self._http.close()
        self.gateway.start()
        self._http = self._gateway_client()
        self._post_directive(timestep, f"chaos-bar{bar_index}-restart{self.gateway.starts}")

    def _resend(self, batch: TimestepDecisions) -> int | None:
        try:
            response = self._post_decisions(batch)
        except httpx.TransportError as exc:
            self._fail(batch.bar_index, None, f"re-sent bar got no answer: {exc.__class__.__name__}: {exc}")
            if not self.gateway.alive():
                self.gateway.kill()  # reap it; the next bar's restart logic handles the rest
                self._restart(batch.timestep, batch.bar_index)
            return None
        if response.status_code == 200:
            self.result.resend_accepted += 1
            self._count_orders(response)
        elif response.status_code == 409 and _error_slug(response) == "stale_timestep":
            self.result.resend_stale += 1
        else:
            self._fail(batch.bar_index, response.status_code, "re-sent bar: " + response.text[:500])
        return response.status_code

    # ---- HTTP --------------------------------------------------------------------------------
    def _post_decisions(self, batch: TimestepDecisions) -> httpx.Response:
        # wait=settled: the request lasts until the bar's orders are answered, so a kill "mid-request" lands
        # anywhere from planning to the last fill (routing runs on the gateway's worker threads meanwhile), and
        # the next bar's prices are posted once this bar's orders are done, as a market would move.
        return self._http.post("/v1/decisions", params={"wait": "settled"}, content=batch.model_dump_json(),
                               headers={"content-type": "application/json"})

    def _post_directive(self, issued_at: datetime, directive_id: str) -> None:
        directive = normal_directive(issued_at, directive_id)
        response = self._http.post("/v1/directives", content=directive.model_dump_json(),
                                   headers={"content-type": "application/json"})
        if response.status_code != 202:
            raise ChaosError(f"gateway refused the master directive: {response.status_code} {response.text[:300]}")

    def _post_prices(self, prices: dict[str, float]) -> None:
        response = self._exchange.post("/_sim/prices", json={"prices": prices})
        if response.status_code != 200:
            raise ChaosError(f"paper exchange refused prices: {response.status_code} {response.text[:300]}")

    def _count_orders(self, response: httpx.Response) -> None:
        self.result.intents_answered += len(response.json().get("orders", []))

    def _fail(self, bar_index: int, status: int | None, detail: str) -> None:
        logger.error("bar %d: unexpected gateway answer %s: %s", bar_index, status, detail)
        self.result.failures.append({"bar_index": bar_index, "status": status, "detail": detail})


def _error_slug(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None
