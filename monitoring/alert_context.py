"""The marlops context webhook: Alertmanager -> incident context -> Slack and PagerDuty.

Alertmanager's receivers (monitoring/alertmanager/alertmanager.yml) POST their version-4 webhook payload to
`/v1/alertmanager/page` (Slack and PagerDuty) or `/v1/alertmanager/ticket` (Slack only). For each
notification this service reads what an on-call engineer asks first and attaches it:

  alerts            each alert's name, status, severity, labels, annotations, the triggering value (the rule's
                    `value` annotation, `{{ $value }}`), startsAt/endsAt, fingerprint, generatorURL
  trading_state     gateway GET /v1/state
  recent_orders     gateway GET /v1/orders?limit=20 (order and fill audit events, newest first)
  recent_decisions  gateway GET /v1/decisions?limit=20
  gateway_alerts    gateway GET /v1/alerts
  routing_table     the `routing_state` row of the marlops state store (MARLOPS_STATE_URL, else
                    sqlite <MARLOPS_HOME>/state.db), read read-only by contracts.routing_table (the one reader
                    the gateway uses too: `monitoring` may not import marlops, tests/architecture/test_import_rules.py)
  unavailable       what could not be read, and why: a context gap never blocks the alert

The gateway is read over HTTP with a viewer token read from a file (never logged). Settings: flags > env
(`MARLOPS_ALERT_CONTEXT_<FIELD>`, plus MARLOPS_HOME and MARLOPS_STATE_URL) > `.env` > defaults; the Slack
webhook URL and the PagerDuty routing key are secrets and come from the environment only.
A stack without Slack (`make up` on one host) sets MARLOPS_ALERT_CONTEXT_INBOX_FILE instead (or as well): each
notification's context is appended there as one JSON line (a 0600 file), so alerts stay visible locally.

Alertmanager authenticates with `Authorization: Bearer <token>` (http_config.authorization.credentials_file);
the webhook compares it with the token file MARLOPS_ALERT_CONTEXT_TOKEN_FILE and answers 401 otherwise.
Only `--insecure-no-auth` (a flag, warned about at start) turns that off.

`GET /v1/deliveries` (same token) lists the last notifications this process handled (destination, status, the
alerts' names/labels/fingerprints, where they were sent, what failed): how `marlops alert-drill` sees its drill arrive.

A failed forward answers 502 so that Alertmanager retries the notification: a duplicate Slack message is
cheaper than a lost page (PagerDuty deduplicates by dedup_key = <alertname>-<fingerprint>).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import socket
import stat
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from contracts.errors import ConfigError
from contracts.logs import configure_logging
from contracts.routing_table import RoutingTableReader, RoutingTableUnavailable, state_table_name

logger = logging.getLogger("monitoring.alert_context")

ENV_PREFIX = "MARLOPS_ALERT_CONTEXT_"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
RECENT = 20
DELIVERIES_KEPT = 200  # GET /v1/deliveries
# Slack refuses a section text over 3000 characters; keep each one well inside.
_SLACK_SECTION_CHARS = 2800
_PAGERDUTY_DETAILS_BYTES = 400_000  # under the Events API's 512 KB per event, leaving room for the rest
Destination = Literal["page", "ticket"]


class AlertContextError(RuntimeError):
    """The webhook cannot start: a missing or unsafe token file, or no Slack destination."""


class AlertContextSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", populate_by_name=True, frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=9095, ge=0, le=65535)
    # The bearer token Alertmanager must present (the file its credentials_file points at).
    token_file: Path | None = None
    gateway_url: str = "http://127.0.0.1:8080"
    gateway_token_file: Path | None = None  # a viewer token; None: the gateway is open (local paper trading)
    gateway_timeout_s: float = Field(default=2.0, gt=0)
    # Shared marlops names, unprefixed (populate_by_name lets code pass home=/state_url=; an alias "home" would
    # also read $HOME).
    home: Path = Field(default=Path(".marlops"), validation_alias="MARLOPS_HOME")
    state_url: str | None = Field(default=None, validation_alias="MARLOPS_STATE_URL")
    # Interpolated into SQL as an identifier: the same pattern marlops.routing_store enforces.
    routing_table: str = Field(default="routing", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
    # Secrets: the Slack incoming-webhook URL is itself the credential.
    slack_webhook_url: SecretStr | None = None
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_url: str = PAGERDUTY_EVENTS_URL  # overridable so tests (and proxies) can stand in
    forward_timeout_s: float = Field(default=5.0, gt=0)
    # A local destination (a stack without Slack, e.g. `make up`): each notification's context appended as one
    # JSON line to this file (0600). Not a secret; Slack and/or this must be set, else alerts reach nobody.
    inbox_file: Path | None = None
    source: str = Field(default_factory=socket.gethostname)  # PagerDuty payload.source
    log_level: str = "info"

    @property
    def effective_state_url(self) -> str:
        return self.state_url or f"sqlite:///{self.home.resolve() / 'state.db'}"


def read_secret_file(path: Path, what: str) -> str:
    """The stripped content of a token file that only its owner may read (like gateway/token_file.py)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise AlertContextError(f"{what} {path} cannot be read: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AlertContextError(f"{what} {path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it")
    if not text:
        raise AlertContextError(f"{what} {path} is empty")
    return text


# ---- the Alertmanager payload ------------------------------------------------------------------
class AmAlert(BaseModel):
    status: str = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str = ""


class AmNotification(BaseModel):
    """Alertmanager's webhook body, version 4 (unknown fields are kept out, not refused)."""

    version: str = "4"
    status: str = "firing"
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: int = 0
    alerts: list[AmAlert]
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""


def describe_alert(alert: AmAlert) -> dict[str, Any]:
    return {
        "alertname": alert.labels.get("alertname", "unnamed"),
        "status": alert.status,
        "severity": alert.labels.get("severity", "unknown"),
        # The rules put `value: "{{ $value }}"` in annotations: Alertmanager does not carry $value otherwise.
        "value": alert.annotations.get("value"),
        "summary": alert.annotations.get("summary") or alert.annotations.get("description"),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": alert.startsAt,
        "endsAt": alert.endsAt,
        "fingerprint": alert.fingerprint,
        "generatorURL": alert.generatorURL,
    }


# ---- the context ------------------------------------------------------------------------------
class ContextReader:
    """Reads the gateway (HTTP) and the routing table (SQL); every failure becomes a named gap."""

    def __init__(self, settings: AlertContextSettings, gateway_token: str | None) -> None:
        self._settings = settings
        headers = {"Authorization": f"Bearer {gateway_token}"} if gateway_token else {}
        self._gateway = httpx.AsyncClient(base_url=settings.gateway_url, headers=headers,
                                          timeout=settings.gateway_timeout_s)
        self._routing_reader: RoutingTableReader | None = None

    async def aclose(self) -> None:
        await self._gateway.aclose()
        if self._routing_reader is not None:
            self._routing_reader.close()

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> tuple[Any, str | None]:
        where = f"gateway GET {path} at {self._settings.gateway_url}"
        try:
            response = await self._gateway.get(path, params=params)
        except httpx.HTTPError as exc:
            return None, f"{where} unreachable: {type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return None, f"{where} answered {response.status_code}: {response.text[:200]}"
        try:
            return response.json(), None
        except ValueError:
            return None, f"{where} answered non-JSON"

    def _routing(self) -> tuple[Any, str | None]:
        try:
            if self._routing_reader is None:
                self._routing_reader = RoutingTableReader(self._settings.effective_state_url,
                                                          table=self._settings.routing_table)
            found = self._routing_reader.read()
        except RoutingTableUnavailable as exc:
            return None, f"routing table: {exc}"
        if found is None:
            return None, (f"routing table {state_table_name(self._settings.routing_table)} at "
                          f"{self._routing_reader.shown} is empty (no routing change applied yet)")
        return {"revision": found["revision"], "updated_at": found["updated_at"], "updated_by": found["updated_by"],
                "table": {"policies": found["policies"], "routes": found["routes"]}}, None

    async def read(self) -> dict[str, Any]:
        state, orders, decisions, alerts, routing = await asyncio.gather(
            self._get("/v1/state"),
            self._get("/v1/orders", {"limit": RECENT}),
            self._get("/v1/decisions", {"limit": RECENT}),
            self._get("/v1/alerts"),
            asyncio.to_thread(self._routing),
        )
        unavailable: dict[str, str] = {}
        for key, (_, gap) in (("trading_state", state), ("recent_orders", orders),
                              ("recent_decisions", decisions), ("gateway_alerts", alerts), ("routing_table", routing)):
            if gap:
                unavailable[key] = gap
        return {
            "trading_state": state[0],
            "recent_orders": (orders[0] or {}).get("events") if orders[0] is not None else None,
            "recent_decisions": (decisions[0] or {}).get("events") if decisions[0] is not None else None,
            "gateway_alerts": (alerts[0] or {}).get("alerts") if alerts[0] is not None else None,
            "routing_table": routing[0],
            "unavailable": unavailable,
        }


def build_context(notification: AmNotification, read: dict[str, Any], destination: Destination) -> dict[str, Any]:
    return {
        "destination": destination,
        "status": notification.status,
        "group_labels": notification.groupLabels,
        "common_labels": notification.commonLabels,
        "alertmanager_url": notification.externalURL,
        "truncated_alerts": notification.truncatedAlerts,
        "alerts": [describe_alert(a) for a in notification.alerts],
        **read,
    }


# ---- the messages -----------------------------------------------------------------------------
def _clip(text: str, limit: int = _SLACK_SECTION_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 15] + "\n... (clipped)"


def _event_line(event: dict[str, Any]) -> str:
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    keys = ("symbol", "side", "qty", "price", "status", "target_level", "approved", "target_weight")
    detail = ", ".join(f"{k}={payload[k]}" for k in keys if k in payload)
    return f"#{event.get('seq', '?')} {event.get('occurred_at', '')} {event.get('kind', '')} {detail}".strip()


def slack_message(context: dict[str, Any]) -> dict[str, Any]:
    """Slack incoming-webhook JSON: `text` (the notification fallback) and Block Kit `blocks`."""
    alerts = context["alerts"]
    names = sorted({a["alertname"] for a in alerts})
    icon = ":red_circle:" if context["status"] == "firing" else ":large_green_circle:"
    text = f"{icon} [{context['status'].upper()}] {', '.join(names)} ({context['destination']}, {len(alerts)} alert(s))"
    alert_lines = []
    for a in alerts:
        where = ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("alertname", "severity"))
        alert_lines.append(f"*{a['alertname']}* {a['status']} value={a['value']} {where}\n{a['summary'] or ''}".strip())
    state = context["trading_state"] or {}
    state_line = f"*Trading state:* {state.get('trading_state', 'unknown')}"
    if isinstance(state.get("open_orders"), list):
        state_line += f"  open orders: {len(state['open_orders'])}"
    directive = state.get("latest_directive") or {}
    if directive:
        state_line += f"  directive: {directive.get('directive_id')} ({directive.get('mode')})"
    routing = context["routing_table"]
    if routing:
        state_line += f"\n*Routing table:* revision {routing['revision']} (updated {routing['updated_at']})"
    gw_alerts = context["gateway_alerts"] or []
    if gw_alerts:
        state_line += "\n*Gateway alerts:* " + ", ".join(str(g.get("code", g)) for g in gw_alerts[:10])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": text[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n\n".join(alert_lines))}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(state_line)}},
    ]
    for key, title in (("recent_orders", "Recent orders"), ("recent_decisions", "Recent decisions")):
        events = context[key]
        if events:
            lines = "\n".join(_event_line(e) for e in events[:10])
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*{title}:*\n```{lines}```")}})
    if context["unavailable"]:
        gaps = "\n".join(f"- {k}: {v}" for k, v in context["unavailable"].items())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*Context not available:*\n{gaps}")}})
    if context["alertmanager_url"]:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                                                         "text": f"<{context['alertmanager_url']}|Alertmanager>"}]})
    return {"text": text, "blocks": blocks}


def _fit(details: dict[str, Any]) -> dict[str, Any]:
    """PagerDuty refuses events over 512 KB: halve the event lists (oldest dropped) until the details fit,
    and say so, rather than lose the page."""
    clipped = False
    while len(json.dumps(details, default=str)) > _PAGERDUTY_DETAILS_BYTES:
        lists = [k for k in ("recent_orders", "recent_decisions", "gateway_alerts") if details.get(k)]
        if not lists:
            details = {**details, "routing_table": "(clipped: too large for PagerDuty)"}
            break
        for key in lists:
            details = {**details, key: details[key][:len(details[key]) // 2]}
        clipped = True
    return {**details, "clipped": True} if clipped else details


def pagerduty_events(context: dict[str, Any], routing_key: str, source: str) -> list[dict[str, Any]]:
    """One Events API v2 event per alert: its own dedup_key, so a resolve closes exactly that incident."""
    events = []
    for alert in context["alerts"]:
        summary = f"{alert['alertname']}: {alert['summary'] or 'no summary'} (value {alert['value']})"
        details = _fit({**{k: v for k, v in context.items() if k != "alerts"}, "alert": alert})
        events.append({
            "routing_key": routing_key,
            "event_action": "resolve" if alert["status"] == "resolved" else "trigger",
            "dedup_key": f"{alert['alertname']}-{alert['fingerprint']}",
            "payload": {
                "summary": summary[:1024],  # PagerDuty's limit
                "severity": "critical",
                "source": source,
                "component": alert["labels"].get("job") or alert["labels"].get("service") or "marlops",
                "group": "marlops",
                "class": alert["alertname"],
                "custom_details": details,
            },
            "links": [{"href": alert["generatorURL"], "text": "Prometheus"}] if alert["generatorURL"] else [],
        })
    return events


# ---- the app ----------------------------------------------------------------------------------
def create_app(settings: AlertContextSettings, *, insecure_no_auth: bool = False) -> FastAPI:
    """The webhook app. `insecure_no_auth` is a parameter and a flag, never a setting: no env file or variable
    may quietly open a service that pages people."""
    expected = None if insecure_no_auth else _expected_token(settings)
    if settings.slack_webhook_url is None and settings.inbox_file is None:
        raise AlertContextError(f"neither {ENV_PREFIX}SLACK_WEBHOOK_URL nor {ENV_PREFIX}INBOX_FILE is set: alerts "
                                "would reach nobody")
    if settings.slack_webhook_url is None:
        logger.warning("%sSLACK_WEBHOOK_URL is not set: alerts go to the local inbox %s only", ENV_PREFIX,
                       settings.inbox_file)
    if settings.pagerduty_routing_key is None:
        logger.warning("%sPAGERDUTY_ROUTING_KEY is not set: pages go to %s only", ENV_PREFIX,
                       "Slack" if settings.slack_webhook_url is not None else "the local inbox")
    gateway_token = (read_secret_file(settings.gateway_token_file, "gateway token file")
                     if settings.gateway_token_file else None)
    quiet_http_client_logs()
    reader = ContextReader(settings, gateway_token)
    forwarder = httpx.AsyncClient(timeout=settings.forward_timeout_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await reader.aclose()
        await forwarder.aclose()

    app = FastAPI(title="marlops alert context webhook", docs_url=None, redoc_url=None, lifespan=lifespan)

    # A dependency, so a caller without the token is refused before its body is even parsed.
    def _authorize(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            logger.warning("refused %s %s: missing or wrong bearer token", request.method, request.url.path)
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def _post(what: str, url: str, body: dict[str, Any]) -> str | None:
        try:
            response = await forwarder.post(url, json=body)
        except httpx.HTTPError as exc:
            return f"{what}: {type(exc).__name__}"  # never the URL: Slack's URL is the secret
        if response.status_code >= 300:
            return f"{what}: HTTP {response.status_code} {response.text[:200]}"
        return None

    # The last notifications handled (in memory: a record of delivery, not of incidents; the inbox/Slack hold those).
    deliveries: deque[dict[str, Any]] = deque(maxlen=DELIVERIES_KEPT)

    def _delivered(context: dict[str, Any], targets: list[str], failures: list[str]) -> None:
        deliveries.append({
            "at": datetime.now(UTC).isoformat(), "destination": context["destination"], "status": context["status"],
            "alerts": [{k: a[k] for k in ("alertname", "status", "severity", "labels", "fingerprint")}
                       for a in context["alerts"]],
            "forwarded": not failures, "targets": targets, "failures": failures,
        })

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/deliveries", dependencies=[Depends(_authorize)])
    def list_deliveries(alertname: str | None = None) -> dict[str, Any]:
        """The last notifications handled, oldest first (optionally only those carrying `alertname`)."""
        kept = [d for d in deliveries if alertname is None or any(a["alertname"] == alertname for a in d["alerts"])]
        return {"deliveries": kept}

    @app.post("/v1/alertmanager/{destination}", dependencies=[Depends(_authorize)])
    async def receive(destination: Destination, notification: AmNotification) -> dict[str, Any]:
        context = build_context(notification, await reader.read(), destination)
        posts = []
        if settings.slack_webhook_url is not None:
            posts.append(_post("slack", settings.slack_webhook_url.get_secret_value(), slack_message(context)))
        if settings.inbox_file is not None:
            posts.append(asyncio.to_thread(_append_inbox, settings.inbox_file, context))
        pd_events: list[dict[str, Any]] = []
        if destination == "page" and settings.pagerduty_routing_key is not None:
            pd_events = pagerduty_events(context, settings.pagerduty_routing_key.get_secret_value(), settings.source)
            posts += [_post(f"pagerduty {e['dedup_key']}", settings.pagerduty_url, e) for e in pd_events]
        failures = [f for f in await asyncio.gather(*posts) if f]
        names = ",".join(sorted({a["alertname"] for a in context["alerts"]}))
        sent = [name for name, on in (("slack", settings.slack_webhook_url is not None),
                                      ("the local inbox", settings.inbox_file is not None)) if on]
        _delivered(context, [*sent, *(["pagerduty"] if pd_events else [])], failures)
        if failures:
            logger.error("alert %s (%s) not fully forwarded: %s", names, destination, "; ".join(failures))
            # 502: Alertmanager retries the notification.
            raise HTTPException(502, {"forwarded": False, "failures": failures})
        logger.info("alert %s (%s, %s) forwarded to %s%s; context gaps: %s", names, destination,
                    notification.status, " and ".join(sent),
                    f" and pagerduty ({len(pd_events)} event(s))" if pd_events else "",
                    ", ".join(context["unavailable"]) or "none")
        return {"forwarded": True, "slack": int(settings.slack_webhook_url is not None), "pagerduty": len(pd_events),
                "inbox": int(settings.inbox_file is not None), "unavailable": context["unavailable"]}

    return app


def _append_inbox(path: Path, context: dict[str, Any]) -> str | None:
    """One JSON line (the whole context) appended to the local inbox, a 0600 file in a 0700 folder when this creates
    them; None, or why it failed (the notification is then answered 502 and retried)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(context, default=str) + "\n")
    except OSError as exc:
        return f"inbox {path}: {exc.strerror or type(exc).__name__}"
    return None


def quiet_http_client_logs() -> None:
    """httpx logs every request's URL at INFO, and the Slack webhook URL is a credential: keep those at WARNING."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _expected_token(settings: AlertContextSettings) -> str:
    if settings.token_file is None:
        raise AlertContextError(f"{ENV_PREFIX}TOKEN_FILE is not set: the webhook needs the bearer token Alertmanager "
                                "presents (or start it with --insecure-no-auth, for a local test only)")
    return read_secret_file(settings.token_file, "alert webhook token file")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m monitoring.alert_context", description=__doc__.split("\n")[0])
    parser.add_argument("--host", help=f"listen address (env {ENV_PREFIX}HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"listen port (env {ENV_PREFIX}PORT, default 9095)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="accept notifications without the bearer token (local tests only)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = AlertContextSettings(**overrides)
    try:  # JSON lines off a terminal (`make up`: a log file), text on one; MARLOPS_LOG_FORMAT overrides
        configure_logging(settings.log_level, service="alert-context")
    except ConfigError as exc:
        raise SystemExit(f"alert context webhook: {exc}") from None
    quiet_http_client_logs()
    if args.insecure_no_auth:
        logger.warning("--insecure-no-auth: ANY local process can post alerts to this webhook and page people")
    try:
        app = create_app(settings, insecure_no_auth=args.insecure_no_auth)
    except AlertContextError as exc:
        raise SystemExit(f"alert context webhook: {exc}") from None
    logger.info("alert context webhook on %s:%s, gateway %s, state store %s", settings.host, settings.port,
                settings.gateway_url, make_url(settings.effective_state_url).render_as_string())
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
                log_config=None)  # uvicorn's own lines through the same handler and format


if __name__ == "__main__":
    main()
