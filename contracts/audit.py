"""The audit trail's rows: one kind per thing that happened, each with a typed payload.

A writer builds the payload model of its kind (`DecisionRecord`, `OrderRecord`, ...) and
`AuditEvent.of(...)` turns it into the row; `payload_model(kind)` says which model reads a row back.
Rows written before a field existed still read (new fields are optional).
"""

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from contracts.base import Frozen
from contracts.decisions import MasterDirective, SymbolDecision
from contracts.orders import Fill, OrderSide, OrderStatus, RiskDecision, TradingState

AuditKind = Literal[
    "decision", "directive", "risk_decision", "order", "fill", "state_change", "config_change", "reconciliation"
]
AUDIT_KINDS: tuple[AuditKind, ...] = get_args(AuditKind)


class Record(BaseModel):
    """Base of the typed payloads: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DecisionRecord(SymbolDecision):
    """A symbol agent's decision as the gateway received it, with its timestep's context."""

    bar_index: int
    timestep: datetime
    observation_checksum: str = ""
    decision_latency_ms: float | None = None


class RiskDecisionRecord(RiskDecision):
    """The guardrails' verdict on one decision, with the trading state and overlay it was judged under."""

    policy_version: str
    bar_index: int
    timestep: datetime
    trading_state: TradingState
    overlay: dict[str, Any]


class OrderRecord(Record):
    """One step of an order's life: the intent, the broker's answers, or the gateway's verdict."""

    status: OrderStatus
    client_order_id: str
    symbol: str
    side: OrderSide
    qty: float
    bar_index: int
    policy_version: str
    # The intent's own fields (status "intent").
    reference_price: float | None = None
    timestep: datetime | None = None
    estimated_cost: float | None = None
    # The broker's answer.
    broker_order_id: str | None = None
    broker_status: OrderStatus | None = None
    filled_qty: float | None = None
    filled_avg_price: float | None = None
    error: str | None = None
    http_status: int | None = None
    # Milliseconds from the intent being durable to the broker's acknowledgement (first answer only).
    action_to_order_ms: float | None = None


class FillRecord(Fill):
    """A fill applied (or, after a restart, only audited) with its realized and estimated cost."""

    reference_price: float
    realized_cost: float
    estimated_cost: float
    applied_to_book: bool = True


class TradingStateRecord(Record):
    event: Literal["trading_state"] = "trading_state"
    previous: TradingState
    current: TradingState
    principal: str
    reason: str
    trigger: str
    safe_mode_ended: bool = False


class SafeModeRecord(Record):
    event: Literal["safe_mode"] = "safe_mode"
    action: Literal["start"] = "start"
    trigger: str
    principal: str
    reason: str
    started_at: datetime
    fraction: float
    slices: dict[str, float]


class DefensiveOverrideRecord(Record):
    """An operator's (or a playbook's) defensive floor under the master set or cleared (see gateway.domain.overlay)."""

    event: Literal["defensive_override"] = "defensive_override"
    action: Literal["set", "clear"]
    trigger: str
    principal: str
    reason: str
    max_position_size: float | None = None
    risk_scale: float | None = None


class Mismatch(Record):
    symbol: str
    book_qty: float
    broker_qty: float


class ReconciliationRecord(Record):
    """The book replaced by the broker's account (the broker is the truth), and what differed."""

    cash: float
    broker_equity: float
    book_equity: float
    positions: dict[str, dict[str, float]]
    mismatches: list[Mismatch]
    inflight: list[str]
    requested_by: str | None = None
    reason: str | None = None


class ConfigChangeRecord(Record):
    config: str
    previous_hash: str | None = None
    hash: str
    values: dict[str, Any]


_MODELS: dict[str, tuple[type[BaseModel], ...]] = {
    "decision": (DecisionRecord,),
    "directive": (MasterDirective,),
    "risk_decision": (RiskDecisionRecord,),
    "order": (OrderRecord,),
    "fill": (FillRecord,),
    "state_change": (TradingStateRecord, SafeModeRecord, DefensiveOverrideRecord),
    "config_change": (ConfigChangeRecord,),
    "reconciliation": (ReconciliationRecord,),
}


def payload_models(kind: AuditKind) -> tuple[type[BaseModel], ...]:
    """The payload model(s) of `kind` (state_change has three, told apart by `event`)."""
    return _MODELS[kind]


def read_payload(kind: AuditKind, payload: dict[str, Any]) -> BaseModel:
    """A stored payload as its typed record (raises pydantic.ValidationError when it is not one)."""
    models = _MODELS[kind]
    if kind == "state_change":
        by_event: dict[Any, type[BaseModel]] = {"safe_mode": SafeModeRecord,
                                                 "defensive_override": DefensiveOverrideRecord}
        return by_event.get(payload.get("event"), TradingStateRecord).model_validate(payload)
    return models[0].model_validate(payload)


class AuditEvent(Frozen):
    kind: AuditKind
    occurred_at: datetime
    principal: str
    payload: dict[str, Any]

    @classmethod
    def of(cls, kind: AuditKind, record: BaseModel, *, occurred_at: datetime, principal: str) -> "AuditEvent":
        """The row for a typed record; the record must be one of `kind`'s payload models."""
        if not isinstance(record, _MODELS[kind]):
            raise TypeError(f"a {kind} audit row takes {[m.__name__ for m in _MODELS[kind]]}, "
                            f"not {type(record).__name__}")
        return cls.model_construct(kind=kind, occurred_at=occurred_at, principal=principal,
                                   payload=record.model_dump(mode="json", exclude_none=True))
