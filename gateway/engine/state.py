"""GatewayState: everything a gateway needs to resume after a kill -9, and the only thing restored at start.

It lives in the audit store's state table as sections, each written by the one component that owns
it, in the same transaction as the audit rows that justify the change:

  gateway_state/kill_switch     trading state, safe mode plan, defensive override, drawdown high-water marks,
                                latency streak
                                (the kill switch: with its state_change rows and after each timestep)
  gateway_state/last_bar        the last bar decided per symbol (the timestep: with its decision rows)
  gateway_state/inflight/<id>   one key per order between intent and final answer (execution: with the
                                order's intent, answer and fill rows; deleted when the order is done)

One key per in-flight order keeps each order update O(1) while orders are routed concurrently.
A trail written before these sections existed is read once from its older keys (and the trading
state from its last state_change row) and rewritten as sections at start.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.orders import TradingState
from gateway.domain.flatten import FlattenPlan
from gateway.domain.overlay import DefensiveOverride
from gateway.domain.triggers import DrawdownMarks
from gateway.inflight import InflightOrder

KILL_SWITCH_KEY = "gateway_state/kill_switch"
LAST_BAR_KEY = "gateway_state/last_bar"
INFLIGHT_PREFIX = "gateway_state/inflight/"
# Keys of the layout before GatewayState (deleted once rewritten as sections).
LEGACY_KEYS = ("last_bar", "inflight", "drawdown_marks", "latency_streak", "safe_mode")


@dataclass
class GatewayState:
    trading_state: TradingState = TradingState.ACTIVE
    safe_mode: FlattenPlan | None = None
    defensive_override: DefensiveOverride | None = None
    marks: DrawdownMarks = field(default_factory=DrawdownMarks)
    latency_streak: int = 0
    last_bar: dict[str, int] = field(default_factory=dict)
    inflight: dict[str, InflightOrder] = field(default_factory=dict)

    # ---- sections, as written to the state table --------------------------------------------
    def kill_switch_section(self) -> dict[str, Any]:
        return {KILL_SWITCH_KEY: {
            "trading_state": self.trading_state.value,
            "safe_mode": self.safe_mode.as_dict() if self.safe_mode is not None else None,
            "defensive_override": (self.defensive_override.as_dict()
                                   if self.defensive_override is not None else None),
            "drawdown_marks": self.marks.as_dict(),
            "latency_streak": self.latency_streak,
        }}

    def last_bar_section(self) -> dict[str, Any]:
        return {LAST_BAR_KEY: dict(self.last_bar)}

    def inflight_section(self, *client_order_ids: str) -> dict[str, Any]:
        """The keys of these orders: their current record, or None (deleted) once they left the ledger."""
        out: dict[str, Any] = {}
        for cid in client_order_ids:
            order = self.inflight.get(cid)
            out[INFLIGHT_PREFIX + cid] = order.as_dict() if order is not None else None
        return out

    def all_sections(self) -> dict[str, Any]:
        return {**self.kill_switch_section(), **self.last_bar_section(), **self.inflight_section(*self.inflight)}

    # ---- restore ------------------------------------------------------------------------------
    @classmethod
    def restore(cls, stored: Mapping[str, Any],
                legacy_trading_state: Callable[[], TradingState | None] = lambda: None) -> tuple["GatewayState", bool]:
        """The state from the state table's rows; returns (state, legacy) where legacy says it came
        from the layout before sections (the caller rewrites it as sections)."""
        ks = stored.get(KILL_SWITCH_KEY)
        if ks is not None:
            inflight = {key[len(INFLIGHT_PREFIX):]: InflightOrder.from_dict(value)
                        for key, value in stored.items() if key.startswith(INFLIGHT_PREFIX) and value}
            return cls(
                trading_state=TradingState(ks["trading_state"]),
                safe_mode=FlattenPlan.from_dict(ks["safe_mode"]) if ks.get("safe_mode") else None,
                defensive_override=(DefensiveOverride.from_dict(ks["defensive_override"])
                                    if ks.get("defensive_override") else None),
                marks=DrawdownMarks.from_dict(ks.get("drawdown_marks")),
                latency_streak=int(ks.get("latency_streak") or 0),
                last_bar={str(k): int(v) for k, v in (stored.get(LAST_BAR_KEY) or {}).items()},
                inflight=inflight,
            ), False
        legacy = any(key in stored for key in LEGACY_KEYS)
        safe = stored.get("safe_mode")
        return cls(
            trading_state=legacy_trading_state() or TradingState.ACTIVE,
            safe_mode=FlattenPlan.from_dict(safe) if safe else None,
            marks=DrawdownMarks.from_dict(stored.get("drawdown_marks")),
            latency_streak=int(stored.get("latency_streak") or 0),
            last_bar={str(k): int(v) for k, v in (stored.get("last_bar") or {}).items()},
            inflight={cid: InflightOrder.from_dict(v) for cid, v in (stored.get("inflight") or {}).items()},
        ), legacy
