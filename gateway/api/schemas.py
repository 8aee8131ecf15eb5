"""Request bodies and response shapes of the gateway's HTTP API."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.service import TimestepOutcome


class StateChangeRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)
    principal: str = Field(min_length=1, max_length=200)


def timestep_response(outcome: TimestepOutcome) -> dict[str, Any]:
    batch = outcome.batch
    return {
        "timestep": batch.timestep.isoformat(),
        "bar_index": batch.bar_index,
        "policy_version": batch.policy_version,
        "trading_state": outcome.trading_state.value,
        "directive": outcome.directive.model_dump(mode="json") if outcome.directive else None,
        "directive_fallback": outcome.plan.directive_fallback,
        "overlay": outcome.plan.overlay.as_dict(),
        "risk": [r.model_dump(mode="json") for r in outcome.plan.risk],
        "orders": [o.as_dict() for o in outcome.orders],
        "portfolio": outcome.portfolio,
    }
