"""The backtest's account: the gateway's own planner and portfolio, with fills the way the paper exchange makes them.

Per bar: mark the book at the bar closes, plan the timestep with `gateway.domain.planner.plan_timestep` (master
overlay, guardrails, whole shares, minimum notional, risk-reducing orders first), fill every intent in full at
its reference price (the paper exchange fills market orders at the last price), and apply the fills to a
`gateway.domain.portfolio.Portfolio`. Live replay goes through the same functions, so the same bars, decisions
and directives give the same orders.

The paper exchange charges no fees, so the book (which sizes positions) carries none either, exactly as in a
live replay against it; the estimated transaction cost of every order (`gateway.domain.costs`) is kept in a
separate ledger and charged to the performance numbers (`net_equity`).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from contracts.config import RiskOverlaysConfig
from contracts.decisions import MasterDirective, SymbolDecision, TimestepDecisions
from contracts.orders import Fill, OrderIntent, TradingState
from gateway.domain.overlay import EffectiveOverlay
from gateway.domain.planner import plan_timestep
from gateway.domain.portfolio import Portfolio

from agents.errors import InputShapeError

logger = logging.getLogger(__name__)

DEFAULT_INITIAL_CASH = 1_000_000.0  # the paper exchange's default account


@dataclass(frozen=True)
class BookStep:
    """What one planned and filled timestep did to the book."""

    intents: tuple[OrderIntent, ...]
    overlay: EffectiveOverlay
    costs: np.ndarray  # [N] estimated cost per symbol, account currency
    qty_after: np.ndarray  # [N] shares held after the fills
    equity: float  # book equity after the fills, at this bar's closes
    gross_exposure: float  # after the fills
    drawdown: float  # of the book, after the fills
    denied: int  # decisions the guardrails denied


class BacktestBook:
    def __init__(
        self,
        symbols: Sequence[str],
        risk: RiskOverlaysConfig,
        *,
        initial_cash: float = DEFAULT_INITIAL_CASH,
        max_directive_ttl_seconds: float | None = None,
        policy_version: str = "backtest",
    ) -> None:
        if not symbols:
            raise InputShapeError("BacktestBook needs at least one symbol")
        if not np.isfinite(initial_cash) or initial_cash <= 0:
            raise InputShapeError(f"initial_cash must be a finite amount > 0, got {initial_cash!r}")
        self.symbols = tuple(symbols)
        self.risk = risk
        self.initial_cash = float(initial_cash)
        self.max_directive_ttl_seconds = max_directive_ttl_seconds
        self.policy_version = policy_version
        self.portfolio = Portfolio(self.initial_cash)
        self.total_costs = 0.0

    @property
    def equity(self) -> float:
        return self.portfolio.equity

    @property
    def net_equity(self) -> float:
        """Book equity less every transaction cost charged so far: what the strategy really has."""
        return self.portfolio.equity - self.total_costs

    def quantities(self) -> np.ndarray:
        return np.array([self.portfolio.qty(s) for s in self.symbols], dtype=np.float64)

    def mark(self, prices: np.ndarray) -> None:
        self.portfolio.mark(dict(zip(self.symbols, (float(p) for p in prices))))

    def step(
        self,
        *,
        timestep: datetime,
        bar_index: int,
        prices: np.ndarray,
        actions: np.ndarray,
        levels: np.ndarray,
        directive: MasterDirective | None,
        trading_state: TradingState = TradingState.ACTIVE,
    ) -> BookStep:
        """Mark at `prices`, plan `levels` (one target level per symbol) under `directive`, fill, apply."""
        if prices.shape != (len(self.symbols),) or levels.shape != prices.shape or actions.shape != prices.shape:
            raise InputShapeError(
                f"one price, action and level per symbol expected ({len(self.symbols)}), got shapes "
                f"{prices.shape}, {actions.shape}, {levels.shape}"
            )
        self.mark(prices)
        batch = TimestepDecisions.model_construct(
            timestep=timestep,
            bar_index=bar_index,
            policy_version=self.policy_version,
            observation_checksum="",
            decisions=tuple(
                # model_construct: these values come from arrays already checked; validating 10^5 of them per
                # training run would dominate the run time.
                SymbolDecision.model_construct(
                    symbol=symbol, action=int(action), target_level=float(level), probabilities=(), price=float(price)
                )
                for symbol, action, level, price in zip(self.symbols, actions, levels, prices)
            ),
        )
        plan = plan_timestep(
            batch,
            directive=directive,
            portfolio=self.portfolio,
            trading_state=trading_state,
            risk=self.risk,
            max_directive_ttl_seconds=self.max_directive_ttl_seconds,
        )
        costs = np.zeros(len(self.symbols))
        position = {s: i for i, s in enumerate(self.symbols)}
        for intent in plan.intents:
            self.portfolio.apply_fill(
                Fill.model_construct(
                    client_order_id=intent.client_order_id,
                    broker_order_id=f"backtest-{intent.client_order_id}",
                    symbol=intent.symbol,
                    side=intent.side,
                    qty=intent.qty,
                    price=intent.reference_price,
                    filled_at=timestep,
                )
            )
            costs[position[intent.symbol]] += intent.estimated_cost
        self.total_costs += float(costs.sum())
        return BookStep(
            intents=plan.intents,
            overlay=plan.overlay,
            costs=costs,
            qty_after=self.quantities(),
            equity=self.portfolio.equity,
            gross_exposure=self.portfolio.gross_exposure,
            drawdown=self.portfolio.drawdown,
            denied=sum(1 for r in plan.risk if not r.approved),
        )
