"""Automatic kill-switch triggers, as pure monitors: each observes one signal and says when the
trading state must move. The service applies what they say (and audits it); nothing here acts.

  drawdown from peak equity >= max_drawdown           -> safe mode (HALTED + gradual flatten)
  drawdown from the session's peak >= intraday_drawdown -> REDUCING + alert
  decision latency > threshold for MORE than N intervals in a row -> latency.action
  compliance breach in the real book (restricted symbol held, forbidden short, cap or leverage
  far above its limit)                               -> compliance.action
  N consecutive broker calls finding it unreachable  -> dependencies.action
  a key feature beyond its sigma limit (trading service, in band with the timestep) -> HALTED
"""

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from contracts.config import KillSwitchConfig, RiskOverlaysConfig
from contracts.orders import TradingState
from gateway.domain.market_time import as_utc

MAX_DRAWDOWN = "MAX_DRAWDOWN"
INTRADAY_DRAWDOWN = "INTRADAY_DRAWDOWN"
LATENCY_SPIKE = "LATENCY_SPIKE"
COMPLIANCE_BREACH = "COMPLIANCE_BREACH"
DEPENDENCY_LOST = "DEPENDENCY_LOST"
# Raised in band by the trading service (contracts.decisions.DataTrigger): the gateway only applies it.
FEATURE_DRIFT = "FEATURE_DRIFT"

TRIGGER_NAMES: dict[str, str] = {
    MAX_DRAWDOWN: "max_drawdown",
    INTRADAY_DRAWDOWN: "intraday_drawdown",
    LATENCY_SPIKE: "latency",
    COMPLIANCE_BREACH: "compliance",
    DEPENDENCY_LOST: "dependency",
    FEATURE_DRIFT: "feature_drift",
}


@dataclass(frozen=True)
class Trigger:
    """A breach: the alert code, the state it asks for, whether it asks for safe mode, and why."""

    code: str
    target: TradingState
    reason: str
    safe_mode: bool = False

    @property
    def name(self) -> str:
        return TRIGGER_NAMES[self.code]


def session_of(moment: datetime, timezone: str) -> str:
    """The trading session (exchange-local date) a market timestamp belongs to."""
    return as_utc(moment).astimezone(ZoneInfo(timezone)).date().isoformat()


@dataclass
class DrawdownMarks:
    """High-water marks, persisted across restarts (a restart must not forget the peak)."""

    peak_equity: float = 0.0
    session: str = ""
    session_peak: float = 0.0

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> "DrawdownMarks":
        if not data:
            return cls()
        return cls(float(data.get("peak_equity", 0.0)), str(data.get("session", "")),  # type: ignore[arg-type]
                   float(data.get("session_peak", 0.0)))  # type: ignore[arg-type]


def drawdown_triggers(marks: DrawdownMarks, equity: float, session: str, cfg: KillSwitchConfig) -> list[Trigger]:
    """Update `marks` with `equity` observed in `session` and return the drawdown breaches."""
    if not math.isfinite(equity):
        return []
    marks.peak_equity = max(marks.peak_equity, equity)
    if session != marks.session:
        marks.session, marks.session_peak = session, equity
    marks.session_peak = max(marks.session_peak, equity)
    found: list[Trigger] = []
    if marks.peak_equity > 0:
        dd = 1.0 - equity / marks.peak_equity
        if dd >= cfg.max_drawdown:
            found.append(Trigger(MAX_DRAWDOWN, TradingState.HALTED, (
                f"drawdown {dd:.1%} from peak equity {marks.peak_equity:,.2f} reached the {cfg.max_drawdown:.0%} "
                "kill limit: safe mode (no new orders, positions closed gradually)"), safe_mode=True))
    if marks.session_peak > 0:
        intraday = 1.0 - equity / marks.session_peak
        if intraday >= cfg.intraday_drawdown:
            found.append(Trigger(INTRADAY_DRAWDOWN, TradingState.REDUCING, (
                f"intraday drawdown {intraday:.1%} from the session peak {marks.session_peak:,.2f} "
                f"(session {session}) reached {cfg.intraday_drawdown:.0%}: reduce only")))
    return found


class LatencyMonitor:
    """Counts decision intervals in a row whose latency is above the threshold."""

    def __init__(self, threshold_ms: float, consecutive: int, action: TradingState, streak: int = 0) -> None:
        self.threshold_ms = threshold_ms
        self.consecutive = consecutive
        self.action = action
        self.streak = streak

    def observe(self, latency_ms: float) -> Trigger | None:
        if latency_ms <= self.threshold_ms:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak > self.consecutive:
            return Trigger(LATENCY_SPIKE, self.action, (
                f"decision latency above {self.threshold_ms:.0f} ms for {self.streak} consecutive intervals "
                f"(limit {self.consecutive}); last {latency_ms:.0f} ms"))
        return None


class DependencyMonitor:
    """Consecutive failures per dependency; any success resets that dependency's count."""

    def __init__(self, limit: int, action: TradingState) -> None:
        self.limit = limit
        self.action = action
        self.failures: dict[str, int] = {}

    def success(self, name: str) -> None:
        self.failures[name] = 0

    def failure(self, name: str, detail: str) -> Trigger | None:
        self.failures[name] = self.failures.get(name, 0) + 1
        if self.failures[name] >= self.limit:
            return Trigger(DEPENDENCY_LOST, self.action, (
                f"{name} unreachable on {self.failures[name]} consecutive calls (limit {self.limit}): {detail}"))
        return None


def compliance_breaches(
    positions: Mapping[str, float], marks: Mapping[str, float], equity: float, risk: RiskOverlaysConfig
) -> list[str]:
    """Breaches of the rules in the book as it is (after fills), one readable line each."""
    cfg = risk.kill_switch.compliance
    restricted = set(risk.restricted_symbols)
    no_short = set(risk.short_sale.not_shortable)
    found: list[str] = []
    gross = 0.0
    for symbol, qty in sorted(positions.items()):
        if qty == 0:
            continue
        if symbol in restricted:
            found.append(f"position of {qty:g} shares in restricted symbol {symbol}")
        if qty < 0 and (not risk.short_sale.allowed or symbol in no_short):
            found.append(f"short position of {qty:g} shares in {symbol}, which may not be shorted")
        mark = marks.get(symbol)
        if mark is None or not math.isfinite(mark) or mark <= 0 or equity <= 0:
            continue
        weight = abs(qty) * mark / equity
        gross += weight
        limit = risk.per_symbol_cap * (1 + cfg.position_cap_tolerance)
        if weight > limit:
            found.append(f"{symbol} is {weight:.1%} of equity, above {limit:.1%} (cap {risk.per_symbol_cap:.0%} "
                         f"+ {cfg.position_cap_tolerance:.0%} tolerance)")
    gross_limit = risk.max_gross_leverage * (1 + cfg.gross_leverage_tolerance)
    if gross > gross_limit:
        found.append(f"gross leverage {gross:.2f}x above {gross_limit:.2f}x")
    return found


def compliance_trigger(breaches: list[str], risk: RiskOverlaysConfig) -> Trigger | None:
    if not breaches:
        return None
    return Trigger(COMPLIANCE_BREACH, TradingState(risk.kill_switch.compliance.action),
                   "compliance breach: " + "; ".join(breaches))
