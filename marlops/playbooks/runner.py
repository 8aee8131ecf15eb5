"""An Alertmanager notification -> the playbook of each firing alert that names one, run once per incident.

An incident is (alert fingerprint, alert start): Alertmanager re-sends a firing alert every repeat_interval and
after a restart; the run store's unique key makes the second delivery a no-op ("already_run"). Every step goes
out with trigger `playbook:<name>` and a reason naming the alert (name, fingerprint, start, triggering value), so
the gateway's audit trail and the routing audit say which alert started what. A step that fails stops the run
(status failed, the error recorded); steps that succeeded stay done: each only tightens.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from marlops.errors import RoutingError
from marlops.lifecycle.errors import LifecycleError
from marlops.playbooks.actions import Actions, StepError
from marlops.playbooks.definitions import LABEL, PLAYBOOKS, Playbook
from marlops.playbooks.store import PlaybookRunStore
from monitoring.alert_context import AmAlert, AmNotification
from registry.errors import RegistryError

logger = logging.getLogger(__name__)

UNWIND_FRACTION = 1.0


def incident_of(alert: AmAlert) -> str:
    return f"{alert.fingerprint or alert.labels.get('alertname', '?')}@{alert.startsAt or '?'}"


def reason_of(playbook: Playbook, alert: AmAlert) -> str:
    name = alert.labels.get("alertname", "?")
    value = alert.annotations.get("value")
    summary = alert.annotations.get("summary", "")
    return (f"playbook {playbook.name} ({playbook.summary}) started by alert {name} "
            f"[fingerprint {alert.fingerprint or '-'}, since {alert.startsAt or '-'}"
            + (f", value {value}" if value else "") + "]" + (f": {summary}" if summary else ""))[:2000]


class PlaybookRunner:
    def __init__(self, actions: Actions, store: PlaybookRunStore) -> None:
        self._actions = actions
        self._store = store

    def handle(self, notification: AmNotification) -> list[dict[str, Any]]:
        """One entry per alert of the notification: what happened to it (ran, already_run, resolved, no_playbook,
        unknown_playbook)."""
        return [self._one(alert) for alert in notification.alerts]

    def _one(self, alert: AmAlert) -> dict[str, Any]:
        alertname = alert.labels.get("alertname", "?")
        name = alert.labels.get(LABEL)
        out: dict[str, Any] = {"alertname": alertname, "fingerprint": alert.fingerprint, "playbook": name}
        if not name:
            return {**out, "outcome": "no_playbook"}
        playbook = PLAYBOOKS.get(name)
        if playbook is None:
            logger.error("alert %s names playbook %r, which does not exist (known: %s)", alertname, name,
                         ", ".join(PLAYBOOKS))
            return {**out, "outcome": "unknown_playbook"}
        if alert.status != "firing":
            return {**out, "outcome": "resolved"}  # playbooks only tighten; loosening is an operator's decision
        record = alert.model_dump()
        seq = self._store.claim(incident_of(alert), playbook.name, alertname, record)
        if seq is None:
            return {**out, "outcome": "already_run"}
        reason = reason_of(playbook, alert)
        logger.warning("PLAYBOOK %s started by alert %s (%s)", playbook.name, alertname, incident_of(alert))
        steps: list[dict[str, Any]] = []
        status = "done"
        for step in playbook.steps:
            try:
                result = self._step(step, playbook, reason)
                steps.append({"step": step, "ok": True, "result": result})
                if step == "rollback" and not result.get("rolled_back", False):
                    status = "declined"
            except StepError as exc:
                steps.append({"step": step, "ok": False, "error": str(exc)})
                status = "failed"
                logger.error("PLAYBOOK %s step %s failed: %s", playbook.name, step, exc)
                break
        self._store.finish(seq, status, record, steps)
        return {**out, "outcome": "ran", "status": status, "run": seq, "steps": steps}

    def _step(self, step: str, playbook: Playbook, reason: str) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason, "trigger": f"playbook:{playbook.name}"}
        if step == "safe_mode":
            return self._actions.gateway("/v1/flatten", body)
        if step == "kill_switch":
            return self._actions.gateway("/v1/kill-switch", body)
        if step == "unwind":
            return self._actions.gateway("/v1/flatten", {**body, "fraction_per_interval": UNWIND_FRACTION})
        if step == "defensive":
            return self._actions.gateway("/v1/defensive", body)
        if step == "rollback":
            try:
                return self._actions.rollback(principal=f"playbook:{playbook.name}", reason=reason)
            except (LifecycleError, RoutingError, RegistryError, SQLAlchemyError, OSError) as exc:
                raise StepError(f"rollback: {exc.__class__.__name__}: {exc}") from exc
        raise StepError(f"unknown step {step}")
