"""Errors of the gateway package. Risk denials are data (RiskDecision), never these."""


class GatewayError(Exception):
    """Base error of the gateway package."""


class GatewayNotReadyError(GatewayError):
    """A request arrived before the gateway finished starting (audit open, broker reconciled)."""


class InvalidDecisionsError(GatewayError):
    """A timestep of decisions is malformed (duplicate symbol, ...). `reasons` name each problem."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class StaleTimestepError(GatewayError):
    """A symbol was already decided at this bar index or a later one (a replayed or out-of-order timestep)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class UnknownTimestepError(GatewayError):
    """No recent timestep has this id (only the last few hundred are kept, and none across a restart)."""

    def __init__(self, timestep_id: str) -> None:
        super().__init__(f"no recent timestep {timestep_id!r}: the gateway keeps the last 512 timesteps since its "
                         "start; after a restart read the order rows of GET /v1/orders instead")
        self.timestep_id = timestep_id


class PortfolioError(GatewayError):
    """A fill or mark cannot be applied to the portfolio (non-positive price, unknown side...)."""


class TradingStateError(GatewayError):
    """A trading state change request is incomplete (no principal or no reason)."""


class BrokerError(GatewayError):
    """The broker refused a request or could not be reached."""


class BrokerRejectedError(BrokerError):
    """The broker answered with an HTTP error; `status_code`, `code` and `message` are the broker's."""

    def __init__(self, status_code: int | None, message: str, code: int | None = None) -> None:
        super().__init__(f"broker rejected the request (HTTP {status_code}, code {code}): {message}")
        self.status_code = status_code
        self.code = code
        self.message = message


class BrokerUnavailableError(BrokerError):
    """The broker could not be reached or did not answer in time; the request's outcome is unknown."""


class BrokerConfigError(BrokerError):
    """The broker connection is configured wrongly (bad base URL...)."""


class AuditError(GatewayError):
    """The audit store cannot be opened or written."""


class PaperExchangeError(GatewayError):
    """The paper exchange refused a simulator request."""
