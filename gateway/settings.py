"""Settings of one gateway instance."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.config import RiskOverlaysConfig

Role = Literal["viewer", "trader", "risk_officer", "admin"]


class ApiToken(BaseModel):
    """Who a bearer token speaks for, and with which role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: str = Field(min_length=1)
    role: Role


class GatewaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    risk: RiskOverlaysConfig
    # SQLAlchemy URL of the audit trail: SQLite (WAL) by default, `postgresql+psycopg://...` in production.
    audit_url: str = "sqlite:///.marlops/gateway/audit.db"
    audit_table: str = Field(default="gateway_audit", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    broker_base_url: str = Field(min_length=1)
    broker_key_id: str = "marlops-paper"
    broker_secret_key: str = "marlops-paper-secret"
    broker_timeout_s: float = Field(default=10.0, gt=0)
    # How long one request waits for a submitted market order to report its fill before moving on
    # (the paper exchange fills at once; a real broker may take a moment). Later fills are picked up
    # at the start of the next timestep.
    fill_wait_s: float = Field(default=2.0, ge=0)
    # Upper bound on any directive's TTL, in MARKET seconds relative to the decision's timestep.
    directive_ttl_seconds: float = Field(default=864000.0, gt=0)
    # Who the gateway itself acts as in the audit trail (decisions, orders, fills).
    principal: str = Field(default="gateway", min_length=1)
    # Bearer token -> principal and role. Empty = no authentication (local paper trading only):
    # the gateway logs a warning at start. Non-empty = every endpoint except /healthz and /metrics
    # needs a token, and mutating endpoints check the role.
    api_tokens: dict[str, ApiToken] = Field(default_factory=dict)
