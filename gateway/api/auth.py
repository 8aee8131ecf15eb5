"""Bearer tokens and roles. With no tokens configured the gateway is open (local paper trading)."""

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Header, HTTPException, Request

from gateway.settings import GatewaySettings, Role
from gateway.tokens import grant_for

ANY_ROLE: tuple[Role, ...] = ("viewer", "trader", "risk_officer", "admin")


@dataclass(frozen=True)
class Caller:
    principal: str | None  # None when authentication is off
    role: Role
    authenticated: bool


def _lookup(settings: GatewaySettings, token: str) -> tuple[str, Role] | None:
    grant = grant_for(settings.api_tokens, token)
    return None if grant is None else (grant.principal, grant.role)


def require_role(*roles: Role) -> Callable[..., Caller]:
    """Dependency: the caller must hold one of `roles` (admin always may)."""

    def dependency(request: Request, authorization: str | None = Header(default=None)) -> Caller:
        settings: GatewaySettings = request.app.state.settings
        if not settings.api_tokens:
            return Caller(principal=None, role="admin", authenticated=False)
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        grant = _lookup(settings, authorization[7:].strip())
        if grant is None:
            raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
        principal, role = grant
        if role != "admin" and role not in roles:
            raise HTTPException(403, f"role {role!r} of {principal!r} may not call {request.method} "
                                     f"{request.url.path}; needs one of {list(roles)}")
        return Caller(principal=principal, role=role, authenticated=True)

    return dependency


def check_principal(caller: Caller, claimed: str) -> None:
    """With authentication on, the principal named in a request body must be the token's."""
    if caller.authenticated and caller.principal != claimed:
        raise HTTPException(403, f"principal {claimed!r} in the body does not match the token's "
                                 f"principal {caller.principal!r}")
