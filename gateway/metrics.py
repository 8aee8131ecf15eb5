"""Prometheus metrics of one gateway app (its own CollectorRegistry, so several apps can share a process)."""

import math
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from contracts.orders import TradingState
from gateway.domain.performance import Snapshot

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.timesteps = Counter("marlops_gateway_timesteps", "Timesteps of decisions handled", registry=r)
        self.decisions = Counter("marlops_gateway_decisions", "Symbol decisions received", registry=r)
        self.orders_submitted = Counter(
            "marlops_gateway_orders_submitted", "Orders accepted by the broker", ["side"], registry=r
        )
        self.orders_filled = Counter(
            "marlops_gateway_orders_filled", "Fills (complete or partial) applied to the portfolio", registry=r
        )
        self.orders_rejected = Counter(
            "marlops_gateway_orders_rejected", "Orders the broker refused or never acknowledged", ["reason"],
            registry=r,
        )
        self.risk_denials = Counter(
            "marlops_gateway_risk_denials", "Decisions denied by a guardrail", ["reason"], registry=r
        )
        self.risk_adjustments = Counter(
            "marlops_gateway_risk_adjustments", "Decisions approved after a guardrail cut them back", ["reason"],
            registry=r,
        )
        self.directive_fallbacks = Counter(
            "marlops_gateway_directive_fallbacks", "Timesteps planned with the fallback preset (no live directive)",
            registry=r,
        )
        self.directives = Counter("marlops_gateway_directives", "Master directives received", ["mode"], registry=r)
        self.directive_propagation_seconds = Histogram(
            "marlops_gateway_directive_propagation_seconds",
            "Wall time from the master publishing a directive on the bus to the gateway's DirectiveBook holding it",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        fast = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.04, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
        self.decision_seconds = Histogram(
            "marlops_gateway_decision_seconds",
            "Timestep received -> decisions accepted (overlay, risk checks, intents durable); routing follows",
            buckets=fast, registry=r,
        )
        self.action_to_order_seconds = Histogram(
            "marlops_gateway_action_to_order_seconds", "Order intent durable -> broker acknowledged the order",
            buckets=fast, registry=r,
        )
        self.order_to_fill_seconds = Histogram(
            "marlops_gateway_order_to_fill_seconds", "Broker acknowledged the order -> order completely filled",
            buckets=fast, registry=r,
        )
        self.timestep_settle_seconds = Histogram(
            "marlops_gateway_timestep_settle_seconds",
            "Timestep received -> every order of it has a final answer (filled, rejected, not sent, in doubt)",
            buckets=fast, registry=r,
        )
        self.trading_state = Gauge(
            "marlops_gateway_trading_state", "1 for the current trading state, 0 for the others", ["state"],
            registry=r,
        )
        self.equity = Gauge("marlops_gateway_equity", "Portfolio equity (account currency)", registry=r)
        self.gross_exposure = Gauge("marlops_gateway_gross_exposure", "Gross exposure / equity", registry=r)
        self.drawdown = Gauge("marlops_gateway_drawdown", "Drawdown from peak equity (fraction), kept for "
                              "compatibility: the from-peak drawdown (its peak also counts equity marked between "
                              "timesteps); prefer marlops_gateway_drawdown_from_peak_ratio", registry=r)
        # ---- performance, cost and risk (definitions: gateway/domain/performance.py) -------------------------
        self.drawdown_intraday = Gauge(
            "marlops_gateway_drawdown_intraday_ratio",
            "Drawdown from the session's peak equity (fraction), after each settled timestep", registry=r)
        self.drawdown_from_peak = Gauge(
            "marlops_gateway_drawdown_from_peak_ratio",
            "Drawdown from the all-time peak equity (fraction), after each settled timestep", registry=r)
        self.cost_to_gross_profit = Gauge(
            "marlops_gateway_cost_to_gross_profit_ratio",
            "Signed transaction costs of the trailing fills (cost_window_fills, default 1000) / their gross profit "
            "(positive realized P&L before costs of closing fills); NaN until a fill closes; +Inf with costs and "
            "no profit", registry=r)
        self.realized_cost_signed = Gauge(
            "marlops_gateway_realized_cost_signed_dollars",
            "Running sum since start of signed realized cost per fill (adverse move vs the decision price + "
            "commission; a favourable fill is negative), account currency", registry=r)
        self.rolling_sharpe = Gauge(
            "marlops_gateway_rolling_sharpe",
            "Annualised Sharpe of per-bar equity returns over the trailing performance_window_bars bars "
            "(x sqrt(bars_per_year), 252 for daily bars; risk-free 0); NaN with < 2 returns", registry=r)
        self.win_rate = Gauge(
            "marlops_gateway_win_rate_ratio",
            "Winning bars / bars whose equity moved, over the trailing window (bars, not trades)", registry=r)
        self.profit_factor = Gauge(
            "marlops_gateway_profit_factor",
            "Sum of positive / |sum of negative| per-bar P&L over the trailing window; +Inf with no losing bar",
            registry=r)
        self.turnover = Gauge(
            "marlops_gateway_turnover_ratio",
            "Traded notional per bar / equity, averaged over the trailing window", registry=r)
        self.sector_exposure = Gauge(
            "marlops_gateway_sector_exposure_ratio",
            "Gross exposure (sum |value|) of a sector's positions / equity; no sector = \"unclassified\"",
            ["sector"], registry=r)
        self.herfindahl = Gauge(
            "marlops_gateway_herfindahl_ratio",
            "Sum of squared position weights of gross exposure (1/n for n equal positions; 0 when flat)",
            registry=r)
        self.benchmark_divergence = Gauge(
            "marlops_gateway_benchmark_divergence_ratio",
            "Portfolio return minus the benchmark's (SPY) over the trailing window; NaN without 2 benchmark prices",
            registry=r)
        self.alert_active = Gauge(
            "marlops_gateway_alert_active", "1 while a gateway alert (trigger breach, safe mode...) is active",
            ["name"], registry=r,
        )
        self.trading_state_changes = Counter(
            "marlops_gateway_trading_state_changes", "Trading state changes by trigger", ["trigger", "state"],
            registry=r,
        )
        self.inflight_orders = Gauge("marlops_gateway_inflight_orders", "Orders between intent and final answer",
                                     registry=r)
        self.estimated_cost = Counter("marlops_gateway_estimated_cost", "Pre-trade cost estimate of filled qty ($)",
                                      registry=r)
        # A counter cannot go down: this one adds only the ADVERSE fills' costs (kept for compatibility; as a cost
        # figure it is biased upwards). The net, favourable fills included: realized_cost_signed below.
        self.realized_cost = Counter("marlops_gateway_realized_cost",
                                     "Adverse realized cost only (fills with a positive cost vs decision price "
                                     "+ commission, $); the signed net: marlops_gateway_realized_cost_signed_dollars",
                                     registry=r)
        self.reconcile_mismatches = Counter("marlops_gateway_reconcile_mismatches",
                                            "Symbols where book and broker disagreed at reconciliation", registry=r)
        self._sectors_seen: set[str] = set()
        # Undefined until enough bars / fills: NaN (no alert compares true), not a misleading 0.
        for undefined in (self.cost_to_gross_profit, self.rolling_sharpe, self.win_rate, self.profit_factor,
                          self.benchmark_divergence):
            undefined.set(math.nan)
        self.set_trading_state(TradingState.ACTIVE)

    def set_trading_state(self, state: TradingState) -> None:
        for s in TradingState:
            self.trading_state.labels(state=s.value).set(1.0 if s == state else 0.0)

    def set_portfolio(self, equity: float, gross_exposure: float, drawdown: float) -> None:
        self.equity.set(equity)
        self.gross_exposure.set(gross_exposure)
        self.drawdown.set(drawdown)

    def set_drawdowns(self, *, from_peak: float, intraday: float) -> None:
        self.drawdown_from_peak.set(from_peak)
        self.drawdown_intraday.set(intraday)

    def set_performance(self, snapshot: Snapshot) -> None:
        self.rolling_sharpe.set(snapshot.sharpe)
        self.win_rate.set(snapshot.win_rate)
        self.profit_factor.set(snapshot.profit_factor)
        self.turnover.set(snapshot.turnover)
        self.benchmark_divergence.set(snapshot.benchmark_divergence)
        self.cost_to_gross_profit.set(snapshot.cost_to_gross_profit)
        self.realized_cost_signed.set(snapshot.realized_cost_signed)

    def set_concentration(self, sectors: Mapping[str, float], herfindahl: float) -> None:
        """Sector gauges: every sector seen since start is set (0 once it holds nothing)."""
        self._sectors_seen.update(sectors)
        for sector in self._sectors_seen:
            self.sector_exposure.labels(sector=sector).set(sectors.get(sector, 0.0))
        self.herfindahl.set(herfindahl)

    def set_alerts(self, active: set[str], known: set[str]) -> None:
        for name in known | active:
            self.alert_active.labels(name=name).set(1.0 if name in active else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
