"""Gateway errors and request validation failures as HTTP answers: `{"error": <slug>, "reasons": [...]}`."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import (
    AuditError,
    BrokerError,
    BrokerUnavailableError,
    GatewayError,
    GatewayNotReadyError,
    InvalidDecisionsError,
    StaleTimestepError,
    TradingStateError,
    UnknownTimestepError,
)

logger = logging.getLogger(__name__)


def validation_reasons(errors: Any) -> list[str]:
    """One readable line per problem: 'body.decisions.0.price: Input should be greater than 0 (got -1.0)'."""
    reasons = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "request"
        line = f"{loc}: {err.get('msg', 'invalid')}"
        ctx = err.get("ctx") or {}
        if err.get("type") == "json_invalid" and "error" in ctx:
            line += f" ({ctx['error']})"
        elif err.get("type") not in ("missing", "json_invalid") and "input" in err and not isinstance(
            err["input"], (dict, list)
        ):
            line += f" (got {err['input']!r})"
        reasons.append(line)
    return reasons


def _answer(status_code: int, error: str, reasons: list[str], **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "reasons": reasons, **extra}, status_code=status_code)


_HTTP_SLUGS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _answer(exc.status_code, _HTTP_SLUGS.get(exc.status_code, "http_error"), [str(exc.detail)],
                           detail=exc.detail)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer(422, "invalid_request", validation_reasons(exc.errors()),
                       detail=jsonable_encoder(exc.errors(), custom_encoder={Exception: str}))

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        if isinstance(exc, InvalidDecisionsError):
            return _answer(422, "invalid_decisions", exc.reasons)
        if isinstance(exc, StaleTimestepError):
            return _answer(409, "stale_timestep", exc.reasons)
        if isinstance(exc, UnknownTimestepError):
            return _answer(404, "unknown_timestep", [str(exc)])
        if isinstance(exc, TradingStateError):
            return _answer(422, "invalid_state_change", [str(exc)])
        if isinstance(exc, AuditError):
            logger.error("%s %s: audit store failed: %s", request.method, request.url.path, exc)
            return _answer(503, "audit_unavailable", [str(exc)])
        if isinstance(exc, GatewayNotReadyError):
            return _answer(503, "not_ready", [str(exc)])
        if isinstance(exc, BrokerUnavailableError):
            return _answer(503, "broker_unavailable", [str(exc)])
        if isinstance(exc, BrokerError):
            return _answer(502, "broker_error", [str(exc)])
        logger.exception("%s %s failed", request.method, request.url.path)
        return _answer(500, "gateway_error", [str(exc)])

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: keep the one error shape for clients, the traceback for the log.
        logger.exception("%s %s failed unexpectedly", request.method, request.url.path)
        return _answer(500, "internal_error", [f"{type(exc).__name__}: the gateway hit an unexpected error"])
