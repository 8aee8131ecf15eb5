"""Tests of the lifecycle's pure reports (cohorts, canary health, model anomalies, shadow, A/B), and a small builder
of synthetic per-bar records for them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from marlops.lifecycle.records import BarRecord, SymbolBar

START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
VERSIONS = {"production": "symbol_agent/3", "candidate": "symbol_agent/4", "sl_fallback": "sl_fallback/1"}
UNSURE = (0.1, 0.2, 0.4, 0.2, 0.1)  # a policy that prefers action 2 but is far from certain


def timestamp(bar_index: int) -> str:
    return (START + timedelta(minutes=5 * bar_index)).isoformat()


def row(symbol: str, bar_index: int = 0, *, variant: str = "production", **fields: object) -> SymbolBar:
    """One symbol-bar with quiet defaults (flat, no cost, 2 ms inference); any SymbolBar field can be overridden."""
    values: dict[str, object] = {
        "bar_index": bar_index, "timestamp": timestamp(bar_index), "symbol": symbol, "variant": variant,
        "policy_version": VERSIONS.get(variant, variant), "action": 2, "probabilities": UNSURE, "price": 100.0,
        "position_qty": 0.0, "position_value": 0.0, "pnl": 0.0, "cost": 0.0, "traded_notional": 0.0,
        "denied": False, "error": False, "inference_ms": 2.0,
    }
    values.update(fields)
    return SymbolBar(**values)  # type: ignore[arg-type]


def bar(bar_index: int, rows: Sequence[SymbolBar], *, equity: float = 100_000.0, **fields: object) -> BarRecord:
    return BarRecord(bar_index=bar_index, timestamp=timestamp(bar_index), symbols=tuple(rows),
                     decision_latency_ms=5.0, equity=equity, trading_state="ACTIVE", **fields)  # type: ignore[arg-type]


def simulate(
    routes: Mapping[str, str] | Callable[[int], Mapping[str, str]],
    n_bars: int,
    *,
    seed: int,
    mean_return: Mapping[str, float] | None = None,
    volatility: float = 0.002,
    position_value: float = 5_000.0,
    equity: float = 100_000.0,
    overrides: Callable[[int, str, str], Mapping[str, object]] | None = None,
) -> list[BarRecord]:
    """`n_bars` bars in which every symbol holds `position_value` and earns a seeded normal return per bar
    (mean `mean_return[variant]`, default 0; sd `volatility`); each traded bar costs 1 per 10_000 traded.

    `routes` maps symbol -> variant, or is a function of the bar index (a rotation). The first bar comes in flat
    (pnl 0), as a real run does. `overrides(bar_index, symbol, variant)` returns fields to replace in a symbol-bar.
    """
    rng = np.random.default_rng(seed)
    means = dict(mean_return or {})
    bars = []
    for t in range(n_bars):
        routing = routes(t) if callable(routes) else routes
        rows = []
        for symbol in sorted(routing):
            variant = routing[symbol]
            draw = float(rng.normal(means.get(variant, 0.0), volatility))
            fields: dict[str, object] = {
                "position_qty": position_value / 100.0, "position_value": position_value,
                "pnl": 0.0 if t == 0 else position_value * draw - 0.5, "cost": 0.5, "traded_notional": 5_000.0,
            }
            if overrides is not None:
                fields.update(overrides(t, symbol, variant))
            rows.append(row(symbol, t, variant=variant, **fields))
        bars.append(bar(t, rows, equity=equity))
    return bars
