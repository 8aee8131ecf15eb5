"""Settings of the `python -m gateway` process, from command-line flags, the environment and `.env`.

Precedence: a flag > an environment variable > `.env` (in the working directory) > the default.
Variables are `MARLOPS_GATEWAY_<FIELD>` (e.g. MARLOPS_GATEWAY_PORT), except Alpaca's own names for
the broker (APCA_API_BASE_URL, APCA_API_KEY_ID, APCA_API_SECRET_KEY) and MARLOPS_HOME, which every
marlops service shares. Broker keys are `SecretStr`: never on a command line, never in a repr or log.

The gateway imports only `contracts`, so the token store's place (`<MARLOPS_HOME>/auth/tokens.yaml`,
raw local tokens in `<MARLOPS_HOME>/tokens/`) is computed here the same way marlops.paths does.
"""

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.paper_account import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET

ENV_PREFIX = "MARLOPS_GATEWAY_"
HOME_ENV = "MARLOPS_HOME"
DEFAULT_HOME = ".marlops"


class GatewayProcessSettings(BaseSettings):
    """Everything `python -m gateway` needs to start; `GatewaySettings` is built from it."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", populate_by_name=True, frozen=True)

    home: Path = Field(default=Path(DEFAULT_HOME), validation_alias=HOME_ENV)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Broker server root, e.g. http://127.0.0.1:5100 for the local paper exchange (no /v2).
    broker_url: str | None = Field(default=None, validation_alias="APCA_API_BASE_URL")
    apca_api_key_id: SecretStr = Field(default=SecretStr(LOCAL_PAPER_KEY_ID),
                                       validation_alias="APCA_API_KEY_ID")
    apca_api_secret_key: SecretStr = Field(default=SecretStr(LOCAL_PAPER_SECRET),
                                           validation_alias="APCA_API_SECRET_KEY")
    audit_url: str | None = None  # default: sqlite:///<home>/gateway/audit.db
    audit_table: str = "gateway_audit"
    tokens_file: Path | None = None  # default: <home>/auth/tokens.yaml, the marlops token store
    tokens_dir: Path | None = None  # raw tokens written on bootstrap; default: <home>/tokens
    insecure_no_auth: bool = False
    directive_bus_url: str | None = None  # e.g. redis://127.0.0.1:6379/0; None: directives over HTTP only
    directive_channel: str = "master-directives"
    # Console panels (environment or .env only: the URLs may carry a password). None: the panel says not configured.
    alertmanager_url: str | None = None  # e.g. http://127.0.0.1:9093: firing alerts on the console
    state_url: str | None = None  # the marlops state store (SQLAlchemy URL): the routing table on the console
    sectors_file: Path | None = None
    reconcile_interval_s: float = Field(default=30.0, ge=0)
    risk_config: Path | None = None
    log_level: str = "info"

    @field_validator("log_level")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @property
    def home_dir(self) -> Path:
        return self.home.resolve()

    @property
    def token_store(self) -> Path:
        return (self.tokens_file or self.home_dir / "auth" / "tokens.yaml").resolve()

    @property
    def raw_tokens_dir(self) -> Path:
        return (self.tokens_dir or self.home_dir / "tokens").resolve()

    @property
    def effective_audit_url(self) -> str:
        return self.audit_url or f"sqlite:///{self.home_dir / 'gateway' / 'audit.db'}"
