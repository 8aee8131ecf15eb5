"""Settings of the marlops CLI services, from the environment and `.env`.

Precedence: a command-line flag (passed as a keyword) > an environment variable > `.env` (in the
project root) > the default. The names are the ones users already know: MARLOPS_HOME,
MARLOPS_STATE_URL, MLFLOW_TRACKING_URI, DAGSTER_HOME, REDIS_URL, and Alpaca's APCA_*. Keys are
`SecretStr`, so they never show in a repr or a log line. `.env.example` documents every variable.

    settings = MarlopsSettings.load(project_root)          # env + <project_root>/.env
    settings = MarlopsSettings.load(project_root, mlflow_tracking_uri=args.mlflow_uri)  # a flag wins
"""

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = ".marlops"


class MarlopsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      populate_by_name=True, frozen=True)

    # Where marlops keeps its state (relative: to the project root).
    marlops_home: Path = Field(default=Path(DEFAULT_HOME), validation_alias="MARLOPS_HOME")
    # The marlops state store (routing table, trading cursor, alerts); None: SQLite under MARLOPS_HOME.
    state_url: str | None = Field(default=None, validation_alias="MARLOPS_STATE_URL")
    # MLflow tracking/registry server or store; None: sqlite:///<MARLOPS_HOME>/mlflow.db.
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    # Dagster instance directory; None: <MARLOPS_HOME>/dagster.
    dagster_home: Path | None = Field(default=None, validation_alias="DAGSTER_HOME")
    # The master directive bus; MARLOPS_DIRECTIVE_BUS_URL wins over the generic REDIS_URL.
    directive_bus_url: str | None = Field(
        default=None, validation_alias=AliasChoices("MARLOPS_DIRECTIVE_BUS_URL", "REDIS_URL"))
    # Alpaca trading API (server root, no /v2) and keys.
    apca_api_base_url: str | None = Field(default=None, validation_alias="APCA_API_BASE_URL")
    apca_api_key_id: SecretStr | None = Field(default=None, validation_alias="APCA_API_KEY_ID")
    apca_api_secret_key: SecretStr | None = Field(default=None, validation_alias="APCA_API_SECRET_KEY")
    # Alpaca market data REST and stream endpoints.
    apca_data_url: str | None = Field(default=None, validation_alias="APCA_DATA_URL")
    apca_data_stream_url: str | None = Field(default=None, validation_alias="APCA_DATA_STREAM_URL")
    # Alpaca market data feed (iex or sip) and the bar timeframe the trading service reads (1Day or 1Min).
    apca_data_feed: str | None = Field(default=None, validation_alias="APCA_DATA_FEED")
    apca_data_timeframe: str | None = Field(default=None, validation_alias="APCA_DATA_TIMEFRAME")

    @classmethod
    def load(cls, project_root: Path | None = None, **flags: Any) -> "MarlopsSettings":
        """Settings for the project at `project_root` (default: the working directory), reading its
        `.env`; keyword `flags` that are not None override everything (they are command-line flags)."""
        project = (project_root or Path.cwd()).resolve()
        given = {k: v for k, v in flags.items() if v is not None}
        return cls(_env_file=project / ".env", **given)  # type: ignore[call-arg]

    def home_dir(self, project_root: Path) -> Path:
        home = self.marlops_home.expanduser()
        return (home if home.is_absolute() else project_root / home).resolve()
