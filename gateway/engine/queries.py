"""Read-only views of the gateway: the book with its positions, exposure by sector, and the status page."""

from collections.abc import Callable
from typing import Any

from gateway.engine.execution import Book, Execution
from gateway.engine.kill_switch import KillSwitch
from gateway.engine.reconciliation import Reconciliation
from gateway.engine.state import GatewayState
from gateway.settings import GatewaySettings


class Queries:
    def __init__(self, state: GatewayState, book: Book, *, settings: GatewaySettings, kill_switch: KillSwitch,
                 execution: Execution, reconciliation: Reconciliation,
                 directive_bus: Callable[[], dict[str, Any] | None]) -> None:
        self._state = state
        self._book = book
        self._settings = settings
        self._ks = kill_switch
        self._execution = execution
        self._reconciliation = reconciliation
        self._directive_bus = directive_bus

    def drawdown(self) -> float:
        with self._book.lock:
            book = self._book.portfolio
            peak = max(self._state.marks.peak_equity, book.peak_equity)
            return 0.0 if peak <= 0 else max(0.0, 1.0 - book.equity / peak)

    def portfolio_summary(self) -> dict[str, Any]:
        with self._book.lock:
            book = self._book.portfolio
            sectors = self._settings.sectors
            return {
                "equity": book.equity,
                "cash": book.cash,
                "gross_exposure": book.gross_exposure,
                "drawdown": self.drawdown(),
                "peak_equity": max(self._state.marks.peak_equity, book.peak_equity),
                "positions": {
                    sym: {"qty": v.qty, "avg_price": v.avg_price, "mark": v.mark, "market_value": v.market_value,
                          "weight": v.weight, "sector": sectors.get(sym, "unclassified")}
                    for sym, v in book.view().items()
                },
                "open_orders": self._execution.open_order_ids(),
            }

    def exposure_by_sector(self) -> dict[str, Any]:
        with self._book.lock:
            equity = self._book.portfolio.equity
            sectors: dict[str, dict[str, float]] = {}
            for sym, view in self._book.portfolio.view().items():
                row = sectors.setdefault(self._settings.sectors.get(sym, "unclassified"),
                                         {"long": 0.0, "short": 0.0, "gross": 0.0, "net": 0.0})
                value = view.market_value
                row["long" if value >= 0 else "short"] += value
                row["gross"] += abs(value)
                row["net"] += value
        for row in sectors.values():
            row["gross_weight"] = row["gross"] / equity if equity > 0 else 0.0
            row["net_weight"] = row["net"] / equity if equity > 0 else 0.0
        return {"equity": equity, "sectors": dict(sorted(sectors.items()))}

    def status(self) -> dict[str, Any]:
        with self._book.lock:
            plan = self._ks.safe_mode
            safe: dict[str, Any] | None = None
            if plan is not None:
                remaining = {s: p.qty for s, p in self._book.portfolio.positions().items() if p.qty != 0}
                safe = {**plan.as_dict(), "remaining_positions": len(remaining), "flat": not remaining}
            drawdown = self.drawdown()
            inflight = len(self._state.inflight)
            routing = self._book.routing
        return {
            "trading_state": self._ks.trading_state.value,
            "safe_mode": safe,
            "defensive_override": override.as_dict() if (override := self._ks.defensive_override) else None,
            "triggers": {**self._ks.status(), "drawdown": drawdown},
            "alerts": self._ks.alerts.active(),
            "last_reconcile": self._reconciliation.last,
            "directive_bus": dict(bus) if (bus := self._directive_bus()) is not None else None,
            "inflight_orders": inflight,
            "orders_routing": routing,
            "orders_in_rate_window": self._execution.rate.count(),
        }
