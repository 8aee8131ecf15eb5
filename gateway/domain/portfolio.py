"""The gateway's book: cash, positions with average entry price, marks, equity and drawdown.

Positions change only through fills (never through intents), so the book always agrees with what
the broker actually did. Shorts are negative quantities; selling short adds the proceeds to cash.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from contracts.orders import Fill, OrderSide
from gateway.errors import PortfolioError

# Quantities below this are float noise left by fractional fills, not positions.
QTY_EPSILON = 1e-9


@dataclass(frozen=True)
class Position:
    symbol: str
    qty: float  # < 0 is short
    avg_price: float


@dataclass(frozen=True)
class PositionView:
    symbol: str
    qty: float
    avg_price: float
    mark: float
    market_value: float
    weight: float


def signed_qty(side: OrderSide, qty: float) -> float:
    return qty if side == OrderSide.BUY else -qty


class Portfolio:
    """Mutable book; callers serialise access (the gateway holds one lock per timestep)."""

    def __init__(self, cash: float, positions: Mapping[str, Position] | None = None) -> None:
        if not math.isfinite(cash):
            raise PortfolioError(f"cash must be finite, got {cash!r}")
        self._cash = float(cash)
        self._positions: dict[str, Position] = dict(positions or {})
        self._marks: dict[str, float] = {}
        self._peak_equity = max(self.equity, 0.0)

    @classmethod
    def from_broker(cls, cash: float, positions: Mapping[str, tuple[float, float]]) -> "Portfolio":
        """Build from a broker snapshot: `positions` maps symbol -> (qty, avg_entry_price)."""
        book = {
            sym: Position(sym, float(qty), float(avg))
            for sym, (qty, avg) in positions.items()
            if abs(qty) > QTY_EPSILON
        }
        return cls(cash, book)

    # ---- reads -------------------------------------------------------------------------------
    @property
    def cash(self) -> float:
        return self._cash

    @property
    def peak_equity(self) -> float:
        return self._peak_equity

    def positions(self) -> dict[str, Position]:
        return dict(self._positions)

    def qty(self, symbol: str) -> float:
        position = self._positions.get(symbol)
        return position.qty if position else 0.0

    def mark_of(self, symbol: str) -> float:
        """Last mark; a position never marked is valued at its entry price."""
        if symbol in self._marks:
            return self._marks[symbol]
        position = self._positions.get(symbol)
        return position.avg_price if position else math.nan

    def marks(self) -> dict[str, float]:
        return dict(self._marks)

    @property
    def equity(self) -> float:
        return self._cash + sum(p.qty * self.mark_of(s) for s, p in self._positions.items())

    @property
    def gross_notional(self) -> float:
        return sum(abs(p.qty * self.mark_of(s)) for s, p in self._positions.items())

    @property
    def gross_exposure(self) -> float:
        """Sum of |position value| as a multiple of equity (0 when equity is not positive)."""
        equity = self.equity
        return self.gross_notional / equity if equity > 0 else 0.0

    @property
    def drawdown(self) -> float:
        """Fraction below the highest equity seen since the book was opened."""
        if self._peak_equity <= 0:
            return 0.0
        return max(0.0, 1.0 - self.equity / self._peak_equity)

    def weight(self, symbol: str) -> float:
        equity = self.equity
        if equity <= 0 or symbol not in self._positions:
            return 0.0
        return self._positions[symbol].qty * self.mark_of(symbol) / equity

    def view(self) -> dict[str, PositionView]:
        equity = self.equity
        out: dict[str, PositionView] = {}
        for sym, p in sorted(self._positions.items()):
            mark = self.mark_of(sym)
            value = p.qty * mark
            out[sym] = PositionView(sym, p.qty, p.avg_price, mark, value, value / equity if equity > 0 else 0.0)
        return out

    # ---- writes ------------------------------------------------------------------------------
    def mark(self, prices: Mapping[str, float]) -> None:
        """Record the latest prices; non-finite or non-positive prices are ignored (kept stale)."""
        for sym, price in prices.items():
            if math.isfinite(price) and price > 0:
                self._marks[sym] = float(price)
        self._peak_equity = max(self._peak_equity, self.equity)

    def apply_fill(self, fill: Fill) -> Position | None:
        """Apply one (possibly partial) execution; returns the symbol's position afterwards."""
        if not (math.isfinite(fill.price) and fill.price > 0):
            raise PortfolioError(f"fill {fill.client_order_id}: price must be finite and > 0, got {fill.price!r}")
        delta = signed_qty(fill.side, fill.qty)
        self._cash -= delta * fill.price
        current = self._positions.get(fill.symbol)
        old_qty = current.qty if current else 0.0
        old_avg = current.avg_price if current else fill.price
        new_qty = old_qty + delta
        if abs(new_qty) <= QTY_EPSILON:
            self._positions.pop(fill.symbol, None)
            updated = None
        elif old_qty == 0 or (old_qty > 0) != (new_qty > 0):
            # Opened, or crossed through zero: the remainder was bought/sold entirely at this price.
            updated = Position(fill.symbol, new_qty, fill.price)
        elif abs(new_qty) > abs(old_qty):
            avg = (abs(old_qty) * old_avg + abs(delta) * fill.price) / abs(new_qty)
            updated = Position(fill.symbol, new_qty, avg)
        else:
            # Reducing keeps the entry price of what is left.
            updated = Position(fill.symbol, new_qty, old_avg)
        if updated is not None:
            self._positions[fill.symbol] = updated
        self._marks.setdefault(fill.symbol, fill.price)
        self._peak_equity = max(self._peak_equity, self.equity)
        return updated
