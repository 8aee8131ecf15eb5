"""Alpaca's JSON shapes for the paper exchange's account, orders, positions and clock.

Numbers travel as strings like Alpaca's; every shape parses with alpaca-py's own models
(TradeAccount, Order, Position, Clock), which the tests check.
"""

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from paper_exchange.book import PaperBook, PaperOrder, PaperPosition, asset_id


def num(value: float) -> str:
    """Alpaca-style decimal text: 187.2 -> '187.2', 1e6 -> '1000000'."""
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if moment else None


def account_id(key_id: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"marlops-paper-exchange/{key_id}")


def account_json(book: PaperBook, key_id: str) -> dict[str, Any]:
    equity = book.equity()
    buying_power = book.buying_power()
    return {
        "id": str(account_id(key_id)),
        "account_number": "PA" + account_id(key_id).hex[:10].upper(),
        "status": "ACTIVE",
        "crypto_status": "INACTIVE",
        "currency": "USD",
        "cash": num(book.cash),
        "buying_power": num(buying_power),
        "regt_buying_power": num(buying_power),
        "non_marginable_buying_power": num(max(0.0, book.cash)),
        "options_buying_power": "0",
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "pending_transfer_out": "0",
        "portfolio_value": num(equity),
        "equity": num(equity),
        "last_equity": num(book.initial_cash),
        "long_market_value": num(book.long_market_value()),
        "short_market_value": num(book.short_market_value()),
        "initial_margin": num(book.gross() / 2.0),
        "maintenance_margin": num(book.gross() * 0.3),
        "last_maintenance_margin": "0",
        "sma": "0",
        "multiplier": num(book.max_leverage),
        "shorting_enabled": True,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "trade_suspended_by_user": False,
        "created_at": _iso(book.created_at),
        "options_approved_level": 0,
        "options_trading_level": 0,
    }


def order_json(order: PaperOrder) -> dict[str, Any]:
    return {
        "id": str(order.id),
        "client_order_id": order.client_order_id,
        "created_at": _iso(order.created_at),
        "updated_at": _iso(order.updated_at),
        "submitted_at": _iso(order.created_at),
        "filled_at": _iso(order.filled_at),
        "expired_at": None,
        "expires_at": None,
        "canceled_at": _iso(order.canceled_at),
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": str(asset_id(order.symbol)),
        "symbol": order.symbol,
        "asset_class": "us_equity",
        "notional": num(order.notional) if order.notional is not None else None,
        "qty": num(order.qty),
        "filled_qty": num(order.filled_qty),
        "filled_avg_price": num(order.filled_avg_price) if order.filled_avg_price is not None else None,
        "order_class": "simple",
        "order_type": "market",
        "type": "market",
        "side": order.side,
        "position_intent": order.position_intent,
        "time_in_force": order.time_in_force,
        "limit_price": None,
        "stop_price": None,
        "status": order.status,
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
    }


def position_json(position: PaperPosition, price: float) -> dict[str, Any]:
    qty = position.qty
    market_value = qty * price
    cost_basis = qty * position.avg_entry_price
    unrealized = market_value - cost_basis
    plpc = unrealized / abs(cost_basis) if cost_basis else 0.0
    return {
        "asset_id": str(asset_id(position.symbol)),
        "symbol": position.symbol,
        "exchange": "NASDAQ",
        "asset_class": "us_equity",
        "asset_marginable": True,
        "avg_entry_price": num(position.avg_entry_price),
        "qty": num(qty),
        "qty_available": num(qty),
        "side": "long" if qty > 0 else "short",
        "market_value": num(market_value),
        "cost_basis": num(cost_basis),
        "unrealized_pl": num(unrealized),
        "unrealized_plpc": num(plpc),
        "unrealized_intraday_pl": num(unrealized),
        "unrealized_intraday_plpc": num(plpc),
        "current_price": num(price),
        "lastday_price": num(price),
        "change_today": "0",
    }


def clock_json(now: datetime) -> dict[str, Any]:
    # Open unless /_sim/config says market_open: false (the exchange overrides is_open): replayed bars
    # arrive at any wall-clock time.
    eastern = timezone(timedelta(hours=-5))
    local = now.astimezone(eastern)
    return {
        "timestamp": local.isoformat(),
        "is_open": True,
        "next_open": (local + timedelta(days=1)).replace(hour=9, minute=30, second=0, microsecond=0).isoformat(),
        "next_close": (local + timedelta(days=1)).replace(hour=16, minute=0, second=0, microsecond=0).isoformat(),
    }
