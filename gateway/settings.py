"""Settings of one gateway instance."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.bars import BENCHMARK_SYMBOL
from contracts.config import RiskOverlaysConfig
from contracts.paper_account import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET

Role = Literal["viewer", "trader", "risk_officer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "trader", "risk_officer", "admin")


class ApiToken(BaseModel):
    """Who a bearer token speaks for, and with which role. Only the token's SHA-256 is kept
    (`gateway.tokens.hash_token`); the token itself is shown once when it is created."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: str = Field(min_length=1, max_length=200)
    role: Role
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RetrySettings(BaseModel):
    """Broker calls that time out, or answer 5xx or 429, are retried with exponential backoff and
    full jitter (seeded); an order retry reuses its client_order_id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=4, ge=1, le=20)
    base_delay_s: float = Field(default=0.2, ge=0)
    max_delay_s: float = Field(default=5.0, ge=0)
    seed: int = 0


class GatewaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    risk: RiskOverlaysConfig
    # SQLAlchemy URL of the audit trail: SQLite (WAL) by default, `postgresql+psycopg://...` in production.
    audit_url: str = "sqlite:///.marlops/gateway/audit.db"
    audit_table: str = Field(default="gateway_audit", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    # How long audit rows are kept before `marlops audit prune` may archive them (7 years: SEC 17a-4 / MiFID II).
    audit_retention_days: int = Field(default=2557, ge=1)
    broker_base_url: str = Field(min_length=1)
    broker_key_id: str = Field(default=LOCAL_PAPER_KEY_ID, repr=False)
    broker_secret_key: str = Field(default=LOCAL_PAPER_SECRET, repr=False)  # never in a repr or log
    broker_timeout_s: float = Field(default=10.0, gt=0)
    retry: RetrySettings = RetrySettings()
    # How long one request waits for a submitted market order to report its fill before moving on
    # (the paper exchange fills at once; a real broker may take a moment). Later fills are picked up
    # at the start of the next timestep.
    fill_wait_s: float = Field(default=2.0, ge=0)
    # Orders of one timestep routed at once (risk-reducing orders first, then the rest). Alpaca's rate
    # limit is respected by the broker adapter whatever this is.
    routing_concurrency: int = Field(default=8, ge=1, le=64)
    # How long a caller asking for a settled answer (POST /v1/decisions?wait=settled) waits at most.
    settle_timeout_s: float = Field(default=60.0, gt=0)
    # Reconcile open/recent orders and positions with the broker this often (0 = only at start
    # and on POST /v1/reconcile).
    reconcile_interval_s: float = Field(default=30.0, ge=0)
    # On restart, an intent audited but with no broker answer is declared not sent only once it is
    # older than this (a request in flight when the gateway died may still land at the broker).
    recovery_settle_s: float = Field(default=2.0, ge=0)
    # Upper bound on any directive's TTL, in MARKET seconds relative to the decision's timestep.
    directive_ttl_seconds: float = Field(default=864000.0, gt=0)
    # Who the gateway itself acts as in the audit trail (decisions, orders, fills).
    principal: str = Field(default="gateway", min_length=1)
    # Hashed bearer tokens. Empty = no authentication (local paper trading only): the gateway logs a
    # warning at start. Non-empty = every endpoint except /healthz, /metrics and the console page
    # needs a token, and mutating endpoints check the role.
    api_tokens: tuple[ApiToken, ...] = ()
    # Symbol -> sector, for exposure by sector on the console and /v1/exposure ("unclassified" if absent).
    sectors: dict[str, str] = Field(default_factory=dict)
    # Redis URL of the master directive bus (`redis://host:6379/0`). Set: the gateway subscribes to
    # `directive_channel` itself (alert DIRECTIVE_BUS_DOWN while Redis is unreachable). None: directives
    # come only from an in-process source or POST /v1/directives.
    directive_bus_url: str | None = Field(default=None, min_length=1)
    directive_channel: str = Field(default="master-directives", min_length=1)
    # Rolling performance gauges (gateway.domain.performance): the trailing N bars (decision timesteps) for
    # Sharpe, win rate, profit factor, turnover and benchmark divergence; bars per year annualises the Sharpe
    # (252 for daily bars); the cost-to-gross-profit ratio reads the trailing `cost_window_fills` fills.
    performance_window_bars: int = Field(default=252, ge=2)
    bars_per_year: float = Field(default=252.0, gt=0)
    cost_window_fills: int = Field(default=1000, ge=1)
    # The benchmark of marlops_gateway_benchmark_divergence_ratio: its price comes with each timestep
    # (TimestepDecisions.benchmark_price), or from this symbol's decision when the timestep decides it.
    benchmark_symbol: str = Field(default=BENCHMARK_SYMBOL, min_length=1)
    # The operator console's monitoring panels (gateway/api/monitoring_routes.py). Alertmanager whose firing
    # alerts GET /v1/alerts/active shows (e.g. http://127.0.0.1:9093; API v2, read with a short timeout); None: the
    # panel says "not configured". The marlops state store holding the routing table GET /v1/routing shows (a
    # SQLAlchemy URL, read-only); None: not configured. Either URL may carry a password: never in a repr or log.
    alertmanager_url: str | None = Field(default=None, min_length=1, repr=False)
    alertmanager_timeout_s: float = Field(default=2.0, gt=0, le=30)
    state_url: str | None = Field(default=None, min_length=1, repr=False)

    @model_validator(mode="after")
    def _unique_tokens(self) -> "GatewaySettings":
        hashes = [t.token_sha256 for t in self.api_tokens]
        if len(hashes) != len(set(hashes)):
            raise ValueError("api_tokens: the same token is listed more than once")
        return self
