"""Performance, cost and risk figures of the book, as pure functions (no locks, no metrics, no I/O).

The engine (gateway/engine/performance.py) feeds a `PerformanceWindow` with every fill and with the
book once per settled timestep, and exports what it computes as Prometheus gauges.

Definitions (what the gauges mean):

  bar              one decision timestep (`TimestepDecisions.timestep`): timesteps sent for the same bar by
                   two services are one bar (the later equity replaces the earlier one). Per-bar return
                   r_t = E_t / E_{t-1} - 1 on the equity marked after the bar's orders settled.
  rolling Sharpe   mean(r) / stdev(r, ddof=1) * sqrt(bars_per_year) over the trailing N bars' returns
                   (risk-free rate 0). bars_per_year = 252 for daily bars. Undefined (NaN) with fewer than
                   2 returns or a zero standard deviation.
  win rate         winning BARS (r > 0) / bars that moved (r != 0) over the window; flat bars (a flat book,
                   no mark change) count neither way. NaN when no bar moved.
  profit factor    sum of the window's positive per-bar P&L (E_t - E_{t-1}) / |sum of its negative per-bar
                   P&L|: +Inf when there is a profit and no loss, NaN when there is neither.
  turnover         traded notional during a bar / equity at the end of that bar, averaged over the window.
  benchmark div.   the book's return minus the benchmark's (SPY) return, over the trailing N bars, both from
                   the earliest to the latest bar of the window that carries a benchmark price.
  signed cost      per fill: side * (fill price - decision price) * qty + commission. A favourable fill
                   (bought below / sold above the decision price) is a NEGATIVE cost and is kept as such.
  gross profit     over the trailing `cost_window_fills` fills: the sum of the POSITIVE realized P&L before
                   costs of those fills, in the profit-factor sense of "gross profit". A fill's realized P&L
                   before costs is what the quantity it closes earned from the position's average entry
                   price to the DECISION price of the closing order (so neither the closing slippage nor the
                   commission is in it); a fill that only opens or adds to a position realizes nothing.
                   (The average entry price is the book's average FILL price, so entry slippage is part of
                   the entry, as on any broker statement.)
  cost / gross profit   the window's signed costs (all its fills: opening and closing) / its gross profit.
                   NaN while the window holds no closing fill (nothing realized yet: e.g. just after a start,
                   the window is not persisted); +Inf (-Inf) when closing fills realized no profit and costs are
                   > 0 (< 0); negative when favourable fills outweigh the adverse ones.
  Herfindahl       sum over positions of (|value_i| / sum |value|)^2: 1/n for n equal positions, 1 for one;
                   0 for a flat book.
  sector exposure  sum of |value| of a sector's positions / equity (symbols with no sector: "unclassified",
                   as on /v1/exposure and the console).
"""

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

BARS_PER_YEAR_DAILY = 252.0
DEFAULT_WINDOW_BARS = 252
# The cost-to-gross-profit ratio's window: the trailing 1,000 fills.
COST_WINDOW_FILLS = 1000
UNCLASSIFIED = "unclassified"

_NAN = math.nan


# ---- per-bar series -----------------------------------------------------------------------------
def bar_returns(equities: Sequence[float]) -> list[float]:
    """Simple returns between consecutive equities (a step from a non-positive equity is skipped)."""
    return [b / a - 1.0 for a, b in zip(equities, equities[1:], strict=False)
            if a > 0 and math.isfinite(a) and math.isfinite(b)]


def sharpe_ratio(returns: Sequence[float], bars_per_year: float = BARS_PER_YEAR_DAILY) -> float:
    """Annualised Sharpe of per-bar returns (risk-free 0, sample stdev); NaN when undefined."""
    n = len(returns)
    if n < 2:
        return _NAN
    mean = sum(returns) / n
    var = sum((r - mean) * (r - mean) for r in returns) / (n - 1)  # `**` would raise on overflow; `*` gives inf
    if var <= 0:
        return _NAN
    return mean / math.sqrt(var) * math.sqrt(bars_per_year)


def win_rate(pnls: Iterable[float]) -> float:
    """Winning bars over bars that moved (flat bars excluded); NaN when none moved."""
    moved = [p for p in pnls if p != 0]
    if not moved:
        return _NAN
    return sum(1 for p in moved if p > 0) / len(moved)


def profit_factor(pnls: Iterable[float]) -> float:
    """Sum of gains / |sum of losses|; +Inf with gains and no loss; NaN with neither."""
    gains = losses = 0.0
    for p in pnls:
        if p > 0:
            gains += p
        elif p < 0:
            losses -= p
    if losses == 0:
        return math.inf if gains > 0 else _NAN
    return gains / losses


def average_turnover(notionals: Sequence[float], equities: Sequence[float]) -> float:
    """Mean over bars of traded notional / equity (bars with a non-positive equity skipped); 0 with no bar."""
    ratios = [n / e for n, e in zip(notionals, equities, strict=True) if e > 0 and math.isfinite(e)]
    return sum(ratios) / len(ratios) if ratios else 0.0


def benchmark_divergence(equities: Sequence[float], benchmark: Sequence[float | None]) -> float:
    """Book return minus benchmark return from the first to the last bar that has a benchmark price; NaN
    when fewer than two bars have one."""
    known = [i for i, b in enumerate(benchmark) if b is not None and b > 0]
    if len(known) < 2:
        return _NAN
    first, last = known[0], known[-1]
    if equities[first] <= 0:
        return _NAN
    bench_first, bench_last = benchmark[first], benchmark[last]
    assert bench_first is not None and bench_last is not None
    return (equities[last] / equities[first] - 1.0) - (bench_last / bench_first - 1.0)


# ---- drawdown -------------------------------------------------------------------------------------
def drawdown(equity: float, peak: float) -> float:
    """Fraction below `peak` (0 when there is no positive peak or equity is above it)."""
    if peak <= 0 or not math.isfinite(equity):
        return 0.0
    return max(0.0, 1.0 - equity / peak)


# ---- costs ----------------------------------------------------------------------------------------
def closing_gross_pnl(position_qty: float, avg_entry: float, buy: bool, qty: float,
                      reference_price: float) -> float | None:
    """Realized P&L before costs of a fill of `qty` (buy or sell) against a position of `position_qty`
    entered at `avg_entry`: the closed part valued at the decision price. None for a fill that only opens/adds."""
    if position_qty == 0 or (position_qty > 0) == buy:
        return None
    closed = min(qty, abs(position_qty))
    direction = 1.0 if position_qty > 0 else -1.0
    return direction * closed * (reference_price - avg_entry)


def cost_to_gross_profit(costs: Iterable[float], gross_pnls: Iterable[float | None]) -> float:
    """Signed costs / gross profit (the sum of the positive gross P&Ls of closing fills; None = a fill that
    closed nothing). NaN with no closing fill, or no cost and no profit; +Inf (-Inf) with costs > 0 (< 0) and
    no profit; negative when favourable fills outweigh adverse ones."""
    cost = sum(costs)
    realized = [p for p in gross_pnls if p is not None]
    if not realized:
        return _NAN
    profit = sum(p for p in realized if p > 0)
    if profit > 0:
        return cost / profit
    if cost > 0:
        return math.inf
    if cost < 0:
        return -math.inf
    return _NAN


# ---- exposure -------------------------------------------------------------------------------------
def position_values(positions: Mapping[str, float], marks: Mapping[str, float]) -> dict[str, float]:
    """Signed market value per symbol (positions with no usable mark are left out)."""
    out: dict[str, float] = {}
    for symbol, qty in positions.items():
        mark = marks.get(symbol)
        if qty == 0 or mark is None or not math.isfinite(mark) or mark <= 0:
            continue
        out[symbol] = qty * mark
    return out


def sector_exposure(values: Mapping[str, float], sectors: Mapping[str, str], equity: float) -> dict[str, float]:
    """Gross exposure (sum of |value|) per sector as a fraction of equity; unmapped symbols -> "unclassified".
    All 0 when equity is not positive."""
    out: dict[str, float] = {}
    for symbol, value in values.items():
        sector = sectors.get(symbol, UNCLASSIFIED)
        out[sector] = out.get(sector, 0.0) + abs(value)
    return {s: (v / equity if equity > 0 else 0.0) for s, v in out.items()}


def herfindahl(values: Iterable[float]) -> float:
    """Sum of squared weights of gross (|value| / sum |value|); 0 for a flat book."""
    gross = [abs(v) for v in values if v != 0]
    total = sum(gross)
    if total <= 0:
        return 0.0
    return sum((v / total) * (v / total) for v in gross)


# ---- the rolling window ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """Everything the performance gauges show, computed at one settled bar."""

    sharpe: float
    win_rate: float
    profit_factor: float
    turnover: float
    benchmark_divergence: float
    cost_to_gross_profit: float
    realized_cost_signed: float


@dataclass
class _Bar:
    timestep: datetime
    equity: float
    benchmark: float | None
    traded_notional: float


class PerformanceWindow:
    """The trailing `window_bars` bars and `cost_window_fills` fills (not thread-safe: the caller locks).

    Fills are counted in the bar that settles next (`traded_notional`), and in the cost window."""

    def __init__(self, window_bars: int = DEFAULT_WINDOW_BARS, cost_window_fills: int = COST_WINDOW_FILLS,
                 bars_per_year: float = BARS_PER_YEAR_DAILY) -> None:
        if window_bars < 1 or cost_window_fills < 1 or bars_per_year <= 0:
            raise ValueError("window_bars and cost_window_fills must be >= 1, bars_per_year > 0")
        self.bars_per_year = bars_per_year
        # N returns need N + 1 equities.
        self._bars: deque[_Bar] = deque(maxlen=window_bars + 1)
        # (signed cost, gross P&L before costs; None for a fill that closed nothing)
        self._fills: deque[tuple[float, float | None]] = deque(maxlen=cost_window_fills)
        self._pending_notional = 0.0
        self.realized_cost_signed = 0.0  # since the window was created (process start)

    def record_fill(self, *, notional: float, signed_cost: float, gross_pnl: float | None) -> None:
        self._pending_notional += abs(notional)
        self._fills.append((signed_cost, gross_pnl))
        self.realized_cost_signed += signed_cost

    def record_bar(self, timestep: datetime, equity: float, benchmark_price: float | None = None) -> None:
        if not math.isfinite(equity):
            return
        benchmark = benchmark_price if benchmark_price is not None and benchmark_price > 0 else None
        last = self._bars[-1] if self._bars else None
        if last is not None and last.timestep == timestep:  # the same bar, another service's symbols
            last.equity = equity
            last.benchmark = benchmark if benchmark is not None else last.benchmark
            last.traded_notional += self._pending_notional
        else:
            self._bars.append(_Bar(timestep, equity, benchmark, self._pending_notional))
        self._pending_notional = 0.0

    def snapshot(self) -> Snapshot:
        bars = list(self._bars)
        equities = [b.equity for b in bars]
        pnls = [b - a for a, b in zip(equities, equities[1:], strict=False)]
        # The first bar of the window only anchors the returns; turnover is over the bars that have a return
        # (or the one bar there is).
        moved = bars[1:] if len(bars) > 1 else bars
        return Snapshot(
            sharpe=sharpe_ratio(bar_returns(equities), self.bars_per_year),
            win_rate=win_rate(pnls),
            profit_factor=profit_factor(pnls),
            turnover=average_turnover([b.traded_notional for b in moved], [b.equity for b in moved]),
            benchmark_divergence=benchmark_divergence(equities, [b.benchmark for b in bars]),
            cost_to_gross_profit=cost_to_gross_profit((c for c, _ in self._fills), (g for _, g in self._fills)),
            realized_cost_signed=self.realized_cost_signed,
        )
