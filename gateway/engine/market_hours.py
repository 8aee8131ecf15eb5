"""Is the market open? From the broker's clock (cached), a configured session, or not enforced."""

import logging
from collections.abc import Callable
from zoneinfo import ZoneInfo

from gateway.brokers.base import Broker
from gateway.engine.clock import Clock
from gateway.errors import BrokerError, BrokerUnavailableError
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)


class MarketHours:
    def __init__(self, settings: GatewaySettings, broker: Broker, clock: Clock,
                 on_broker_failure: Callable[[str], None]) -> None:
        self._rule = settings.risk.market_hours
        self._broker = broker
        self._clock = clock
        self._on_broker_failure = on_broker_failure
        self._cached: tuple[float, bool] | None = None

    def is_open(self) -> bool:
        rule = self._rule
        if rule.source == "off":
            return True
        if rule.source == "session":
            local = self._clock.now().astimezone(ZoneInfo(rule.timezone))
            return local.weekday() < 5 and rule.open <= local.strftime("%H:%M") < rule.close
        now = self._clock.monotonic()
        cached = self._cached
        if cached is not None and now - cached[0] < rule.clock_cache_seconds:
            return cached[1]
        get_clock = getattr(self._broker, "get_clock", None)
        if get_clock is None:
            logger.warning("broker %s has no clock; market hours not enforced", type(self._broker).__name__)
            self._cached = (now, True)
            return True
        try:
            is_open = bool(get_clock().is_open)
        except BrokerError as exc:
            # Unknown is closed: no orders on a guess.
            logger.warning("broker clock unavailable (%s); treating the market as closed", exc)
            if isinstance(exc, BrokerUnavailableError):
                self._on_broker_failure(str(exc))
            return False
        self._cached = (now, is_open)
        return is_open
