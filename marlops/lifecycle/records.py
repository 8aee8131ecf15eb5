"""What the lifecycle observes of trading, one row per (bar, symbol): the input of canary health, model anomaly,
shadow and A/B reports. Built by the trading service's per-bar hook (marlops.lifecycle.recorder); pure data."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LIVE_SCOPE = "live"  # the lifecycle store's scope of the bars `marlops trade` records


def _probability(value: Any) -> float:
    """A stored probability: the store's JSON writes NaN and infinities as null, and a model answering NaN is
    exactly what the model-anomaly sensor must read back (it crashed on it before)."""
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class SymbolBar:
    """One symbol at one bar: who decided, what, and what it earned."""

    bar_index: int
    timestamp: str  # ISO-8601 market time of the bar
    symbol: str
    variant: str  # the routed variant: production | candidate | sl_fallback
    policy_version: str  # the version that actually decided, "symbol_agent/3" (the fallback's when the routed one failed)
    action: int
    probabilities: tuple[float, ...]
    price: float  # the bar's close
    position_qty: float  # shares held after the bar's fills
    position_value: float  # position_qty * price
    pnl: float  # previous bar's qty * (price - previous price) - cost of this bar's fills
    cost: float  # estimated cost of this bar's orders (commission + slippage), >= 0
    traded_notional: float  # |qty| * price of this bar's orders
    denied: bool  # a risk rule denied this symbol's order this bar
    error: bool  # the routed version failed to answer; the fallback (or nobody) decided
    inference_ms: float  # the Triton request that decided this symbol
    shadow_version: str | None = None  # a variant scored but not traded
    shadow_action: int | None = None
    shadow_probabilities: tuple[float, ...] | None = None
    denial_code: str = ""  # the risk rule's upper-case reason when denied (e.g. DEFENSIVE_MODE, PER_SYMBOL_CAP)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SymbolBar:
        data = dict(raw)
        data["probabilities"] = tuple(_probability(p) for p in data.get("probabilities") or ())
        if data.get("shadow_probabilities") is not None:
            data["shadow_probabilities"] = tuple(_probability(p) for p in data["shadow_probabilities"])
        return cls(**data)


@dataclass(frozen=True)
class BarRecord:
    """Every symbol of one bar, plus the bar-wide facts."""

    bar_index: int
    timestamp: str
    symbols: tuple[SymbolBar, ...]
    decision_latency_ms: float
    equity: float
    trading_state: str
    routing_revision: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def of_variant(self, variant: str) -> tuple[SymbolBar, ...]:
        return tuple(s for s in self.symbols if s.variant == variant)

    def as_dict(self) -> dict[str, Any]:
        return {"bar_index": self.bar_index, "timestamp": self.timestamp, "decision_latency_ms": self.decision_latency_ms,
                "equity": self.equity, "trading_state": self.trading_state, "routing_revision": self.routing_revision,
                "extra": dict(self.extra), "symbols": [s.as_dict() for s in self.symbols]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BarRecord:
        return cls(bar_index=int(raw["bar_index"]), timestamp=str(raw["timestamp"]),
                   symbols=tuple(SymbolBar.from_dict(s) for s in raw["symbols"]),
                   decision_latency_ms=float(raw["decision_latency_ms"]), equity=float(raw["equity"]),
                   trading_state=str(raw["trading_state"]), routing_revision=int(raw.get("routing_revision", 0)),
                   extra=dict(raw.get("extra") or {}))
