"""The performance, cost and risk gauges: fills and settled timesteps feed a PerformanceWindow
(gateway.domain.performance, where every figure is defined) under this tracker's own lock, never the
book's; the figures go to GatewayMetrics.

  fill       every fill execution audits (routing workers, lookups, recovery): signed cost, gross P&L, notional
  settled    once per settled timestep, on the coordinator, with the book as after_routing read it
"""

import logging
import threading
from collections.abc import Mapping
from datetime import datetime

from gateway.domain.performance import PerformanceWindow, Snapshot, herfindahl, position_values, sector_exposure
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)


class PerformanceTracker:
    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self._sectors = dict(settings.sectors)
        self._metrics = metrics
        self._lock = threading.Lock()
        self._window = PerformanceWindow(settings.performance_window_bars, settings.cost_window_fills,
                                         settings.bars_per_year)

    def fill(self, *, notional: float, signed_cost: float, gross_pnl: float | None) -> None:
        """Sums only: it cannot fail on a finite fill."""
        with self._lock:
            self._window.record_fill(notional=notional, signed_cost=signed_cost, gross_pnl=gross_pnl)
            self._metrics.realized_cost_signed.set(self._window.realized_cost_signed)

    def settled(self, *, timestep: datetime, equity: float, benchmark_price: float | None,
                positions: Mapping[str, float], marks: Mapping[str, float]) -> Snapshot | None:
        """Record the bar and publish every figure; a failure here is logged, never raised into routing."""
        try:
            values = position_values(positions, marks)
            with self._lock:
                self._window.record_bar(timestep, equity, benchmark_price)
                snapshot = self._window.snapshot()
                # Set under the lock: a later timestep's figures are never overwritten by an earlier one's.
                self._metrics.set_performance(snapshot)
                self._metrics.set_concentration(sector_exposure(values, self._sectors, equity),
                                                herfindahl(values.values()))
            return snapshot
        except (ArithmeticError, ValueError):  # the gauges are advisory; the triggers already ran
            logger.exception("performance gauges not updated for timestep %s", timestep.isoformat())
            return None
