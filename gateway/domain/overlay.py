"""The master overlay: a directive (or the configured fallback preset) turns a symbol agent's
target level into a target weight.

target_weight = target_level * min(per_symbol_cap, max_position_size) * risk_scale

In defensive mode a position may only move toward zero: no new exposure, no larger position,
no flip to the other side (a flip is cut at flat).
"""

import math
from dataclasses import dataclass
from datetime import datetime

from contracts.config import RiskOverlaysConfig
from contracts.decisions import MasterDirective
from gateway.domain.market_time import seconds_between

DEFENSIVE_MODE = "DEFENSIVE_MODE"


@dataclass(frozen=True)
class EffectiveOverlay:
    """The overlay parameters actually applied to one timestep, and where they came from."""

    mode: str
    max_position_size: float
    risk_scale: float
    defensive: bool
    directive_id: str | None  # None when the fallback preset is used
    fallback: bool
    note: str

    def size(self, per_symbol_cap: float) -> float:
        """Weight of a target level of 1.0."""
        return min(per_symbol_cap, self.max_position_size) * self.risk_scale

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "max_position_size": self.max_position_size,
            "risk_scale": self.risk_scale,
            "defensive": self.defensive,
            "directive_id": self.directive_id,
            "fallback": self.fallback,
            "note": self.note,
        }


def directive_age_seconds(directive: MasterDirective, at: datetime) -> float:
    return seconds_between(directive.issued_at, at)


def directive_is_live(directive: MasterDirective, at: datetime, max_ttl_seconds: float | None = None) -> bool:
    """Live = issued at or before `at` (market time) and not older than its TTL (capped by `max_ttl_seconds`)."""
    ttl = directive.ttl_seconds if max_ttl_seconds is None else min(directive.ttl_seconds, max_ttl_seconds)
    age = directive_age_seconds(directive, at)
    return 0.0 <= age <= ttl


def resolve_overlay(
    directive: MasterDirective | None,
    risk: RiskOverlaysConfig,
    *,
    at: datetime | None = None,
    max_ttl_seconds: float | None = None,
) -> EffectiveOverlay:
    """The directive's parameters when it is live at `at`, else the fallback preset with a note why."""
    if directive is not None and (at is None or directive_is_live(directive, at, max_ttl_seconds)):
        return EffectiveOverlay(
            mode=directive.mode,
            max_position_size=directive.max_position_size,
            risk_scale=directive.risk_scale,
            defensive=directive.defensive,
            directive_id=directive.directive_id,
            fallback=False,
            note=f"directive {directive.directive_id} ({directive.mode})",
        )
    name = risk.missing_directive_fallback
    preset = risk.directive_presets[name]
    if directive is None or at is None:
        why = "no live directive"
    else:
        why = (
            f"directive {directive.directive_id} is not live at {at.isoformat()} "
            f"(age {directive_age_seconds(directive, at):.0f}s, ttl {directive.ttl_seconds:.0f}s)"
        )
    return EffectiveOverlay(
        mode=name,
        max_position_size=preset.max_position_size,
        risk_scale=preset.risk_scale,
        defensive=preset.defensive,
        directive_id=None,
        fallback=True,
        note=f"{why}: using fallback preset '{name}'",
    )


def reduce_only(current_weight: float, target_weight: float) -> tuple[float, bool]:
    """Clamp `target_weight` so the position only shrinks toward zero; returns (allowed, clipped)."""
    low, high = min(current_weight, 0.0), max(current_weight, 0.0)
    allowed = min(max(target_weight, low), high)
    return allowed, not math.isclose(allowed, target_weight, rel_tol=0.0, abs_tol=1e-12)


@dataclass(frozen=True)
class OverlayOutcome:
    target_weight: float
    raw_weight: float  # before the defensive clamp
    defensive_clipped: bool


def apply_overlay(
    target_level: float, current_weight: float, overlay: EffectiveOverlay, risk: RiskOverlaysConfig
) -> OverlayOutcome:
    raw = target_level * overlay.size(risk.per_symbol_cap)
    if not overlay.defensive:
        return OverlayOutcome(raw, raw, False)
    allowed, clipped = reduce_only(current_weight, raw)
    return OverlayOutcome(allowed, raw, clipped)
