"""Routes: decisions in; portfolio, state, exposure, alerts, audit out; operator controls.

Every route is registered with `guarded(router, METHOD, PATH)`, which attaches the role rule of
gateway.api.roles.ROUTE_ROLES; a handler that needs to know the caller names the same dependency.
"""

import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from contracts.audit import AuditKind
from contracts.orders import TradingState
from gateway.api.auth import Caller, check_principal
from gateway.api.roles import guarded, role_for
from gateway.api.schemas import (
    MAX_PAGE,
    MAX_SEQ,
    AlertsAnswer,
    AuditSummary,
    DefensiveAnswer,
    DefensiveRequest,
    DirectiveAccepted,
    ErrorBody,
    EventsPage,
    FlattenAnswer,
    FlattenRequest,
    MasterDirectiveRequest,
    OperatorRequest,
    StateAnswer,
    TimestepDecisionsRequest,
    timestep_response,
)
from gateway.audit.store import AuditStore
from gateway.domain.trading_state import StateChange
from gateway.errors import GatewayNotReadyError, UnknownTimestepError
from gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from gateway.service import GatewayService

logger = logging.getLogger(__name__)

router = APIRouter()

_UNAVAILABLE = {503: {"model": ErrorBody,
                      "description": "Not started yet, or the audit store or broker is unreachable"}}
_BROKER = {**_UNAVAILABLE, 502: {"model": ErrorBody, "description": "The broker answered with an error"}}

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="at most this many events")]
BeforeSeq = Annotated[int | None, Query(ge=1, le=MAX_SEQ, description="only events older than this seq")]


def service_of(request: Request) -> GatewayService:
    service: GatewayService | None = getattr(request.app.state, "service", None)
    if service is None or not service.started:
        # Only reachable before the lifespan startup finished (or after it failed).
        raise GatewayNotReadyError("gateway is not started yet (reconciling with the broker)")
    return service


def _state_answer(service: GatewayService, change: StateChange | None) -> dict[str, Any]:
    return {
        "trading_state": service.trading_state.value,
        "changed": change is not None,
        "event": change.payload() if change is not None else None,
    }


def _recent_events(store: AuditStore, kinds: Sequence[AuditKind], limit: int,
                   before_seq: int | None) -> list[dict[str, Any]]:
    """The newest `limit` events of any of `kinds`, newest first (one query per kind, merged by seq)."""
    merged = [e for kind in kinds for e in store.list(kind, limit, before_seq=before_seq)]
    merged.sort(key=lambda e: e["seq"], reverse=True)
    return merged[:limit]


async def _events_page(request: Request, kinds: Sequence[AuditKind], limit: int,
                       before_seq: int | None) -> dict[str, Any]:
    service = service_of(request)
    events = await run_in_threadpool(_recent_events, service.audit, kinds, limit, before_seq)
    return {"events": events, "count": len(events)}


# ---- public ---------------------------------------------------------------------------------
@guarded(router, "GET", "/healthz", responses={503: {"description": "Starting: not reconciled with the broker yet"}})
def healthz(request: Request) -> JSONResponse:
    service: GatewayService | None = getattr(request.app.state, "service", None)
    if service is None or not service.started:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ok", "trading_state": service.trading_state.value})


@guarded(router, "GET", "/metrics", response_class=Response,
         responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text"}})
def metrics(request: Request) -> Response:
    registry: GatewayMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)


# ---- decisions and directives in -------------------------------------------------------------
@guarded(router, "POST", "/v1/decisions", responses={
    **_BROKER, 409: {"model": ErrorBody, "description": "A symbol was already decided at this bar (stale_timestep)"}})
def post_decisions(batch: TimestepDecisionsRequest, request: Request,
                   wait: Annotated[Literal["accepted", "settled"], Query(
                       description="accepted (default): answer once overlay and risk checks are done and the "
                                   "intents are durable, orders route afterwards; settled: answer once every "
                                   "order has its broker answer (replays that need this bar's fills)")] = "accepted",
                   ) -> dict[str, Any]:
    return timestep_response(service_of(request).handle_timestep(batch, settle=wait == "settled"))


@guarded(router, "GET", "/v1/timesteps/{timestep_id}", responses={
    **_UNAVAILABLE, 404: {"model": ErrorBody, "description": "No recent timestep with this id (kept: the last 512)"}})
def get_timestep(timestep_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9]+-[0-9a-f]{12}$")],
                 request: Request,
                 wait_s: Annotated[float, Query(ge=0, le=60, description="wait this long for the orders to settle")] = 0.0,
                 ) -> dict[str, Any]:
    """A recent timestep's orders (from POST /v1/decisions' `timestep_id`): their answers so far, and `settled`."""
    found = service_of(request).timestep(timestep_id, wait_s=wait_s)
    if found is None:
        raise UnknownTimestepError(timestep_id)
    return found


@guarded(router, "GET", "/v1/latency", responses=_UNAVAILABLE)
def get_latency(request: Request, last: Annotated[int | None, Query(
        ge=1, le=10_000, description="only the newest samples of each latency (default: the whole window)")] = None,
                ) -> dict[str, Any]:
    """Exact p50/p90/p99/max (ms) over the recent window of each latency the gateway measures."""
    return service_of(request).latency_summary(last)


@guarded(router, "POST", "/v1/directives", status_code=202, response_model=DirectiveAccepted, responses=_UNAVAILABLE)
def post_directive(directive: MasterDirectiveRequest, request: Request) -> dict[str, Any]:
    service_of(request).receive_directive(directive)
    return {"accepted": True, "directive_id": directive.directive_id}


# ---- operator controls ----------------------------------------------------------------------
def _change_state(request: Request, caller: Caller, body: OperatorRequest, target: TradingState) -> dict[str, Any]:
    check_principal(caller, body.principal)
    service = service_of(request)
    return _state_answer(service, service.change_state(target, principal=body.principal, reason=body.reason,
                                                       trigger=body.trigger))


@guarded(router, "POST", "/v1/kill-switch", response_model=StateAnswer, responses=_UNAVAILABLE)
def kill_switch(body: OperatorRequest, request: Request,
                caller: Caller = Depends(role_for("POST", "/v1/kill-switch"))) -> dict[str, Any]:
    return _change_state(request, caller, body, TradingState.HALTED)


@guarded(router, "POST", "/v1/reduce-only", response_model=StateAnswer, responses=_UNAVAILABLE)
def reduce_only(body: OperatorRequest, request: Request,
                caller: Caller = Depends(role_for("POST", "/v1/reduce-only"))) -> dict[str, Any]:
    return _change_state(request, caller, body, TradingState.REDUCING)


@guarded(router, "POST", "/v1/resume", response_model=StateAnswer, responses=_UNAVAILABLE)
def resume(body: OperatorRequest, request: Request,
           caller: Caller = Depends(role_for("POST", "/v1/resume"))) -> dict[str, Any]:
    return _change_state(request, caller, body, TradingState.ACTIVE)


@guarded(router, "POST", "/v1/flatten", response_model=FlattenAnswer, responses=_BROKER)
def flatten(body: FlattenRequest, request: Request,
            caller: Caller = Depends(role_for("POST", "/v1/flatten"))) -> dict[str, Any]:
    """Safe mode: halt new orders and close every position gradually, on the configured schedule (or
    `fraction_per_interval`; 1.0 unwinds at the next interval)."""
    check_principal(caller, body.principal)
    service = service_of(request)
    change = service.flatten(principal=body.principal, reason=body.reason, trigger=body.trigger,
                             fraction=body.fraction_per_interval)
    # Safe mode starts even when the state was already HALTED, so the plan is part of the answer.
    return {**_state_answer(service, change), "safe_mode": service.status()["safe_mode"]}


@guarded(router, "POST", "/v1/defensive", response_model=DefensiveAnswer, responses=_UNAVAILABLE)
def set_defensive(body: DefensiveRequest, request: Request,
                  caller: Caller = Depends(role_for("POST", "/v1/defensive"))) -> dict[str, Any]:
    """Defensive mode under the master from the next timestep (no exposure increase, caps no directive may
    loosen), until a risk officer clears it. Setting it again only tightens the caps."""
    check_principal(caller, body.principal)
    override = service_of(request).set_defensive_override(
        principal=body.principal, reason=body.reason, trigger=body.trigger,
        max_position_size=body.max_position_size, risk_scale=body.risk_scale)
    return {"changed": True, "defensive_override": override.as_dict()}


@guarded(router, "POST", "/v1/defensive/clear", response_model=DefensiveAnswer, responses=_UNAVAILABLE)
def clear_defensive(body: OperatorRequest, request: Request,
                    caller: Caller = Depends(role_for("POST", "/v1/defensive/clear"))) -> dict[str, Any]:
    """The master's directives apply again (an operator's decision, like resuming)."""
    check_principal(caller, body.principal)
    cleared = service_of(request).clear_defensive_override(principal=body.principal, reason=body.reason)
    return {"changed": cleared is not None, "defensive_override": None}


@guarded(router, "POST", "/v1/reconcile", responses=_BROKER)
def reconcile(body: OperatorRequest, request: Request,
              caller: Caller = Depends(role_for("POST", "/v1/reconcile"))) -> dict[str, Any]:
    """Compare open and recent orders and positions with the broker now; the report says what differed."""
    check_principal(caller, body.principal)
    logger.info("reconcile requested by %s: %s", body.principal, body.reason)
    return service_of(request).reconcile_now(principal=body.principal, reason=body.reason)


# ---- reads ----------------------------------------------------------------------------------
@guarded(router, "GET", "/v1/portfolio", responses=_UNAVAILABLE)
def get_portfolio(request: Request) -> dict[str, Any]:
    return service_of(request).portfolio_summary()


@guarded(router, "GET", "/v1/state", responses=_UNAVAILABLE)
def get_state(request: Request) -> dict[str, Any]:
    service = service_of(request)
    latest = service.directives.latest()
    return {
        "trading_state": service.trading_state.value,
        "latest_directive": latest.model_dump(mode="json") if latest else None,
        "open_orders": service.portfolio_summary()["open_orders"],
    }


@guarded(router, "GET", "/v1/whoami")
def whoami(caller: Caller = Depends(role_for("GET", "/v1/whoami"))) -> dict[str, Any]:
    """The token's principal and role (the console uses it to offer only the controls the role may use)."""
    return {"principal": caller.principal, "role": caller.role, "authenticated": caller.authenticated}


@guarded(router, "GET", "/v1/status", responses=_UNAVAILABLE)
def get_status(request: Request) -> dict[str, Any]:
    """Trading state, safe mode progress, kill-switch triggers and the last reconciliation."""
    return service_of(request).status()


@guarded(router, "GET", "/v1/alerts", response_model=AlertsAnswer, responses=_UNAVAILABLE)
def get_alerts(request: Request) -> dict[str, Any]:
    return {"alerts": service_of(request).alerts()}


@guarded(router, "GET", "/v1/exposure", responses=_UNAVAILABLE)
def get_exposure(request: Request) -> dict[str, Any]:
    """Long, short, gross and net exposure per sector, in currency and as a fraction of equity."""
    return service_of(request).exposure_by_sector()


@guarded(router, "GET", "/v1/orders", response_model=EventsPage, responses=_UNAVAILABLE)
async def get_orders(request: Request, limit: Limit = 100, before_seq: BeforeSeq = None) -> dict[str, Any]:
    """Recent order and fill audit events, newest first."""
    return await _events_page(request, ("order", "fill"), limit, before_seq)


@guarded(router, "GET", "/v1/decisions", response_model=EventsPage, responses=_UNAVAILABLE)
async def get_decisions(request: Request, limit: Limit = 100, before_seq: BeforeSeq = None) -> dict[str, Any]:
    """Recent symbol decisions and their risk decisions, newest first."""
    return await _events_page(request, ("decision", "risk_decision"), limit, before_seq)


@guarded(router, "GET", "/v1/audit", response_model=EventsPage, responses=_UNAVAILABLE)
async def get_audit(request: Request, kind: AuditKind | None = None, limit: Limit = 100,
                    before_seq: BeforeSeq = None) -> dict[str, Any]:
    service = service_of(request)
    events = await run_in_threadpool(service.audit.list, kind, limit, before_seq=before_seq)
    return {"events": events, "count": len(events)}


@guarded(router, "GET", "/v1/audit/summary", response_model=AuditSummary, responses=_UNAVAILABLE)
async def get_audit_summary(request: Request) -> dict[str, Any]:
    service = service_of(request)
    counts = await run_in_threadpool(service.audit.counts_by_kind)
    broken = await run_in_threadpool(service.audit.first_broken_seq)
    return {"counts": counts, "total": sum(counts.values()), "chain_ok": broken is None,
            "first_broken_seq": broken}
