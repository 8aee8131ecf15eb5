"""What the feed guard tells the trading service about one bar: provider states, alert transitions, missing bars.

Codes are data: every string the trading service (or a dashboard) may match on is a constant here or in
`market_data.feed_checks`, never spelled inline elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Provider states.
ACTIVE = "ACTIVE"  # its valid fresh bars vote
STALE = "STALE"  # no fresh bar from it for `stale_after_intervals` bars in a row
QUARANTINED = "QUARANTINED"  # disagreed with a quorum of the others: compared, never votes, until released
PROVIDER_STATES: tuple[str, ...] = (ACTIVE, STALE, QUARANTINED)

# Alert name prefixes; the full name is "<prefix>:<provider>" (one alert per provider, raised then cleared).
ALERT_PROVIDER_QUARANTINED = "FEED_PROVIDER_QUARANTINED"
ALERT_PROVIDER_STALE = "FEED_PROVIDER_STALE"


def provider_alert(prefix: str, provider: str) -> str:
    """`FEED_PROVIDER_QUARANTINED:iex`: the alert of one provider."""
    return f"{prefix}:{provider}"


@dataclass(frozen=True)
class FeedStatus:
    """The feed's state at one bar.

    `providers`: provider -> ACTIVE | STALE | QUARANTINED (QUARANTINED wins over STALE).
    `alerts`: transitions this bar, in order: (name, detail) raises or updates an alert, (name, None) clears it;
        nothing is repeated while a state holds.
    `missing`: symbol -> how many providers had no row for it this bar (only symbols with at least one).
    `provider_missing`: provider -> how many universe symbols it had no row for this bar (0 included).
    `quorum`: providers that must agree on a symbol (None: one provider, validation only).
    """

    providers: Mapping[str, str] = field(default_factory=dict)
    alerts: tuple[tuple[str, str | None], ...] = ()
    missing: Mapping[str, int] = field(default_factory=dict)
    provider_missing: Mapping[str, int] = field(default_factory=dict)
    quorum: int | None = None

    def raised(self) -> dict[str, str]:
        """Alerts raised (or updated) this bar: name -> detail."""
        return {name: detail for name, detail in self.alerts if detail is not None}

    def cleared(self) -> tuple[str, ...]:
        return tuple(name for name, detail in self.alerts if detail is None)
