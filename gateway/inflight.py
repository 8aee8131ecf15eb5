"""Orders between intent and final answer, in a form that survives a crash.

Every intent is in the in-flight set from the moment it is committed (with its timestep's decisions)
until the broker's answer is final (filled, canceled, rejected...) or it is known never to have
reached the broker. The set is persisted in the audit store's state table in the same transaction
as the audit rows that change it, so after a kill -9 the restarted gateway knows exactly which
orders it must look up.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts.orders import Fill, OrderIntent


@dataclass
class InflightOrder:
    intent: OrderIntent
    recorded_at: datetime  # wall clock of the intent's commit
    applied_qty: float = 0.0  # fills already applied to the book and audited
    applied_notional: float = 0.0
    sent: bool = False  # a submit was attempted (its outcome may be unknown)
    acknowledged: bool = False  # the broker answered the submit (or the order was found there)
    fills: list[Fill] = field(default_factory=list)
    # In memory only: monotonic time the intent became durable (action-to-order latency), when the broker
    # first acknowledged it (order-to-fill), and whether a routing worker owns it right now (nobody else
    # may look it up at the broker meanwhile: a submit may be on the wire).
    durable_at: float | None = None
    acknowledged_at: float | None = None
    routing: bool = False

    @property
    def client_order_id(self) -> str:
        return self.intent.client_order_id

    def as_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent.model_dump(mode="json"),
            "recorded_at": self.recorded_at.isoformat(),
            "applied_qty": self.applied_qty,
            "applied_notional": self.applied_notional,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InflightOrder":
        return cls(
            intent=OrderIntent.model_validate(data["intent"]),
            recorded_at=datetime.fromisoformat(data["recorded_at"]),
            applied_qty=float(data.get("applied_qty", 0.0)),
            applied_notional=float(data.get("applied_notional", 0.0)),
            sent=bool(data.get("sent", True)),
            acknowledged=bool(data.get("acknowledged", False)),
        )


def encode_inflight(orders: dict[str, InflightOrder]) -> dict[str, Any]:
    return {cid: order.as_dict() for cid, order in orders.items()}


def decode_inflight(data: dict[str, Any] | None) -> dict[str, InflightOrder]:
    return {cid: InflightOrder.from_dict(entry) for cid, entry in (data or {}).items()}
