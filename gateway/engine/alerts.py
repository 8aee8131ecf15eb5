"""Active alerts of one gateway: raised by the kill switch, reconciliation and the directive bus;
each published as marlops_gateway_alert_active{name}."""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from gateway.metrics import GatewayMetrics

Severity = Literal["warning", "critical"]


@dataclass(frozen=True)
class Alert:
    code: str
    severity: Severity
    since: datetime
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.code, "severity": self.severity, "since": self.since.isoformat(), "detail": self.detail}


class AlertBook:
    def __init__(self, metrics: GatewayMetrics, now: Callable[[], datetime]) -> None:
        self._metrics = metrics
        self._now = now
        self._lock = threading.Lock()
        self._active: dict[str, Alert] = {}
        self._known: set[str] = set()

    def raise_(self, code: str, severity: Severity, detail: str) -> None:
        """Raise (or refresh the detail of) an alert; `since` stays the first time it was raised."""
        with self._lock:
            existing = self._active.get(code)
            since = existing.since if existing is not None else self._now()
            self._active[code] = Alert(code, severity, since, detail)
            self._publish()

    def clear(self, *codes: str) -> None:
        with self._lock:
            for code in codes:
                self._active.pop(code, None)
            self._publish()

    def clear_all(self) -> None:
        with self._lock:
            self._active.clear()
            self._publish()

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a.as_dict() for a in sorted(self._active.values(), key=lambda a: a.since)]

    def _publish(self) -> None:
        names = set(self._active)
        self._known |= names
        self._metrics.set_alerts(names, self._known)
