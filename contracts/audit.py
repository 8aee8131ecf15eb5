from datetime import datetime
from typing import Any, Literal

from contracts.base import Frozen

AuditKind = Literal[
    "decision", "directive", "risk_decision", "order", "fill", "state_change", "config_change"
]


class AuditEvent(Frozen):
    kind: AuditKind
    occurred_at: datetime
    principal: str
    payload: dict[str, Any]
