from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from contracts.base import Frozen
from contracts.config import DirectivePreset

DirectiveMode = Literal["normal", "cautious", "defensive"]


class SymbolDecision(Frozen):
    """What the symbol agent recommends for one symbol at one timestep."""

    symbol: str = Field(min_length=1)
    action: int = Field(ge=0)
    target_level: float = Field(ge=-1.0, le=1.0)  # fraction of the per-symbol cap; <0 is short
    probabilities: tuple[float, ...] = ()
    price: float = Field(gt=0)  # the bar close the decision was made on
    # The policy that made this decision when symbols of one timestep are routed to different
    # versions (canary, fallback); None = the timestep's policy_version.
    policy_version: str | None = None
    # Set by the trading service when this bar's data for the symbol cannot be trusted (FEED_STALE,
    # BAR_INCONSISTENT, BAR_MISSING, NO_QUORUM, ...): the gateway lets the position shrink but takes no new
    # risk (risk code DATA_UNRELIABLE, with this code in the detail).
    no_new_risk: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]{0,63}$")


# Kill-switch triggers the trading service may raise in band with a timestep (data and model safety).
# Each only tightens: the gateway moves to HALTED before it plans the timestep; resuming is an operator's call.
FEATURE_DRIFT = "FEATURE_DRIFT"
DATA_TRIGGER_CODES: tuple[str, ...] = (FEATURE_DRIFT,)


class DataTrigger(Frozen):
    """A data-safety breach seen by the trading service this bar, e.g. a key feature beyond its sigma limit."""

    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")
    reason: str = Field(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _known(self) -> "DataTrigger":
        if self.code not in DATA_TRIGGER_CODES:
            raise ValueError(f"unknown data trigger {self.code!r}; known: {list(DATA_TRIGGER_CODES)}")
        return self


class TimestepDecisions(Frozen):
    """One decision interval for the whole universe, as sent to the gateway."""

    timestep: datetime
    bar_index: int = Field(ge=0)
    policy_version: str = Field(min_length=1)
    observation_checksum: str = ""
    decisions: tuple[SymbolDecision, ...] = Field(min_length=1)
    # Bar in -> decisions out (features + inference), measured by the sender; feeds the latency trigger.
    decision_latency_ms: float | None = Field(default=None, ge=0)
    # Data-safety triggers seen on this bar (applied before the timestep is planned).
    triggers: tuple[DataTrigger, ...] = ()
    # The benchmark's (SPY's) close at this bar, for the gateway's benchmark-divergence gauge; None = not sent
    # (the gateway then uses the benchmark symbol's decision price if this timestep decides it).
    benchmark_price: float | None = Field(default=None, gt=0)


class MasterDirective(Frozen):
    """A risk directive from the master agent. Older than `ttl_seconds` of market time = missing."""

    directive_id: str = Field(min_length=1)
    issued_at: datetime
    ttl_seconds: float = Field(gt=0)
    mode: DirectiveMode
    max_position_size: float = Field(gt=0, le=1.0)  # fraction of equity per symbol
    risk_scale: float = Field(ge=0, le=1.0)
    defensive: bool
    policy_version: str = "unknown"


def directive_from_preset(
    *,
    directive_id: str,
    issued_at: datetime,
    ttl_seconds: float,
    mode: DirectiveMode,
    preset: DirectivePreset,
    policy_version: str,
) -> MasterDirective:
    """The directive the master agent issues for `mode`: one builder for the live service and the backtest."""
    return MasterDirective(
        directive_id=directive_id,
        issued_at=issued_at,
        ttl_seconds=ttl_seconds,
        mode=mode,
        max_position_size=preset.max_position_size,
        risk_scale=preset.risk_scale,
        defensive=preset.defensive,
        policy_version=policy_version,
    )


class MasterDirectivePublished(Frozen):
    """Envelope stamp: when (wall clock, UTC) a directive left the master service, for propagation latency."""

    directive: MasterDirective
    published_at: datetime


class MarketSnapshotMessage(Frozen):
    """What the trading service publishes on the `market-snapshots` channel for each bar it decides:
    the market-level (master) features at that bar, so the master agent service needs no feed of its own."""

    timestamp: datetime  # market time of the bar (tz-aware UTC)
    bar_index: int = Field(ge=0)
    master_features: dict[str, float]  # raw MASTER_MARKET_FEATURES at `timestamp` (name -> value)
    regime_shift: bool = False
    feature_spec_hash: str = ""
    published_at: datetime  # wall clock, UTC
