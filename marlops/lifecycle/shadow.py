"""What a shadow variant would have traded: its decisions replayed next to the acting ones, through the backtest's book.

A shadow is scored every bar but never traded, so its P&L has to be simulated. Both sides are replayed the same
way, on the same symbol-bars, through `agents.book.BacktestBook` (the gateway's own planner: overlay, guardrails,
whole shares, minimum notional; fills at the bar close; `gateway.domain.costs` estimates charged): the acting
decisions are replayed too rather than taken from the live book, so the difference measures the decisions and not
the replay.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from agents.book import BacktestBook
from contracts.config import RiskOverlaysConfig
from contracts.decisions import MasterDirective, directive_from_preset
from contracts.orders import TradingState
from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.health import chronological
from marlops.lifecycle.records import BarRecord, SymbolBar

NO_SHADOW_DECISIONS = ("no shadow decisions in these bars: route a shadow variant first "
                       "(marlops route set '*' --variant production --shadow candidate)")
# The master's directive mode is not part of SymbolBar; the recorder may put it here, else the replay uses "normal".
DIRECTIVE_MODE_KEY = "directive_mode"
DEFAULT_REPLAY_MODE = "normal"
SIDE_METRICS = ("total_return", "pnl", "max_drawdown", "turnover", "cost", "denials", "orders")


@dataclass(frozen=True)
class ShadowReport:
    shadow_version: str
    production_version: str
    bars: int  # bars with at least one shadow decision (the replay's steps)
    symbol_bars: int  # symbol-bars with a shadow decision
    agreement: float  # share of those where the shadow chose the acting action
    production: dict[str, float]  # SIDE_METRICS of the acting decisions' replay
    shadow: dict[str, float]  # SIDE_METRICS of the shadow decisions' replay
    difference: dict[str, float]  # shadow - production, per metric
    per_symbol: dict[str, dict[str, float]]  # symbol -> production / shadow / difference P&L, agreement

    def as_dict(self) -> dict[str, Any]:
        return {"shadow_version": self.shadow_version, "production_version": self.production_version,
                "bars": self.bars, "symbol_bars": self.symbol_bars, "agreement": self.agreement,
                "production": dict(self.production), "shadow": dict(self.shadow),
                "difference": dict(self.difference),
                "per_symbol": {s: dict(v) for s, v in self.per_symbol.items()}}

    def to_markdown(self) -> str:
        def cell(metric: str, value: float, signed: bool = False) -> str:
            sign = "+" if signed else ""
            if metric in ("total_return", "max_drawdown", "turnover"):
                return f"{value:{sign}.3%}"
            if metric in ("denials", "orders"):
                return f"{value:{sign}.0f}"
            return f"{value:{sign},.2f}"

        lines = [
            f"## Shadow report: {self.shadow_version} vs {self.production_version}",
            "",
            (f"{self.bars} bars, {self.symbol_bars} symbol-bars with a shadow decision; the shadow chose the acting "
             f"action on {self.agreement:.1%} of them. Both sides replayed through the backtest book (same rules, "
             "fills at the bar close, estimated costs)."),
            "",
            f"| metric | {self.production_version} (acting) | {self.shadow_version} (shadow) | shadow - acting |",
            "|---|---:|---:|---:|",
        ]
        for metric in SIDE_METRICS:
            lines.append(f"| {metric} | {cell(metric, self.production[metric])} | {cell(metric, self.shadow[metric])} "
                         f"| {cell(metric, self.difference[metric], signed=True)} |")
        lines += ["", "| symbol | acting P&L | shadow P&L | difference | agreement |", "|---|---:|---:|---:|---:|"]
        for symbol, row in self.per_symbol.items():
            lines.append(f"| {symbol} | {row['production']:,.2f} | {row['shadow']:,.2f} | {row['difference']:+,.2f} "
                         f"| {row['agreement']:.0%} |")
        return "\n".join(lines) + "\n"


def _timestamp(bar: BarRecord) -> datetime:
    try:
        return datetime.fromisoformat(bar.timestamp)
    except ValueError as exc:
        raise LifecycleError(f"bar {bar.bar_index}: timestamp {bar.timestamp!r} is not ISO-8601") from exc


def _directive(bar: BarRecord, at: datetime, risk: RiskOverlaysConfig) -> MasterDirective:
    """One directive for both sides at this bar, so the comparison is of the symbol decisions alone."""
    mode = bar.extra.get(DIRECTIVE_MODE_KEY)
    if mode not in DIRECTIVE_MODES or mode not in risk.directive_presets:
        mode = DEFAULT_REPLAY_MODE
    return directive_from_preset(directive_id=f"shadow-replay-bar{bar.bar_index}", issued_at=at,
                                 ttl_seconds=86_400.0, mode=mode, preset=risk.directive_presets[mode],
                                 policy_version="shadow-replay")


def _trading_state(bar: BarRecord) -> TradingState:
    try:
        return TradingState(bar.trading_state)
    except ValueError:
        return TradingState.ACTIVE


class _Side:
    """One replayed account: the book, and what each step did to it."""

    def __init__(self, symbols: tuple[str, ...], risk: RiskOverlaysConfig, initial: float, tag: str) -> None:
        self.book = BacktestBook(symbols, risk, initial_cash=initial, policy_version=f"shadow-replay/{tag}")
        self.initial = initial
        self.pnl = np.zeros(len(symbols))
        self.curve = [initial]
        self.traded = 0.0
        self.denials = 0
        self.orders = 0
        self._prices: np.ndarray | None = None

    def step(self, *, at: datetime, bar_index: int, prices: np.ndarray, actions: np.ndarray, levels: np.ndarray,
             directive: MasterDirective, state: TradingState) -> None:
        held = self.book.quantities()
        if self._prices is not None:
            # What the shares carried into this bar earned from the last bar's close to this one.
            self.pnl += held * (prices - self._prices)
        booked = self.book.step(timestep=at, bar_index=bar_index, prices=prices, actions=actions, levels=levels,
                                directive=directive, trading_state=state)
        self.pnl -= booked.costs
        self._prices = prices
        self.curve.append(self.book.net_equity)
        self.traded += sum(i.qty * i.reference_price for i in booked.intents)
        self.denials += booked.denied
        self.orders += len(booked.intents)

    def metrics(self) -> dict[str, float]:
        curve = np.asarray(self.curve)
        peaks = np.maximum.accumulate(curve)
        drawdown = float(np.max(np.where(peaks > 0, 1.0 - curve / peaks, 0.0)))
        final = float(curve[-1])
        return {"total_return": final / self.initial - 1.0, "pnl": final - self.initial, "max_drawdown": drawdown,
                "turnover": self.traded / self.initial, "cost": self.book.total_costs,
                "denials": float(self.denials), "orders": float(self.orders)}


def _versions(names: Sequence[str]) -> str:
    """The version, or every version (most frequent first) when the bars mix several."""
    counts = Counter(names)
    return ", ".join(name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _level(action: int, levels: Sequence[float], row: SymbolBar, which: str) -> float:
    if isinstance(action, bool) or not 0 <= int(action) < len(levels):
        raise LifecycleError(f"bar {row.bar_index} {row.symbol}: {which} action {action!r} is not an index of the "
                             f"{len(levels)} action levels {list(levels)}")
    return float(levels[int(action)])


def shadow_report(
    bars: Sequence[BarRecord],
    risk: RiskOverlaysConfig,
    *,
    action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
    initial_equity: float = 100_000.0,
) -> ShadowReport:
    """The shadow's would-be trades against the acting ones, on the symbol-bars that have a shadow decision.

    Two accounts of `initial_equity` each replay the same bars through `agents.book.BacktestBook`: one the acting
    `action`s, one the `shadow_action`s, each mapped to a target level by `action_levels`. Per bar both get the same
    trading state (the bar's) and the same master directive: the bar's `extra["directive_mode"]` when the recorder
    wrote one, else "normal" (the directive is not part of a symbol-bar). A symbol without a shadow decision at a
    bar keeps its last action and price on both sides (flat before its first one).

    Per side: total_return (net equity after estimated costs / initial - 1), pnl (currency), max_drawdown (largest
    fall of net equity from its running peak, the start included), turnover (traded notional / initial equity),
    cost (estimated, currency), denials (decisions a risk rule denied), orders. `difference` = shadow - production.
    `per_symbol` P&L: shares carried into a bar times the price move, less that symbol's costs; they sum to pnl.
    Raises LifecycleError when no symbol-bar has a shadow decision, or an action is not an index of action_levels.
    """
    if not (isinstance(initial_equity, (int, float)) and math.isfinite(initial_equity) and initial_equity > 0):
        raise LifecycleError(f"initial_equity must be a finite amount > 0, got {initial_equity!r}")
    levels = tuple(float(v) for v in action_levels)
    steps: list[tuple[BarRecord, dict[str, SymbolBar]]] = []
    for bar in chronological(bars):
        rows = {row.symbol: row for row in bar.symbols if row.shadow_action is not None}
        if rows:
            steps.append((bar, rows))
    if not steps:
        raise LifecycleError(NO_SHADOW_DECISIONS)
    symbols = tuple(sorted({s for _, rows in steps for s in rows}))
    index = {s: i for i, s in enumerate(symbols)}
    prices = np.zeros(len(symbols))
    for _, rows in reversed(steps):  # each symbol's first price, so a symbol not yet seen has a usable one
        for symbol, row in rows.items():
            prices[index[symbol]] = row.price
    acting_actions = np.zeros(len(symbols), dtype=np.int64)
    shadow_actions = np.zeros(len(symbols), dtype=np.int64)
    acting_levels = np.zeros(len(symbols))
    shadow_levels = np.zeros(len(symbols))
    acting = _Side(symbols, risk, float(initial_equity), "acting")
    shadow = _Side(symbols, risk, float(initial_equity), "shadow")
    agree: dict[str, list[bool]] = {s: [] for s in symbols}
    for bar, rows in steps:
        prices = prices.copy()
        for symbol, row in rows.items():
            i = index[symbol]
            assert row.shadow_action is not None  # selected above; narrows the type
            acting_levels[i] = _level(row.action, levels, row, "acting")
            shadow_levels[i] = _level(row.shadow_action, levels, row, "shadow")
            acting_actions[i], shadow_actions[i] = row.action, row.shadow_action
            prices[i] = row.price
            agree[symbol].append(row.action == row.shadow_action)
        at = _timestamp(bar)
        directive = _directive(bar, at, risk)
        state = _trading_state(bar)
        for side, actions, side_levels in ((acting, acting_actions, acting_levels),
                                           (shadow, shadow_actions, shadow_levels)):
            side.step(at=at, bar_index=bar.bar_index, prices=prices, actions=actions.copy(),
                      levels=side_levels.copy(), directive=directive, state=state)
    production_metrics, shadow_metrics = acting.metrics(), shadow.metrics()
    all_rows = [row for _, rows in steps for row in rows.values()]
    matches = sum(1 for row in all_rows if row.action == row.shadow_action)
    per_symbol = {
        s: {"production": float(acting.pnl[index[s]]), "shadow": float(shadow.pnl[index[s]]),
            "difference": float(shadow.pnl[index[s]] - acting.pnl[index[s]]),
            "agreement": sum(agree[s]) / len(agree[s]) if agree[s] else 1.0}
        for s in symbols
    }
    return ShadowReport(
        shadow_version=_versions([str(row.shadow_version or "shadow") for row in all_rows]),
        production_version=_versions([row.policy_version for row in all_rows]),
        bars=len(steps),
        symbol_bars=len(all_rows),
        agreement=matches / len(all_rows),
        production=production_metrics,
        shadow=shadow_metrics,
        difference={k: shadow_metrics[k] - production_metrics[k] for k in SIDE_METRICS},
        per_symbol=per_symbol,
    )

