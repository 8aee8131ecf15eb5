"""Reconciliation: the book replaced by the broker's account and positions (the broker is the truth),
what differed audited as a `reconciliation` row and alerted as RECONCILE_MISMATCH.

It waits for routing to be idle first (and holds the book lock while it swaps the book), so a fill is
never both in the broker's positions it adopts and applied to the book again by a routing worker.
"""

import logging
from typing import Any

from contracts.audit import AuditEvent, Mismatch, ReconciliationRecord
from gateway.audit.store import AuditStore
from gateway.brokers.base import Broker
from gateway.domain.portfolio import Portfolio
from gateway.engine.alerts import AlertBook
from gateway.engine.clock import Clock
from gateway.engine.execution import Book
from gateway.engine.kill_switch import KillSwitch
from gateway.engine.state import GatewayState
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

RECONCILE_MISMATCH = "RECONCILE_MISMATCH"


class Reconciliation:
    def __init__(self, state: GatewayState, book: Book, *, settings: GatewaySettings, broker: Broker,
                 audit: AuditStore, metrics: GatewayMetrics, clock: Clock, kill_switch: KillSwitch,
                 alerts: AlertBook) -> None:
        self._state = state
        self._book = book
        self._settings = settings
        self._broker = broker
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        self._ks = kill_switch
        self._alerts = alerts
        self.last: dict[str, Any] | None = None

    def run(self, *, compare: bool, requested_by: str | None = None, reason: str | None = None,
            idle_timeout_s: float = 60.0) -> dict[str, Any]:
        """Adopt the broker's book; with `compare`, audit and alert where the gateway's book differed."""
        with self._book.lock:
            if not self._book.idle.wait_for(lambda: self._book.routing == 0, timeout=idle_timeout_s):
                logger.warning("reconciliation: %d orders still routing after %.0f s; reconciling anyway",
                               self._book.routing, idle_timeout_s)
            account = self._broker.get_account()
            positions = self._broker.get_positions()
            broker_qty = {p.symbol: p.qty for p in positions}
            book = self._book.portfolio
            mismatches: list[Mismatch] = []
            if compare:
                tol = self._settings.risk.kill_switch.compliance.reconcile_tolerance_qty
                book_qty = {s: p.qty for s, p in book.positions().items()}
                for sym in sorted(set(broker_qty) | set(book_qty)):
                    b, g = broker_qty.get(sym, 0.0), book_qty.get(sym, 0.0)
                    if abs(b - g) > tol:
                        mismatches.append(Mismatch(symbol=sym, book_qty=g, broker_qty=b))
            marks = book.marks() if compare else {}
            adopted = Portfolio.from_broker(account.cash, {p.symbol: (p.qty, p.avg_entry_price) for p in positions})
            if marks:
                adopted.mark({s: m for s, m in marks.items() if s in broker_qty})
            self._book.portfolio = adopted
            record = ReconciliationRecord(
                cash=account.cash, broker_equity=account.equity, book_equity=adopted.equity,
                positions={p.symbol: {"qty": p.qty, "avg_entry_price": p.avg_entry_price} for p in positions},
                mismatches=mismatches, inflight=sorted(self._state.inflight), requested_by=requested_by,
                reason=reason)
            self._audit.append(AuditEvent.of("reconciliation", record, occurred_at=self._clock.now(),
                                             principal=self._settings.principal))
            inflight = len(self._state.inflight)
        if mismatches:
            self._metrics.reconcile_mismatches.inc(len(mismatches))
            self._alerts.raise_(RECONCILE_MISMATCH, "warning",
                                f"book and broker disagreed on {len(mismatches)} symbols; broker adopted: "
                                + ", ".join(f"{m.symbol} {m.book_qty:g}->{m.broker_qty:g}" for m in mismatches[:10]))
            logger.error("reconciliation found %d mismatches: %s", len(mismatches), mismatches[:10])
        self._ks.broker_ok()
        logger.info("reconciled with broker: cash %.2f, %d positions, broker equity %.2f", account.cash,
                    len(positions), account.equity)
        report = {"at": self._clock.now().isoformat(), "cash": account.cash, "broker_equity": account.equity,
                  "positions": len(positions), "mismatches": [m.model_dump() for m in mismatches],
                  "inflight": inflight}
        self.last = report
        return report
