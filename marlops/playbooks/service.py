"""`python -m marlops.playbooks`: the webhook Alertmanager's `playbooks` receiver posts to.

    MARLOPS_PLAYBOOKS_TOKEN_FILE=<the bearer token file Alertmanager presents> \\
    MARLOPS_PLAYBOOKS_GATEWAY_TOKEN_FILE=<a risk_officer token file> \\
    python -m marlops.playbooks [--port 9096]

  POST /v1/alertmanager/playbooks   Alertmanager's webhook body (version 4): each firing alert whose labels name a
                                    playbook runs it once per incident (definitions.py); the answer lists outcomes
  GET  /v1/playbooks                the playbooks and their steps
  GET  /v1/playbooks/runs?limit=N   the recorded runs, newest first (alert, steps, results)
  GET  /healthz

Every route but /healthz needs `Authorization: Bearer <token>` (the token file, 0600). The gateway is driven with
the token in MARLOPS_PLAYBOOKS_GATEWAY_TOKEN_FILE: a risk_officer's, since safe mode and unwinding need one; its
principal is the one the gateway audits, the trigger is `playbook:<name>`. Settings: env MARLOPS_PLAYBOOKS_<FIELD>
or `.env`; the state store is the marlops one (MARLOPS_STATE_URL, else <MARLOPS_HOME>/state.db).
A failed step answers 502 so that Alertmanager retries; a retry of a run already recorded does nothing (the run
record says what failed; an operator takes it from there).
"""

from __future__ import annotations

import argparse
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from marlops.playbooks.actions import GatewayOperator, LiveActions, Rollback
from marlops.playbooks.definitions import PLAYBOOKS
from marlops.playbooks.runner import PlaybookRunner
from marlops.paths import StatePaths
from marlops.playbooks.store import PlaybookRunStore
from monitoring.alert_context import AlertContextError, AmNotification, read_secret_file

logger = logging.getLogger("marlops.playbooks")

ENV_PREFIX = "MARLOPS_PLAYBOOKS_"


class PlaybookError(RuntimeError):
    """The runner cannot start: a missing or unsafe token file."""


class PlaybookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=9096, ge=0, le=65535)
    token_file: Path | None = None  # the bearer token Alertmanager presents
    gateway_url: str = "http://127.0.0.1:8080"
    gateway_token_file: Path | None = None  # a risk_officer token; None only for an open (local test) gateway
    gateway_timeout_s: float = Field(default=5.0, gt=0)
    config_dir: Path = Path("config/rl")


def create_app(settings: PlaybookSettings, *, paths: StatePaths, insecure_no_auth: bool = False) -> FastAPI:
    if insecure_no_auth:
        expected = None
    elif settings.token_file is None:
        raise PlaybookError(f"{ENV_PREFIX}TOKEN_FILE is not set: the runner needs the bearer token Alertmanager "
                            "presents (or --insecure-no-auth, for a local test only)")
    else:
        try:
            expected = read_secret_file(settings.token_file, "playbook webhook token file")
        except AlertContextError as exc:
            raise PlaybookError(str(exc)) from exc
    if settings.gateway_token_file is None:
        logger.warning("%sGATEWAY_TOKEN_FILE is not set: the gateway must be open (no tokens) for playbooks to act",
                       ENV_PREFIX)
    actions = LiveActions(GatewayOperator(settings.gateway_url, settings.gateway_token_file,
                                          settings.gateway_timeout_s), Rollback(paths, settings.config_dir))
    store = PlaybookRunStore(paths.state_url)
    runner = PlaybookRunner(actions, store)
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        actions.close()
        store.close()

    app = FastAPI(title="marlops playbooks", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.runner, app.state.store = runner, store

    def authorize(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            logger.warning("refused %s %s: missing or wrong bearer token", request.method, request.url.path)
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Plain `def`: the steps block on HTTP and the database, so FastAPI runs them in its thread pool.
    @app.post("/v1/alertmanager/playbooks", dependencies=[Depends(authorize)])
    def receive(notification: AmNotification) -> dict[str, Any]:
        outcomes = runner.handle(notification)
        failed = [o for o in outcomes if o.get("status") == "failed"]
        if failed:
            raise HTTPException(502, {"outcomes": outcomes})
        return {"outcomes": outcomes}

    @app.get("/v1/playbooks", dependencies=[Depends(authorize)])
    def playbooks() -> dict[str, Any]:
        return {"playbooks": [{"name": p.name, "summary": p.summary, "steps": list(p.steps)}
                              for p in PLAYBOOKS.values()]}

    @app.get("/v1/playbooks/runs", dependencies=[Depends(authorize)])
    def runs(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        return {"runs": store.runs(limit)}

    return app


def main(argv: list[str] | None = None) -> None:
    from contracts.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m marlops.playbooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="accept notifications without the bearer token (a local test only)")
    args = parser.parse_args(argv)
    settings = PlaybookSettings(**{k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None})
    configure_logging("INFO", service="marlops-playbooks")
    if args.insecure_no_auth:
        logger.warning("--insecure-no-auth: anyone who reaches port %d can start a playbook", settings.port)
    try:
        app = create_app(settings, paths=StatePaths.from_env(), insecure_no_auth=args.insecure_no_auth)
    except (PlaybookError, RuntimeError) as exc:
        raise SystemExit(f"marlops playbooks: {exc}") from exc
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
