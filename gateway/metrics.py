"""Prometheus metrics of one gateway app (its own CollectorRegistry, so several apps can share a process)."""

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from contracts.orders import TradingState

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
        self.drawdown = Gauge("marlops_gateway_drawdown", "Drawdown from peak equity (fraction)", registry=r)
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
        self.realized_cost = Counter("marlops_gateway_realized_cost", "Realized cost vs decision price + commission ($); "
                                     "may be negative", registry=r)
        self.reconcile_mismatches = Counter("marlops_gateway_reconcile_mismatches",
                                            "Symbols where book and broker disagreed at reconciliation", registry=r)
        self.set_trading_state(TradingState.ACTIVE)

    def set_trading_state(self, state: TradingState) -> None:
        for s in TradingState:
            self.trading_state.labels(state=s.value).set(1.0 if s == state else 0.0)

    def set_portfolio(self, equity: float, gross_exposure: float, drawdown: float) -> None:
        self.equity.set(equity)
        self.gross_exposure.set(gross_exposure)
        self.drawdown.set(drawdown)

    def set_alerts(self, active: set[str], known: set[str]) -> None:
        for name in known | active:
            self.alert_active.labels(name=name).set(1.0 if name in active else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
