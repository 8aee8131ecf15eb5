"""State of the paper exchange: one account, last prices, orders, positions. Thread-safe.

Market orders fill at once at the last price set through the simulator (all of the order, or
`fill_ratio` of it, leaving the rest open until `fill_open` fills the remainders). The accounting here is written independently of
gateway.domain.portfolio on purpose: the exchange is the other side of the gateway's book, and
integration tests compare the two.
"""

import math
import random
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

OPEN_STATUSES = frozenset({"new", "accepted", "partially_filled", "pending_new"})
_ASSET_NAMESPACE = uuid.UUID("6f1c2a52-5c1e-4d8e-9a51-6d0c5d2f7a10")
_QTY_EPS = 1e-9


class PaperRejection(Exception):
    """An order request the exchange refuses, with Alpaca's HTTP status, error code and message."""

    def __init__(self, status_code: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message


def asset_id(symbol: str) -> uuid.UUID:
    return uuid.uuid5(_ASSET_NAMESPACE, symbol)


@dataclass(frozen=True)
class PaperOrder:
    id: uuid.UUID
    client_order_id: str
    symbol: str
    side: str  # buy | sell
    qty: float
    time_in_force: str
    status: str
    filled_qty: float
    filled_avg_price: float | None
    created_at: datetime
    updated_at: datetime
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    notional: float | None = None
    position_intent: str = "buy_to_open"  # Alpaca's: buy_to_open, buy_to_close, sell_to_open, sell_to_close

    @property
    def signed_filled(self) -> float:
        return self.filled_qty if self.side == "buy" else -self.filled_qty


@dataclass
class PaperPosition:
    symbol: str
    qty: float
    avg_entry_price: float


@dataclass
class _Counters:
    orders: int = 0
    fills: int = 0
    rejected: int = 0
    canceled: int = 0


@dataclass
class PaperBook:
    initial_cash: float
    seed: int = 0
    fill_ratio: float = 1.0
    max_leverage: float = 4.0
    market_open: bool = True
    cash: float = field(init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _prices: dict[str, float] = field(default_factory=dict, init=False)
    _orders: dict[uuid.UUID, PaperOrder] = field(default_factory=dict, init=False)
    _by_client_id: dict[str, uuid.UUID] = field(default_factory=dict, init=False)
    _positions: dict[str, PaperPosition] = field(default_factory=dict, init=False)
    _counters: _Counters = field(default_factory=_Counters, init=False)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc), init=False)

    def __post_init__(self) -> None:
        self.cash = float(self.initial_cash)
        self._rng = random.Random(self.seed)

    # ---- simulator control -------------------------------------------------------------------
    def set_prices(self, prices: dict[str, float]) -> dict[str, float]:
        with self._lock:
            self._prices.update(prices)
            return dict(self._prices)

    def configure(
        self, *, fill_ratio: float | None = None, max_leverage: float | None = None, market_open: bool | None = None
    ) -> None:
        with self._lock:
            if fill_ratio is not None:
                self.fill_ratio = fill_ratio
            if max_leverage is not None:
                self.max_leverage = max_leverage
            if market_open is not None:
                self.market_open = market_open

    def prices(self) -> dict[str, float]:
        with self._lock:
            return dict(self._prices)

    def price(self, symbol: str) -> float | None:
        with self._lock:
            return self._prices.get(symbol)

    # ---- valuation ---------------------------------------------------------------------------
    def _mark(self, position: PaperPosition) -> float:
        return self._prices.get(position.symbol, position.avg_entry_price)

    def long_market_value(self) -> float:
        with self._lock:
            return sum(p.qty * self._mark(p) for p in self._positions.values() if p.qty > 0)

    def short_market_value(self) -> float:
        with self._lock:
            return sum(p.qty * self._mark(p) for p in self._positions.values() if p.qty < 0)

    def equity(self) -> float:
        with self._lock:
            return self.cash + self.long_market_value() + self.short_market_value()

    def gross(self) -> float:
        with self._lock:
            return self.long_market_value() - self.short_market_value()

    def buying_power(self) -> float:
        with self._lock:
            return max(0.0, self.max_leverage * self.equity() - self.gross())

    # ---- orders ------------------------------------------------------------------------------
    def _new_order_id(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def submit_market(
        self,
        *,
        symbol: str,
        side: str,
        qty: float | None,
        notional: float | None,
        time_in_force: str,
        client_order_id: str | None,
        fill_ratio: float | None = None,
    ) -> PaperOrder:
        """Accept and fill a market order. `fill_ratio` overrides the configured ratio for this order
        (an injected partial fill)."""
        with self._lock:
            if client_order_id is not None and client_order_id in self._by_client_id:
                self._counters.rejected += 1
                raise PaperRejection(422, 40010001, "client_order_id must be unique")
            price = self._prices.get(symbol)
            if price is None:
                self._counters.rejected += 1
                raise PaperRejection(
                    422, 42210000,
                    f"no price for symbol {symbol!r}: the paper exchange only trades symbols priced via "
                    "POST /_sim/prices",
                )
            if qty is None:
                qty = (notional or 0.0) / price
            if not (math.isfinite(qty) and qty > 0):
                self._counters.rejected += 1
                raise PaperRejection(422, 40010001, f"qty must be a positive number, got {qty!r}")
            signed = qty if side == "buy" else -qty
            self._check_buying_power(symbol, signed, price)
            held = self._positions[symbol].qty if symbol in self._positions else 0.0
            closes = (side == "buy" and held < 0) or (side == "sell" and held > 0)
            now = datetime.now(timezone.utc)
            ratio = self.fill_ratio if fill_ratio is None else fill_ratio
            fill_qty = qty if ratio >= 1.0 else qty * ratio
            order = PaperOrder(
                id=self._new_order_id(),
                client_order_id=client_order_id or str(self._new_order_id()),
                symbol=symbol,
                side=side,
                qty=qty,
                time_in_force=time_in_force,
                status="filled" if fill_qty >= qty - _QTY_EPS else "partially_filled",
                filled_qty=fill_qty,
                filled_avg_price=price,
                created_at=now,
                updated_at=now,
                filled_at=now if fill_qty >= qty - _QTY_EPS else None,
                notional=notional,
                position_intent=f"{side}_to_{'close' if closes else 'open'}",
            )
            self._apply_fill(symbol, fill_qty if side == "buy" else -fill_qty, price)
            self._orders[order.id] = order
            self._by_client_id[order.client_order_id] = order.id
            self._counters.orders += 1
            self._counters.fills += 1
            return order

    def _check_buying_power(self, symbol: str, signed_qty: float, price: float) -> None:
        position = self._positions.get(symbol)
        current = position.qty if position else 0.0
        after = current + signed_qty
        if abs(after) <= abs(current) and (after == 0 or (after > 0) == (current > 0)):
            return  # reducing exposure always goes through
        added = (abs(after) - (abs(current) if (after > 0) == (current > 0) else 0.0)) * price
        if added > self.buying_power() + 1e-6:
            self._counters.rejected += 1
            raise PaperRejection(
                403, 40310000,
                f"insufficient buying power: order adds {added:.2f} of exposure, buying power is "
                f"{self.buying_power():.2f}",
            )

    def _apply_fill(self, symbol: str, signed_qty: float, price: float) -> None:
        self.cash -= signed_qty * price
        position = self._positions.get(symbol)
        if position is None:
            self._positions[symbol] = PaperPosition(symbol, signed_qty, price)
            return
        after = position.qty + signed_qty
        if abs(after) <= _QTY_EPS:
            del self._positions[symbol]
        elif (after > 0) != (position.qty > 0):
            self._positions[symbol] = PaperPosition(symbol, after, price)
        elif abs(after) > abs(position.qty):
            cost = abs(position.qty) * position.avg_entry_price + abs(signed_qty) * price
            self._positions[symbol] = PaperPosition(symbol, after, cost / abs(after))
        else:
            position.qty = after

    def cancel(self, order_id: uuid.UUID) -> PaperOrder:
        with self._lock:
            order = self._orders.get(order_id)
            if order is None:
                raise PaperRejection(404, 40410000, "order not found")
            if order.status not in OPEN_STATUSES:
                raise PaperRejection(422, 42210000, f'order is already in "{order.status}" state')
            now = datetime.now(timezone.utc)
            canceled = replace(order, status="canceled", canceled_at=now, updated_at=now)
            self._orders[order_id] = canceled
            self._counters.canceled += 1
            return canceled

    def fill_open(self) -> list[PaperOrder]:
        """Fill the remainder of every open order at the symbol's current price (the rest of a partial
        fill arriving later). Orders whose symbol has no price stay open. Returns the orders filled."""
        with self._lock:
            filled: list[PaperOrder] = []
            now = datetime.now(timezone.utc)
            for order in list(self._orders.values()):
                remainder = order.qty - order.filled_qty
                price = self._prices.get(order.symbol)
                if order.status not in OPEN_STATUSES or remainder <= _QTY_EPS or price is None:
                    continue
                paid = order.filled_qty * (order.filled_avg_price or price) + remainder * price
                done = replace(order, status="filled", filled_qty=order.qty, filled_avg_price=paid / order.qty,
                               filled_at=now, updated_at=now)
                self._apply_fill(order.symbol, remainder if order.side == "buy" else -remainder, price)
                self._orders[order.id] = done
                self._counters.fills += 1
                filled.append(done)
            return filled

    def order(self, order_id: uuid.UUID) -> PaperOrder | None:
        with self._lock:
            return self._orders.get(order_id)

    def order_by_client_id(self, client_order_id: str) -> PaperOrder | None:
        with self._lock:
            order_id = self._by_client_id.get(client_order_id)
            return self._orders.get(order_id) if order_id is not None else None

    def orders(self) -> list[PaperOrder]:
        """All orders, oldest first."""
        with self._lock:
            return list(self._orders.values())

    # ---- positions ---------------------------------------------------------------------------
    def positions(self) -> list[tuple[PaperPosition, float]]:
        """Positions with their current price, by symbol."""
        with self._lock:
            return [(replace(p), self._mark(p)) for _, p in sorted(self._positions.items())]

    def position(self, symbol: str) -> tuple[PaperPosition, float] | None:
        with self._lock:
            p = self._positions.get(symbol)
            return (replace(p), self._mark(p)) if p is not None else None

    def state(self) -> dict[str, object]:
        with self._lock:
            return {
                "orders": self._counters.orders,
                "fills": self._counters.fills,
                "rejected": self._counters.rejected,
                "canceled": self._counters.canceled,
                "open_orders": sum(1 for o in self._orders.values() if o.status in OPEN_STATUSES),
                "positions": len(self._positions),
                "cash": self.cash,
                "equity": self.equity(),
                "prices": dict(self._prices),
                "fill_ratio": self.fill_ratio,
                "max_leverage": self.max_leverage,
                "market_open": self.market_open,
            }
