"""API tokens: random bearer secrets, kept only as SHA-256 digests.

    token, grant = new_token("rita", "risk_officer")   # show `token` once; store `grant`
"""

import hashlib
import hmac
import secrets

from gateway.settings import ApiToken, Role

TOKEN_PREFIX = "mgw_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(principal: str, role: Role) -> tuple[str, ApiToken]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, ApiToken(principal=principal, role=role, token_sha256=hash_token(token))


def grant_for(tokens: tuple[ApiToken, ...], token: str) -> ApiToken | None:
    """The grant whose digest matches `token`; every digest is compared in constant time."""
    digest = hash_token(token)
    found: ApiToken | None = None
    for grant in tokens:
        if hmac.compare_digest(grant.token_sha256, digest):
            found = grant
    return found
