"""Builders of decisions, directives and fills for the gateway tests (plain functions, no fixtures)."""

from datetime import datetime, timedelta, timezone

from contracts.decisions import MasterDirective, SymbolDecision, TimestepDecisions
from contracts.orders import Fill, OrderSide

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
PAPER_HEADERS = {"APCA-API-KEY-ID": "marlops-paper", "APCA-API-SECRET-KEY": "marlops-paper-secret"}


def batch(levels: dict[str, tuple[float, float]], *, bar_index: int = 0, at: datetime | None = None,
          policy_version: str = "v1") -> TimestepDecisions:
    """`levels` maps symbol -> (target_level, price)."""
    return TimestepDecisions(
        timestep=at or T0 + bar_index * DAY,
        bar_index=bar_index,
        policy_version=policy_version,
        decisions=tuple(
            SymbolDecision(symbol=sym, action=0, target_level=level, price=price)
            for sym, (level, price) in levels.items()
        ),
    )


def directive(mode: str = "normal", *, issued_at: datetime = T0, ttl_seconds: float = 10 * 86400,
              max_position_size: float = 0.10, risk_scale: float = 1.0, defensive: bool | None = None,
              directive_id: str = "d-1") -> MasterDirective:
    return MasterDirective(
        directive_id=directive_id,
        issued_at=issued_at,
        ttl_seconds=ttl_seconds,
        mode=mode,  # type: ignore[arg-type]
        max_position_size=max_position_size,
        risk_scale=risk_scale,
        defensive=(mode == "defensive") if defensive is None else defensive,
    )


def fill(symbol: str, side: OrderSide, qty: float, price: float, coid: str = "mo-test") -> Fill:
    return Fill(client_order_id=coid, broker_order_id="b-1", symbol=symbol, side=side, qty=qty, price=price,
                filled_at=T0)
