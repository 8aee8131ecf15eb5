"""The master overlay: a directive (or the configured fallback preset) turns a symbol agent's
target level into a target weight.

target_weight = target_level * min(per_symbol_cap, max_position_size) * risk_scale

In defensive mode a position may only move toward zero: no new exposure, no larger position,
no flip to the other side (a flip is cut at flat).

A defensive override (set by an operator or by the cost-explosion playbook) is a floor under the master:
while it stands every timestep is defensive (no exposure increase: the action mask the policies were trained
with under a defensive directive) and its caps bound the directive's, whatever the master says. Only an
operator clears it.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

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


@dataclass(frozen=True)
class DefensiveOverride:
    """Defensive mode forced under the master, with caps no directive may loosen; who set it, why, since when."""

    principal: str
    reason: str
    since: datetime
    max_position_size: float
    risk_scale: float
    trigger: str = "manual"

    def as_dict(self) -> dict[str, Any]:
        return {"principal": self.principal, "reason": self.reason, "since": self.since.isoformat(),
                "max_position_size": self.max_position_size, "risk_scale": self.risk_scale, "trigger": self.trigger}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DefensiveOverride":
        return cls(str(data["principal"]), str(data["reason"]), datetime.fromisoformat(data["since"]),
                   float(data["max_position_size"]), float(data["risk_scale"]), str(data.get("trigger", "manual")))


def tighten(overlay: EffectiveOverlay, override: DefensiveOverride | None) -> EffectiveOverlay:
    """`overlay` under the override: defensive, caps the smaller of the two. Never loosens anything."""
    if override is None:
        return overlay
    return replace(
        overlay,
        mode="defensive",
        defensive=True,
        max_position_size=min(overlay.max_position_size, override.max_position_size),
        risk_scale=min(overlay.risk_scale, override.risk_scale),
        note=(f"{overlay.note}; defensive override by {override.principal} ({override.trigger}) since "
              f"{override.since.isoformat()}"),
    )


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
