"""Bearer tokens and roles. With no tokens configured the gateway is open (local paper trading).

Which role a route needs is decided in one place, gateway.api.roles.ROUTE_ROLES; this module only
answers "who is calling, and may they": 401 (with WWW-Authenticate: Bearer) for a missing or
unknown token, 403 naming the roles needed. Both are raised before the route's handler runs, so a
refused call has no side effect.
"""

import logging
from dataclasses import dataclass

from fastapi import HTTPException, Request
from fastapi.security import HTTPBearer

from gateway.settings import GatewaySettings, Role
from gateway.tokens import grant_for

logger = logging.getLogger(__name__)

ANY_ROLE: tuple[Role, ...] = ("viewer", "trader", "risk_officer", "admin")

# Documents the scheme in OpenAPI (components.securitySchemes); auto_error=False so that the
# refusal is ours: one error shape, and 401 rather than a framework default.
bearer_scheme = HTTPBearer(auto_error=False, description="API token: `Authorization: Bearer <token>`")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Caller:
    principal: str | None  # None when authentication is off
    role: Role
    authenticated: bool


def authenticate(request: Request, token: str | None, roles: tuple[Role, ...]) -> Caller:
    """The caller behind `token`, who must hold one of `roles` (admin always may)."""
    settings: GatewaySettings = request.app.state.settings
    if not settings.api_tokens:
        return Caller(principal=None, role="admin", authenticated=False)
    if not token:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)", headers=_CHALLENGE)
    grant = grant_for(settings.api_tokens, token)
    if grant is None:
        logger.warning("%s %s refused: unknown bearer token", request.method, request.url.path)
        raise HTTPException(401, "unknown bearer token", headers=_CHALLENGE)
    if grant.role != "admin" and grant.role not in roles:
        logger.warning("%s %s refused: %s has role %s, needs %s", request.method, request.url.path,
                       grant.principal, grant.role, "/".join(roles))
        raise HTTPException(403, f"role {grant.role!r} of {grant.principal!r} may not call {request.method} "
                                 f"{request.url.path}; needs role {' or '.join(roles)} (or admin)")
    return Caller(principal=grant.principal, role=grant.role, authenticated=True)


def check_principal(caller: Caller, claimed: str) -> None:
    """With authentication on, the principal named in a request body must be the token's."""
    if caller.authenticated and caller.principal != claimed:
        raise HTTPException(403, f"principal {claimed!r} in the body does not match the token's "
                                 f"principal {caller.principal!r}")
