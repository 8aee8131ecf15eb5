"""BarOutcome (what the trading service saw and the gateway answered) -> BarRecord (what the lifecycle judges).

P&L of a symbol for a bar is the position held since the previous bar marked to this bar's close, less the
estimated cost of this bar's orders: the same accounting for every cohort, so canary and control compare fairly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from marlops.lifecycle.records import BarRecord, SymbolBar
from marlops.trading import BarOutcome


class BarRecorder:
    """Stateful: remembers each symbol's previous quantity and price. One recorder per trading run."""

    def __init__(self, sink: Callable[[BarRecord], None] | None = None, *, keep: bool = True) -> None:
        self._qty: dict[str, float] = {}
        self._price: dict[str, float] = {}
        self._sink = sink
        self._keep = keep  # False for a live service: the sink keeps them, memory does not grow
        self.records: list[BarRecord] = []

    def __call__(self, outcome: BarOutcome) -> BarRecord | None:
        detail = outcome.detail
        if outcome.status != "decided" or detail is None:
            return None
        orders_by_symbol: dict[str, list[dict[str, object]]] = {}
        for order in detail.orders:
            orders_by_symbol.setdefault(str(order.get("symbol")), []).append(order)
        denied = {str(r.get("symbol")): str(r.get("reason_code") or "") for r in detail.risk
                  if not r.get("approved", True)}
        failed = set(detail.failed)
        rows: list[SymbolBar] = []
        for decision in detail.decisions:
            sym = decision.symbol
            price = float(detail.prices.get(sym, decision.price))
            qty = float(detail.positions.get(sym, 0.0))
            orders = orders_by_symbol.get(sym, [])
            cost = sum(max(0.0, _num(o.get("estimated_cost"))) for o in orders)
            notional = sum(abs(_num(o.get("qty"))) * price for o in orders)
            prev_qty, prev_price = self._qty.get(sym, 0.0), self._price.get(sym, price)
            variant = detail.variants.get(sym, "production")
            acting = decision.policy_version or ""
            shadow = detail.shadows.get(sym)
            rows.append(SymbolBar(
                bar_index=outcome.bar_index, timestamp=outcome.timestamp.isoformat(), symbol=sym, variant=variant,
                policy_version=acting, action=int(decision.action), probabilities=tuple(decision.probabilities),
                price=price, position_qty=qty, position_value=qty * price,
                pnl=prev_qty * (price - prev_price) - cost, cost=cost, traded_notional=notional,
                denied=sym in denied, denial_code=denied.get(sym, ""),
                # The routed version failed when the symbol was decided by a version that failed, or by the
                # fallback while routed elsewhere after a failure this bar.
                error=bool(failed) and (acting in failed or (variant != "sl_fallback" and acting.startswith("sl_fallback"))),
                inference_ms=float(detail.inference_ms.get(acting, 0.0)),
                shadow_version=shadow[0] if shadow else None, shadow_action=shadow[1] if shadow else None,
                shadow_probabilities=shadow[2] if shadow else None))
            self._qty[sym], self._price[sym] = qty, price
        record = BarRecord(bar_index=outcome.bar_index, timestamp=outcome.timestamp.isoformat(), symbols=tuple(rows),
                           decision_latency_ms=outcome.latency_ms, equity=outcome.equity,
                           trading_state=outcome.trading_state, routing_revision=detail.routing_revision,
                           # the shadow replay applies the same master directive to both sides
                           extra={"directive_mode": detail.directive_mode} if detail.directive_mode else {})
        if self._keep:
            self.records.append(record)
        if self._sink is not None:
            self._sink(record)
        return record


def _num(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return out if math.isfinite(out) else 0.0
