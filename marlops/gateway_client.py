"""HTTP client of the execution gateway, as the feature service and operators use it."""

import logging
from typing import Any

import httpx

from contracts.decisions import MasterDirective, TimestepDecisions
from marlops.errors import StackError

logger = logging.getLogger(__name__)


class GatewayCallError(StackError):
    """A gateway call failed: `status_code` is the HTTP status, or None when the gateway was not reached."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class GatewayClient:
    def __init__(self, base_url: str, *, timeout_s: float = 30.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)

    def _check(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise GatewayCallError(f"gateway {response.request.method} {response.request.url.path} -> "
                                   f"{response.status_code}: {response.text[:500]}", response.status_code)
        body: dict[str, Any] = response.json()
        return body

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayCallError(f"gateway {method} {self.base_url}{path} unreachable: {exc}") from exc
        return self._check(response)

    def post_decisions(self, decisions: TimestepDecisions, *, wait: str = "accepted") -> dict[str, Any]:
        """The gateway's answer once the decisions are accepted (intents durable, orders routing), or with
        `wait="settled"` once every order has its broker answer."""
        return self._request("POST", "/v1/decisions", params={"wait": wait}, content=decisions.model_dump_json(),
                             headers={"content-type": "application/json"})

    def timestep(self, timestep_id: str, *, wait_s: float = 0.0) -> dict[str, Any]:
        """A recent timestep's orders and the portfolio, waiting up to `wait_s` for its orders to settle."""
        return self._request("GET", f"/v1/timesteps/{timestep_id}", params={"wait_s": wait_s},
                             timeout=wait_s + 30.0)

    def latency(self) -> dict[str, Any]:
        return self._request("GET", "/v1/latency")

    def post_directive(self, directive: MasterDirective) -> dict[str, Any]:
        return self._request("POST", "/v1/directives", content=directive.model_dump_json(),
                             headers={"content-type": "application/json"})

    def portfolio(self) -> dict[str, Any]:
        return self._request("GET", "/v1/portfolio")

    def state(self) -> dict[str, Any]:
        return self._request("GET", "/v1/state")

    def alerts(self) -> dict[str, Any]:
        return self._request("GET", "/v1/alerts")

    def audit_events(self, kind: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` audit events of one kind, newest first."""
        return list(self._request("GET", "/v1/audit", params={"kind": kind, "limit": limit}).get("events", []))

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def audit_summary(self, *, timeout_s: float = 900.0) -> dict[str, Any]:
        """Counts by kind and the verdict of the whole hash chain: the gateway re-hashes every row, so a long
        trail takes a while (a 30-day 1-minute replay of 100 symbols is about 3 million rows)."""
        return self._check(self._http.get("/v1/audit/summary", timeout=timeout_s))

    def kill_switch(self, reason: str, principal: str) -> dict[str, Any]:
        return self._check(self._http.post("/v1/kill-switch", json={"reason": reason, "principal": principal}))

    def close(self) -> None:
        self._http.close()
