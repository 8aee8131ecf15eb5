"""Production rollout: the candidate becomes production everywhere in ONE routing change, while Triton keeps
serving; the MLflow aliases move (production -> candidate, last-known-good -> previous production); the
promoted artifacts are copied to a new models/rl/production/<date>[.<n>]/ (marlops.lifecycle.promotion).

The switch is measured: requests keep flowing the way the trading service sends them (refresh the routing
table, then one request per routed version) plus a probe pinned to the new production version, before, during
and after the change; every failed request is counted. The gate is zero."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.serve import free_port
from marlops.candidates import (
    MASTER_AGENT,
    SL_FALLBACK,
    SYMBOL_AGENT,
    RegisteredPolicies,
)
from marlops.lifecycle.context import LifecycleContext
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.gates import require_approval
from marlops.lifecycle.promotion import promote_versions
from marlops.policy_router import PolicyRouter
from marlops.routing import DEFAULT_ROUTE, PolicyRef, RoutingChange
from serving.errors import InferenceError, ServingError
from serving.triton_process import TritonServer

logger = logging.getLogger(__name__)

STAGE = "production_rollout"


@dataclass(frozen=True)
class RolloutResult:
    candidate_run_id: str
    rfc_id: str
    versions: dict[str, str]
    previous: dict[str, str]
    promotion: dict[str, Any]
    routing_revision: int
    requests: int
    failed_requests: int
    requests_after_switch: int
    switch_ms: float
    failures: list[str] = field(default_factory=list)
    market_time: str = ""  # the lifecycle clock at the switch: post-deployment review counts from here
    registered: RegisteredPolicies | None = None  # what went to production (the review judges it)
    held_out: dict[str, float] = field(default_factory=dict)  # its validation metrics, the review's yardstick

    def metadata(self) -> dict[str, Any]:
        return {"versions": ", ".join(f"{k} v{v}" for k, v in self.versions.items()),
                "previous": ", ".join(f"{k} v{v}" for k, v in self.previous.items()) or "none (first deployment)",
                "production_dir": str(self.promotion.get("directory", "")), "routing_revision": self.routing_revision,
                "requests_during_switch": self.requests, "failed_requests": self.failed_requests,
                "requests_after_switch": self.requests_after_switch, "switch_ms": round(self.switch_ms, 1),
                "market_time": self.market_time}


def production_change(registered: RegisteredPolicies, table_routes: list[str]) -> RoutingChange:
    """Every symbol on the new production; the candidate slot and the canary routes cleared."""
    routes: dict[str, tuple[str, str | None] | None] = {s: None for s in table_routes if s != DEFAULT_ROUTE}
    routes[DEFAULT_ROUTE] = ("production", None)
    return RoutingChange(policies={"production": PolicyRef(SYMBOL_AGENT, registered.symbol.triton_version),
                                   "sl_fallback": PolicyRef(SL_FALLBACK, registered.fallback.triton_version),
                                   "master": PolicyRef(MASTER_AGENT, registered.master.triton_version),
                                   "candidate": None}, routes=routes)


class _Traffic:
    """Requests the way the trading service sends them, in a thread, counting failures."""

    def __init__(self, router: PolicyRouter, symbols: list[str], pinned: PolicyRef | None = None) -> None:
        self.router, self.symbols, self.pinned = router, symbols, pinned
        self.requests = self.failed = self.after_switch = 0
        self.switch_revision: int | None = None
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, ref: PolicyRef, n: int) -> None:
        dim = len(self.router.info(ref).spec.symbol.names)
        try:
            self.router.client(ref).infer(np.zeros((n, dim), dtype=np.float32))
        except (InferenceError, ServingError) as exc:
            self.failed += 1
            self.failures.append(f"{ref}: {exc}"[:300])
        self.requests += 1

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.pinned is not None:
                self._send(self.pinned, 4)
                continue
            table = self.router.refresh()  # a bar: the table in force, then one request per routed version
            for ref, members in table.groups(self.symbols).items():
                if ref is not None:
                    self._send(ref, len(members))
            if self.switch_revision is not None and table.revision >= self.switch_revision:
                self.after_switch += 1


def run_rollout(lc: LifecycleContext, registered: RegisteredPolicies, symbols: list[str], *, rfc_id: str,
                principal: str, reason: str, held_out: dict[str, float] | None = None,
                min_requests_after_switch: int = 20) -> RolloutResult:
    ctx = lc.ctx
    require_approval(lc, rfc_id)
    canary = lc.store.stages(registered.run_id).get("canary")
    if canary is None or canary.status != "passed":
        raise LifecycleError(f"{rfc_id}: no passed canary for run {registered.run_id} "
                             f"({'none' if canary is None else canary.status}); production follows a healthy canary")
    t = ctx.config.serving.triton
    lc.store.set_stage(registered.run_id, STAGE, "running", {"rfc_id": rfc_id})
    with TritonServer(ctx.model_repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                      workdir=ctx.paths.triton_workdir) as server:
        infer_url = server.grpc_url if t.protocol == "grpc" else server.http_url
        alerts: list[str] = []

        def router() -> PolicyRouter:
            return PolicyRouter(lc.routing, triton_http_url=server.http_url, infer_url=infer_url, protocol=t.protocol,
                                repository=ctx.model_repository, public_key_path=ctx.keys.public_key_path, triton=t,
                                alert=lambda name, detail: alerts.append(f"{name}: {detail}") if detail else None)

        trading_router, probe_router = router(), router()
        trading_router.refresh()
        new_ref = PolicyRef(SYMBOL_AGENT, registered.symbol.triton_version)
        probe_router.refresh()
        trading = _Traffic(trading_router, symbols)
        probe = _Traffic(probe_router, symbols, pinned=new_ref if probe_router.is_ready(new_ref) else None)
        runners = [trading] + ([probe] if probe.pinned is not None else [])
        try:
            for r in runners:
                r.thread.start()
            _wait(lambda: trading.requests >= 5)
            promotion = promote_versions(ctx, registered.versions(), principal=principal, reason=reason)
            t0 = time.perf_counter()
            table = lc.routing.apply(production_change(registered, list(lc.routing.read().routes)),
                                     principal=principal, reason=f"rollout of {rfc_id}: {reason}")
            trading.switch_revision = table.revision
            _wait(lambda: trading.after_switch >= min_requests_after_switch)
            switch_ms = (time.perf_counter() - t0) * 1000
        finally:
            for r in runners:
                r.stop.set()
                r.thread.join(timeout=30)
            trading_router.close()
            probe_router.close()
    requests = sum(r.requests for r in runners)
    failed = sum(r.failed for r in runners)
    result = RolloutResult(candidate_run_id=registered.run_id, rfc_id=rfc_id, versions=registered.versions(),
                           previous=dict(promotion.previous), promotion=promotion.as_dict(),
                           routing_revision=table.revision, requests=requests, failed_requests=failed,
                           requests_after_switch=trading.after_switch, switch_ms=switch_ms,
                           failures=[f for r in runners for f in r.failures][:20], market_time=lc.store.clock() or "",
                           registered=registered, held_out=dict(held_out or {}))
    lc.store.set_stage(registered.run_id, STAGE, "passed" if failed == 0 else "blocked",
                       {"rfc_id": rfc_id, "failed_requests": failed, "requests": requests,
                        "routing_revision": table.revision, "production_dir": promotion.directory,
                        "market_time": result.market_time,
                        "reason": "" if failed == 0 else f"{failed} of {requests} requests failed during the switch"})
    lc.store.set_rfc_status(rfc_id, "deployed")
    lc.store.record_event("production_rollout", principal=principal, candidate_run_id=registered.run_id,
                          detail=result.metadata())
    logger.info("rollout of %s: production %s, routing revision %d, %d requests during the switch, %d failed",
                rfc_id, registered.versions(), table.revision, requests, failed)
    return result


def _wait(condition: Any, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the rollout traffic did not reach the expected number of requests")
        time.sleep(0.01)
