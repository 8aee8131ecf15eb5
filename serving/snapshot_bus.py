"""Market snapshots from the trading service to the master agent service, on Redis channel `market-snapshots`.

The trading service publishes one `MarketSnapshotMessage` per bar it decides:

    bus = SnapshotBus("redis://127.0.0.1:6379/0")
    bus.publish_snapshot(timestamp=ts, bar_index=i, master_features=dict(master_row),
                         regime_shift=shift, feature_spec_hash=spec.spec_hash())

and the master agent service (`marlops master`) subscribes: `bus.subscribe(callback)`.
Reconnection and health are those of `serving.redis_channel.RedisChannel`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from contracts.decisions import MarketSnapshotMessage
from contracts.urls import redact_url
from serving.errors import DirectiveBusError
from serving.redis_channel import RECONNECT_PAUSE_S, ChannelHealth, HealthCallback, RedisChannel

logger = logging.getLogger(__name__)

SNAPSHOT_CHANNEL = "market-snapshots"

SnapshotCallback = Callable[[MarketSnapshotMessage], None]


def snapshot_message(
    *,
    timestamp: datetime,
    bar_index: int,
    master_features: Mapping[str, float],
    regime_shift: bool = False,
    feature_spec_hash: str = "",
    published_at: datetime | None = None,
) -> MarketSnapshotMessage:
    """The message for one bar; `published_at` defaults to now (wall clock, UTC)."""
    if timestamp.tzinfo is None:
        raise DirectiveBusError(f"snapshot timestamp {timestamp.isoformat()} must be timezone-aware (UTC bar time)")
    features = {str(k): float(v) for k, v in master_features.items()}
    bad = sorted(k for k, v in features.items() if not math.isfinite(v))
    if bad:
        raise DirectiveBusError(f"snapshot of bar {bar_index}: non-finite master features {bad}")
    return MarketSnapshotMessage(
        timestamp=timestamp,
        bar_index=bar_index,
        master_features=features,
        regime_shift=bool(regime_shift),
        feature_spec_hash=feature_spec_hash,
        published_at=published_at or datetime.now(UTC),
    )


class SnapshotBus:
    """Publish / subscribe `MarketSnapshotMessage`s on one Redis channel."""

    def __init__(
        self,
        url: str,
        channel: str = SNAPSHOT_CHANNEL,
        *,
        on_health: HealthCallback | None = None,
        connect_timeout_s: float = 2.0,
        reconnect_pause_s: float = RECONNECT_PAUSE_S,
    ) -> None:
        self.url = url
        self.shown_url = redact_url(url)  # for logs and exception texts: never the password
        self.channel = channel
        self._channel: RedisChannel[MarketSnapshotMessage] = RedisChannel(
            url, channel, MarketSnapshotMessage, on_health=on_health, connect_timeout_s=connect_timeout_s,
            reconnect_pause_s=reconnect_pause_s,
        )

    @property
    def health(self) -> ChannelHealth:
        return self._channel.health

    @property
    def malformed_count(self) -> int:
        return self._channel.malformed_count

    def publish(self, snapshot: MarketSnapshotMessage) -> int:
        """Publish one snapshot; returns how many subscribers (master services) received it."""
        return self._channel.publish(snapshot, what=f"snapshot of bar {snapshot.bar_index}")

    def publish_snapshot(
        self,
        *,
        timestamp: datetime,
        bar_index: int,
        master_features: Mapping[str, float],
        regime_shift: bool = False,
        feature_spec_hash: str = "",
    ) -> MarketSnapshotMessage:
        """What the trading service calls once per bar; returns the message sent (stamped `published_at`)."""
        message = snapshot_message(
            timestamp=timestamp, bar_index=bar_index, master_features=master_features,
            regime_shift=regime_shift, feature_spec_hash=feature_spec_hash,
        )
        self.publish(message)
        return message

    def subscribe(self, callback: SnapshotCallback, *, wait_s: float | None = 5.0) -> None:
        """Register `callback` (called on the listener thread); see RedisChannel.subscribe for `wait_s`."""
        self._channel.subscribe(callback, wait_s=wait_s)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._channel.wait_connected(timeout_s)

    def close(self) -> None:
        self._channel.close()
