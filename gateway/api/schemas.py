"""Request bodies and response shapes of the gateway's HTTP API."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from contracts.decisions import DataTrigger, MasterDirective, SymbolDecision, TimestepDecisions
from gateway.service import TimestepOutcome

# Bounds for query parameters: enough for a console page, small enough to keep one answer cheap.
MAX_PAGE = 1000
MAX_SEQ = 2**63 - 1  # SQL BIGINT; a larger number would overflow the driver instead of matching nothing


# ---- the HTTP boundary of the wire contracts ---------------------------------------------------
# The contracts say what a decision or directive is; these subclasses add what a request from
# outside must also respect, so absurd values get a 422 naming the field instead of reaching the
# domain (a price of 1e-323 makes an infinite share count; a year-1 timestamp with an offset
# overflows when moved to UTC; a huge bar index overflows a SQL integer). They are still the
# contract types, so the service receives a TimestepDecisions / MasterDirective as before.
_FIRST_YEAR, _LAST_YEAR = 1900, 2200
MAX_SYMBOLS = 10_000
MAX_INT64 = 2**63 - 1


def _plausible_time(value: datetime) -> datetime:
    if not _FIRST_YEAR <= value.year <= _LAST_YEAR:
        raise ValueError(f"year must be between {_FIRST_YEAR} and {_LAST_YEAR}")
    return value


ApiDatetime = Annotated[datetime, AfterValidator(_plausible_time)]
Symbol = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9./_-]*$",
                              description="ticker, e.g. AAPL, BRK.B, BTC/USD")]
Label = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7E]+$",
                             description="printable ASCII, no spaces")]


class SymbolDecisionRequest(SymbolDecision):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    symbol: Symbol
    action: int = Field(ge=0, le=2**31 - 1)
    probabilities: tuple[Annotated[float, Field(ge=0.0, le=1.0)], ...] = Field(default=(), max_length=256)
    price: float = Field(ge=1e-6, le=1e9, description="the bar close the decision was made on")
    policy_version: Label | None = Field(default=None, description="the routed policy that decided this symbol "
                                                                    "(default: the timestep's policy_version)")


class TimestepDecisionsRequest(TimestepDecisions):
    """POST /v1/decisions: one decision interval for the whole universe."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    timestep: ApiDatetime
    bar_index: int = Field(ge=0, le=MAX_INT64)
    policy_version: Label
    observation_checksum: str = Field(default="", max_length=128)
    decisions: tuple[SymbolDecisionRequest, ...] = Field(min_length=1, max_length=MAX_SYMBOLS)
    decision_latency_ms: float | None = Field(default=None, ge=0, le=86_400_000)
    triggers: tuple[DataTrigger, ...] = Field(default=(), max_length=8)


class MasterDirectiveRequest(MasterDirective):
    """POST /v1/directives: a risk directive from the master agent service."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    directive_id: Label
    issued_at: ApiDatetime
    ttl_seconds: float = Field(gt=0, le=10 * 365 * 86400)
    policy_version: str = Field(default="unknown", min_length=1, max_length=200)


class OperatorRequest(BaseModel):
    """Who asks for an operator action, and why (both go into the audit trail)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="why, for the audit trail")
    principal: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$",
                           description="who asks; must be the token's principal when tokens are configured")
    trigger: str = Field(default="manual", pattern=r"^(manual|playbook:[a-z][a-z0-9_]{0,63})$",
                         description="what started it: an operator (manual) or a playbook (playbook:<name>, the "
                                     "alert that started the playbook is in the reason); audited")


class FlattenRequest(OperatorRequest):
    """POST /v1/flatten: safe mode, optionally faster than the configured schedule."""

    fraction_per_interval: float | None = Field(
        default=None, gt=0, le=1, allow_inf_nan=False,
        description="share of each position closed per decision interval (default: the configured one; 1.0 "
                    "unwinds everything at the next interval)")


class DefensiveRequest(OperatorRequest):
    """POST /v1/defensive: defensive mode forced under the master until a risk officer clears it."""

    max_position_size: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False,
                                            description="cap per symbol (fraction of equity); default: the "
                                                        "`defensive` preset's")
    risk_scale: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False,
                                     description="scale of every target; default: the `defensive` preset's")


class ErrorBody(BaseModel):
    """Every refusal: a slug and one readable reason per problem."""

    error: str
    reasons: list[str]
    detail: Any = None


class StateAnswer(BaseModel):
    trading_state: str
    changed: bool
    event: dict[str, Any] | None = Field(description="the audited state change; null when nothing changed")


class FlattenAnswer(StateAnswer):
    safe_mode: dict[str, Any] | None = Field(description="the flatten schedule and how much is left to close")


class DefensiveAnswer(BaseModel):
    changed: bool
    defensive_override: dict[str, Any] | None = Field(description="the override in force now (null: none)")


class DirectiveAccepted(BaseModel):
    accepted: bool
    directive_id: str


class AuditEventOut(BaseModel):
    seq: int
    kind: str
    occurred_at: str
    principal: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class EventsPage(BaseModel):
    """Audit events, newest first; pass the last `seq` as `before_seq` for the next page."""

    events: list[AuditEventOut]
    count: int


class AuditSummary(BaseModel):
    counts: dict[str, int]
    total: int
    chain_ok: bool
    first_broken_seq: int | None


class AlertsAnswer(BaseModel):
    alerts: list[dict[str, Any]]


def timestep_response(outcome: TimestepOutcome) -> dict[str, Any]:
    batch = outcome.batch
    return {
        "timestep": batch.timestep.isoformat(),
        "bar_index": batch.bar_index,
        "policy_version": batch.policy_version,
        "timestep_id": outcome.timestep_id,
        # False: orders are routing (status "intent"); GET /v1/timesteps/{timestep_id} says when they settle.
        "settled": outcome.settled,
        "trading_state": outcome.trading_state.value,
        "directive": outcome.directive.model_dump(mode="json") if outcome.directive else None,
        "directive_fallback": outcome.plan.directive_fallback,
        "overlay": outcome.plan.overlay.as_dict(),
        "risk": [r.model_dump(mode="json") for r in outcome.plan.risk],
        "orders": [o.as_dict() for o in outcome.orders],
        "portfolio": outcome.portfolio,
    }
