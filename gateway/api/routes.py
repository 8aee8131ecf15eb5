"""Routes: decisions in; portfolio, state, audit out; kill switch and resume for operators."""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from contracts.audit import AuditKind
from contracts.decisions import MasterDirective, TimestepDecisions
from contracts.orders import TradingState
from gateway.api.auth import ANY_ROLE, Caller, check_principal, require_role
from gateway.api.schemas import StateChangeRequest, timestep_response
from gateway.domain.trading_state import StateChange
from gateway.errors import GatewayNotReadyError
from gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from gateway.service import GatewayService

logger = logging.getLogger(__name__)

router = APIRouter()

# Who may call what (admin always may): reads need any role; halting needs a trader or a risk
# officer (stopping is always allowed to the people operating); resuming needs a risk officer.
AnyRole = Annotated[Caller, Depends(require_role(*ANY_ROLE))]
Trader = Annotated[Caller, Depends(require_role("trader"))]
Operator = Annotated[Caller, Depends(require_role("trader", "risk_officer"))]
RiskOfficer = Annotated[Caller, Depends(require_role("risk_officer"))]


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


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    service: GatewayService | None = getattr(request.app.state, "service", None)
    if service is None or not service.started:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ok", "trading_state": service.trading_state.value})


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry: GatewayMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/decisions")
def post_decisions(batch: TimestepDecisions, request: Request, _caller: Trader) -> dict[str, Any]:
    return timestep_response(service_of(request).handle_timestep(batch))


@router.post("/v1/directives", status_code=202)
def post_directive(directive: MasterDirective, request: Request, _caller: Operator) -> dict[str, Any]:
    service_of(request).receive_directive(directive)
    return {"accepted": True, "directive_id": directive.directive_id}


@router.get("/v1/portfolio")
def get_portfolio(request: Request, _caller: AnyRole) -> dict[str, Any]:
    return service_of(request).portfolio_summary()


@router.get("/v1/state")
def get_state(request: Request, _caller: AnyRole) -> dict[str, Any]:
    service = service_of(request)
    latest = service.directives.latest()
    return {
        "trading_state": service.trading_state.value,
        "latest_directive": latest.model_dump(mode="json") if latest else None,
        "open_orders": service.portfolio_summary()["open_orders"],
    }


@router.post("/v1/kill-switch")
def kill_switch(body: StateChangeRequest, request: Request, caller: Operator) -> dict[str, Any]:
    check_principal(caller, body.principal)
    service = service_of(request)
    return _state_answer(service, service.change_state(TradingState.HALTED, principal=body.principal,
                                                       reason=body.reason))


@router.post("/v1/reduce-only")
def reduce_only(body: StateChangeRequest, request: Request, caller: Operator) -> dict[str, Any]:
    check_principal(caller, body.principal)
    service = service_of(request)
    return _state_answer(service, service.change_state(TradingState.REDUCING, principal=body.principal,
                                                       reason=body.reason))


@router.post("/v1/resume")
def resume(body: StateChangeRequest, request: Request, caller: RiskOfficer) -> dict[str, Any]:
    check_principal(caller, body.principal)
    service = service_of(request)
    return _state_answer(service, service.change_state(TradingState.ACTIVE, principal=body.principal,
                                                       reason=body.reason))


@router.get("/v1/audit")
async def get_audit(
    request: Request,
    _caller: AnyRole,
    kind: AuditKind | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    service = service_of(request)
    events = await run_in_threadpool(service.audit.list, kind, limit)
    return {"events": events, "count": len(events)}


@router.get("/v1/audit/summary")
async def get_audit_summary(request: Request, _caller: AnyRole) -> dict[str, Any]:
    service = service_of(request)
    counts = await run_in_threadpool(service.audit.counts_by_kind)
    broken = await run_in_threadpool(service.audit.first_broken_seq)
    return {"counts": counts, "total": sum(counts.values()), "chain_ok": broken is None, "first_broken_seq": broken}

