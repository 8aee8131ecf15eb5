"""Who may call which route: one table, and the dependency every route is registered with.

    @guarded(router, "POST", "/v1/flatten")
    def flatten(body: ..., caller: Caller = Depends(role_for("POST", "/v1/flatten"))) -> ...

(the handler names the dependency only when it needs the caller; `guarded` attaches it anyway, and
FastAPI runs it once per request either way).

`guarded` registers the route with the dependency derived from ROUTE_ROLES (and documents its
401/403 answers), so a route cannot exist without a rule and the rule cannot drift from the code.
The RBAC test checks the table against every route the app serves, in both directions.
"""

from collections.abc import Callable
from functools import cache
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.dependencies.utils import get_dependant, get_flat_params
from fastapi.security import HTTPAuthorizationCredentials

from gateway.api.auth import ANY_ROLE, Caller, authenticate, bearer_scheme
from gateway.api.schemas import ErrorBody
from gateway.settings import Role

RouteKey = tuple[str, str]  # (HTTP method, path template)

TRADER: tuple[Role, ...] = ("trader",)
OPERATOR: tuple[Role, ...] = ("trader", "risk_officer")
RISK_OFFICER: tuple[Role, ...] = ("risk_officer",)

# Roles allowed per route; admin always may; None = public (no data, no side effect).
# Reads need any role. Stopping (halt, reduce-only) is open to everyone operating (trader or risk
# officer); going back to ACTIVE, flattening the book and forcing a reconcile need a risk officer.
# Directives come from the master agent service, which posts with a trader token.
ROUTE_ROLES: dict[RouteKey, tuple[Role, ...] | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/metrics"): None,
    ("GET", "/console"): None,
    ("GET", "/console/{asset}"): None,
    ("POST", "/v1/decisions"): TRADER,
    ("POST", "/v1/directives"): TRADER,
    ("POST", "/v1/kill-switch"): OPERATOR,
    ("POST", "/v1/reduce-only"): OPERATOR,
    ("POST", "/v1/resume"): RISK_OFFICER,
    ("POST", "/v1/flatten"): RISK_OFFICER,
    ("POST", "/v1/reconcile"): RISK_OFFICER,
    ("POST", "/v1/defensive"): OPERATOR,  # tightening, like halting
    ("POST", "/v1/defensive/clear"): RISK_OFFICER,  # loosening, like resuming
    ("GET", "/v1/portfolio"): ANY_ROLE,
    ("GET", "/v1/state"): ANY_ROLE,
    ("GET", "/v1/whoami"): ANY_ROLE,
    ("GET", "/v1/status"): ANY_ROLE,
    ("GET", "/v1/alerts"): ANY_ROLE,
    ("GET", "/v1/exposure"): ANY_ROLE,
    ("GET", "/v1/orders"): ANY_ROLE,
    ("GET", "/v1/decisions"): ANY_ROLE,
    ("GET", "/v1/audit"): ANY_ROLE,
    ("GET", "/v1/audit/summary"): ANY_ROLE,
    ("GET", "/v1/timesteps/{timestep_id}"): ANY_ROLE,
    ("GET", "/v1/latency"): ANY_ROLE,
    # The console's monitoring panels (gateway/api/monitoring_routes.py).
    ("GET", "/v1/performance"): ANY_ROLE,
    ("GET", "/v1/alerts/active"): ANY_ROLE,
    ("GET", "/v1/routing"): ANY_ROLE,
}


def allowed_roles(method: str, path: str) -> tuple[Role, ...] | None:
    """The table's rule for a route; an unlisted route is a programming error, caught at import."""
    key = (method.upper(), path)
    if key not in ROUTE_ROLES:
        raise KeyError(f"route {key[0]} {key[1]} has no entry in gateway.api.roles.ROUTE_ROLES")
    return ROUTE_ROLES[key]


@cache  # one callable per route, so FastAPI resolves it once per request however often it is named
def role_for(method: str, path: str) -> Callable[..., Caller | None]:
    """Dependency enforcing the ROUTE_ROLES rule of (method, path): the Caller, or None on a public route."""
    roles = allowed_roles(method, path)
    key = (method.upper(), path)

    if roles is None:
        def public() -> None:
            return None

        public.route_key = key  # type: ignore[attr-defined]
        return public

    def protected(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)
    ) -> Caller:
        return authenticate(request, credentials.credentials if credentials else None, roles)

    protected.route_key = key  # type: ignore[attr-defined]
    return protected


def _auth_errors(roles: tuple[Role, ...] | None) -> dict[int | str, dict[str, Any]]:
    if roles is None:
        return {}
    return {
        401: {"model": ErrorBody, "description": "Missing or unknown bearer token"},
        403: {"model": ErrorBody, "description": f"Needs role {' or '.join(roles)} (or admin)"},
    }


def guarded(router: APIRouter, method: str, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register a route on `router` with its ROUTE_ROLES dependency and its documented error answers."""
    roles = allowed_roles(method, path)
    responses = {**_auth_errors(roles), **kwargs.pop("responses", {})}
    dependencies = [Depends(role_for(method, path)), *kwargs.pop("dependencies", [])]

    def decorate(func: Callable[..., Any]) -> Any:
        # Same rule as FastAPI's default 422 entry (the route takes parameters or a body), but
        # documenting the body our error handler really sends.
        dependant = get_dependant(path=path, call=func)
        if dependant.body_params or get_flat_params(dependant):
            responses.setdefault(422, {"model": ErrorBody,
                                       "description": "Invalid request: one reason per problem"})
        if dependant.body_params:
            responses.setdefault(400, {"model": ErrorBody, "description": "Body cannot be read (e.g. not UTF-8)"})
        return router.api_route(path, methods=[method.upper()], dependencies=dependencies, responses=responses,
                                **kwargs)(func)

    return decorate


def guard_key(dependency: Callable[..., Any]) -> RouteKey | None:
    """The route a dependency made by role_for guards (None for any other callable); for the RBAC test."""
    key = getattr(dependency, "route_key", None)
    return key if isinstance(key, tuple) else None

