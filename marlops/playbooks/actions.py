"""What the steps do to the world: the gateway's operator routes (with a token read from a file, its principal
checked by the gateway) and the lifecycle's rollback. Each returns what it changed, as data for the run record."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import httpx

from marlops.paths import StatePaths
from monitoring.alert_context import read_secret_file

logger = logging.getLogger(__name__)

OPEN_GATEWAY_PRINCIPAL = "marlops-playbooks"


class StepError(RuntimeError):
    """A step could not be carried out (the gateway refused or is unreachable): the run is recorded as failed."""


class Actions(Protocol):
    def gateway(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def rollback(self, *, principal: str, reason: str) -> dict[str, Any]: ...


class GatewayOperator:
    """The gateway's operator routes, as the principal of the token in `token_file` (None: an open gateway)."""

    def __init__(self, base_url: str, token_file: Path | None, timeout_s: float = 5.0) -> None:
        headers = {}
        if token_file is not None:
            headers["Authorization"] = f"Bearer {read_secret_file(token_file, 'gateway token file')}"
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._principal: str | None = None

    def close(self) -> None:
        self._http.close()

    @property
    def principal(self) -> str:
        """The token's principal (the gateway refuses a body naming anyone else)."""
        if self._principal is None:
            try:
                answer = self._http.get("/v1/whoami")
            except httpx.HTTPError as exc:
                raise StepError(f"gateway GET /v1/whoami: {exc.__class__.__name__}: {exc}") from exc
            if answer.status_code != 200:
                raise StepError(f"gateway GET /v1/whoami answered {answer.status_code}: {answer.text[:300]}")
            # An open gateway (no tokens: local paper trading) has no principal to match: name the runner.
            self._principal = str(answer.json().get("principal") or OPEN_GATEWAY_PRINCIPAL)
        return self._principal

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = self._http.post(path, json={**body, "principal": self.principal})
        except httpx.HTTPError as exc:
            raise StepError(f"gateway POST {path}: {exc.__class__.__name__}: {exc}") from exc
        if answer.status_code != 200:
            raise StepError(f"gateway POST {path} answered {answer.status_code}: {answer.text[:300]}")
        return dict(answer.json())


class Rollback:
    """Production back to last-known-good (the SL fallback without one), only when the recorded live bars confirm a
    model anomaly: the lifecycle's own check (marlops.lifecycle.monitor.check_model_anomaly), as this principal."""

    def __init__(self, paths: StatePaths, config_dir: Path) -> None:
        self._paths = paths
        self._config_dir = config_dir

    def __call__(self, *, principal: str, reason: str) -> dict[str, Any]:
        from contracts.config import load_rl_config
        from marlops.context import PipelineContext
        from marlops.lifecycle.context import lifecycle_context
        from marlops.lifecycle.monitor import check_model_anomaly

        ctx = PipelineContext.create(self._paths, load_rl_config(self._config_dir))
        with lifecycle_context(ctx) as lc:
            action = check_model_anomaly(lc, principal=principal, reason=reason)
        if action.kind == "none":
            return {"rolled_back": False, "why": "no model anomaly in the recorded live bars: nothing changed"}
        return {"rolled_back": True, "anomalies": list(action.reasons), **action.detail}


class LiveActions:
    def __init__(self, gateway: GatewayOperator, rollback: Rollback) -> None:
        self._gateway = gateway
        self._rollback = rollback

    def gateway(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._gateway.post(path, body)

    def rollback(self, *, principal: str, reason: str) -> dict[str, Any]:
        return self._rollback(principal=principal, reason=reason)

    def close(self) -> None:
        self._gateway.close()
