"""`marlops alert-drill`: prove that alerting reaches people, on the deployment itself.

    marlops alert-drill [--severity ticket|page] [--alertmanager-url URL] [--alert-context-url URL] [--token-file F]

Posts one synthetic alert (`MarlopsAlertDrill`, its own `drill_id` label, summary "alerting drill: not an incident")
to Alertmanager's API, waits until the marlops context webhook has delivered it (its `GET /v1/deliveries`, the same
bearer token Alertmanager uses), then resolves it. A `ticket` drill goes to Slack (or the local inbox) after the
ticket route's group wait (30 s as shipped); a `page` drill to Slack and PagerDuty after 10 s, so it pages whoever
is on call: say so to them first. The drill carries no `playbook` label, so no playbook acts on it, and it is not
inhibited by a halt. Exit 0 when delivered, 1 when it was not within --timeout (what did arrive is printed), 2 on
bad input (no token, an unreachable Alertmanager).

Defaults come from `<MARLOPS_HOME>/up.json` (the URLs `make up` started) and `<MARLOPS_HOME>/tokens/
alert_context.token`, else 127.0.0.1 and `make up`'s ports.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from marlops.errors import MarlopsError
from marlops.paths import StatePaths
from marlops.up_options import ALERT_CONTEXT_TOKEN, UpOptions

logger = logging.getLogger(__name__)

DRILL_ALERTNAME = "MarlopsAlertDrill"
DEFAULT_TIMEOUT_S = 120.0  # the ticket route waits 30 s before its first notification


class AlertDrillError(MarlopsError):
    """The drill could not be started (bad token, Alertmanager refused or unreachable)."""


@dataclass(frozen=True)
class DrillResult:
    drill_id: str
    severity: str
    delivered: bool
    seconds: float  # from posting the alert to its delivery (or to the timeout)
    destination: str | None  # the webhook path Alertmanager chose: page | ticket
    targets: list[str]  # where the webhook sent it: slack, the local inbox, pagerduty
    failures: list[str]  # forwards that failed (Alertmanager retries those)
    resolved_posted: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _drill_alert(drill_id: str, severity: str, starts: datetime, *, ends: datetime | None = None) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "labels": {"alertname": DRILL_ALERTNAME, "severity": severity, "drill_id": drill_id, "service": "marlops"},
        "annotations": {"summary": "alerting drill: not an incident",
                        "description": f"`marlops alert-drill` {drill_id}: checks that alerts reach their receivers"},
        "startsAt": starts.isoformat(),
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return alert


def _post_alert(client: httpx.Client, alertmanager_url: str, alert: dict[str, Any]) -> None:
    try:
        response = client.post(f"{alertmanager_url}/api/v2/alerts", json=[alert])
    except httpx.HTTPError as exc:
        raise AlertDrillError(f"Alertmanager at {alertmanager_url} unreachable: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise AlertDrillError(f"Alertmanager at {alertmanager_url} refused the drill alert: HTTP "
                              f"{response.status_code} {response.text[:200]}")


def _find_delivery(client: httpx.Client, context_url: str, token: str, drill_id: str) -> dict[str, Any] | None:
    try:
        response = client.get(f"{context_url}/v1/deliveries", params={"alertname": DRILL_ALERTNAME},
                              headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return None  # the webhook may be restarting: keep waiting until the timeout
    if response.status_code == 401:
        raise AlertDrillError(f"the context webhook at {context_url} refused the token (401): is it the "
                              "alert_context token Alertmanager uses?")
    if response.status_code != 200:
        return None
    for delivery in reversed(response.json()["deliveries"]):
        if delivery["status"] == "firing" and any(a["labels"].get("drill_id") == drill_id
                                                  for a in delivery["alerts"]):
            return dict(delivery)
    return None


def run_drill(*, alertmanager_url: str, context_url: str, token: str, severity: str = "ticket",
              timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 0.5,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> DrillResult:
    """Fire, wait for delivery, resolve. Raises AlertDrillError when the drill cannot start."""
    if severity not in ("ticket", "page"):
        raise AlertDrillError(f"severity must be ticket or page, not {severity!r}")
    drill_id = uuid.uuid4().hex[:12]
    with httpx.Client(timeout=10.0) as client:
        # A wrong token is refused (AlertDrillError) before anything fires: a drill nobody can see delivered is no drill.
        _find_delivery(client, context_url, token, drill_id)
        started, starts = clock(), datetime.now(UTC)
        _post_alert(client, alertmanager_url, _drill_alert(drill_id, severity, starts))
        logger.info("alert drill %s (%s) posted to %s; waiting up to %.0fs for the context webhook to deliver it",
                    drill_id, severity, alertmanager_url, timeout_s)
        delivery = None
        while delivery is None and clock() - started < timeout_s:
            sleep(poll_s)
            delivery = _find_delivery(client, context_url, token, drill_id)
        seconds = clock() - started
        resolved = True
        try:
            _post_alert(client, alertmanager_url, _drill_alert(drill_id, severity, starts, ends=datetime.now(UTC)))
        except AlertDrillError as exc:
            logger.warning("could not resolve drill %s (it expires by itself): %s", drill_id, exc)
            resolved = False
    return DrillResult(drill_id=drill_id, severity=severity, delivered=delivery is not None and delivery["forwarded"],
                       seconds=round(seconds, 3), destination=None if delivery is None else delivery["destination"],
                       targets=[] if delivery is None else list(delivery["targets"]),
                       failures=[] if delivery is None else list(delivery["failures"]), resolved_posted=resolved)


# ---- the command ----------------------------------------------------------------------------------
def add_alert_drill_parser(subparsers: Any) -> argparse.ArgumentParser:
    drill = subparsers.add_parser(
        "alert-drill", help="fire a synthetic alert through Alertmanager and check the context webhook delivered it")
    drill.add_argument("--severity", choices=["ticket", "page"], default="ticket",
                       help="ticket: Slack / local inbox (default); page: Slack and PagerDuty (warn on-call first)")
    drill.add_argument("--alertmanager-url", default=None,
                       help="default: up.json's, else http://127.0.0.1:<make up's port>")
    drill.add_argument("--alert-context-url", default=None,
                       help="the marlops context webhook (default: up.json's, else http://127.0.0.1:<make up's port>)")
    drill.add_argument("--token-file", type=Path, default=None,
                       help=f"the bearer token Alertmanager shows the webhook (default: <MARLOPS_HOME>/tokens/"
                            f"{ALERT_CONTEXT_TOKEN})")
    drill.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for delivery")
    drill.add_argument("--json", action="store_true", help="print the result as JSON")
    drill.set_defaults(func=cmd_alert_drill)
    return drill


def _up_urls(paths: StatePaths) -> dict[str, str]:
    record = paths.root / "up.json"
    if not record.is_file():
        return {}
    try:
        return dict(json.loads(record.read_text()).get("urls", {}))
    except (OSError, ValueError):
        return {}


def cmd_alert_drill(args: argparse.Namespace) -> int:
    from gateway.token_file import read_token_file

    paths = StatePaths.from_env()
    urls = _up_urls(paths)
    alertmanager = args.alertmanager_url or urls.get("alertmanager") or \
        f"http://127.0.0.1:{UpOptions.alertmanager_port}"
    context = args.alert_context_url or urls.get("alert_context") or \
        f"http://127.0.0.1:{UpOptions.alert_context_port}"
    token_file = args.token_file or paths.tokens_dir / ALERT_CONTEXT_TOKEN
    token = read_token_file(token_file)  # TokenFileError (exit 2) names the file and what is wrong with it
    result = run_drill(alertmanager_url=alertmanager.rstrip("/"), context_url=context.rstrip("/"), token=token,
                       severity=args.severity, timeout_s=args.timeout)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif result.delivered:
        print(f"alert drill {result.drill_id} ({result.severity}) delivered in {result.seconds:.1f}s via the "
              f"{result.destination} route to {', '.join(result.targets)}; resolved")
    else:
        print(f"alert drill {result.drill_id} ({result.severity}) NOT delivered within {args.timeout:.0f}s"
              + (f": {'; '.join(result.failures)}" if result.failures else
                 f" (nothing reached the webhook at {context}: check Alertmanager's routes and its log)"))
    return 0 if result.delivered else 1
