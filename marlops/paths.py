"""Where marlops keeps its state. Everything lives under one root (default `.marlops/`)."""

import os
from dataclasses import dataclass
from pathlib import Path

STATE_ENV = "MARLOPS_HOME"
STATE_URL_ENV = "MARLOPS_STATE_URL"
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"
DAGSTER_HOME_ENV = "DAGSTER_HOME"


@dataclass(frozen=True)
class StatePaths:
    root: Path
    project_root: Path
    # From MarlopsSettings (environment, then <project_root>/.env) when built by from_env; when None,
    # the environment variable is still honoured and then the default under `root` applies.
    mlflow_tracking_uri: str | None = None
    dagster_home_dir: Path | None = None
    state_store_url: str | None = None

    @classmethod
    def from_env(cls, project_root: Path | None = None) -> "StatePaths":
        from marlops.settings import MarlopsSettings  # marlops.settings is the one reader of env and .env

        project = (project_root or Path.cwd()).resolve()
        settings = MarlopsSettings.load(project)
        given = settings.model_fields_set
        root = settings.marlops_home.expanduser().resolve() if "marlops_home" in given else project / ".marlops"
        dagster = settings.dagster_home.expanduser().resolve() if settings.dagster_home else None
        return cls(root=root.resolve(), project_root=project, mlflow_tracking_uri=settings.mlflow_tracking_uri,
                   dagster_home_dir=dagster, state_store_url=settings.state_url)

    @property
    def dagster_home(self) -> Path:
        """The user's DAGSTER_HOME when set (their instance, their dagster.yaml), else <root>/dagster."""
        if self.dagster_home_dir is not None:
            return self.dagster_home_dir
        user = os.environ.get(DAGSTER_HOME_ENV)
        return Path(user).expanduser().resolve() if user else self.root / "dagster"

    @property
    def mlflow_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set (a user's tracking server), else the embedded SQLite store under root."""
        return self.mlflow_tracking_uri or os.environ.get(MLFLOW_URI_ENV) or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def artifacts_root(self) -> Path:
        """Signed artifacts go under `<artifacts_root>/models/rl/`: candidates/<run_id>/ and production/<date>[.<n>]/."""
        return self.project_root

    @property
    def candidates_dir(self) -> Path:
        """`models/rl/candidates/`: one folder per MLflow training run, `<run_id>/<agent>.ptc` (+ manifest, sig)."""
        return self.artifacts_root / "models" / "rl" / "candidates"

    @property
    def production_dir(self) -> Path:
        """`models/rl/production/`: one folder per promotion, `<YYYY-MM-DD>[.<n>]/<agent>.ptc` + promotion.json."""
        return self.artifacts_root / "models" / "rl" / "production"

    def model_repository(self, configured: str) -> Path:
        """The Triton model repository: `triton.model_repository` of serving.yaml, relative to the project."""
        repository = Path(configured)
        return repository if repository.is_absolute() else self.project_root / repository

    @property
    def triton_workdir(self) -> Path:
        return self.root / "triton"

    @property
    def audit_url(self) -> str:
        return f"sqlite:///{self.root / 'gateway' / 'audit.db'}"

    @property
    def state_url(self) -> str:
        """The marlops state store (routing table, trading cursor, alerts): SQLite by default,
        PostgreSQL when MARLOPS_STATE_URL says so."""
        return self.state_store_url or os.environ.get(STATE_URL_ENV) or f"sqlite:///{self.root / 'state.db'}"

    @property
    def token_store(self) -> Path:
        """Hashed API tokens of every marlops service (gateway, routing, approvals)."""
        return self.root / "auth" / "tokens.yaml"

    @property
    def tokens_dir(self) -> Path:
        """Raw local tokens, one owner-only (0600) file per role, for the local CLI (like a kubeconfig)."""
        return self.root / "tokens"

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    @property
    def demo_dir(self) -> Path:
        return self.root / "demo"

    @property
    def bench_dir(self) -> Path:
        return self.root / "bench"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def ensure(self) -> "StatePaths":
        for d in (self.root, self.dagster_home, self.keys_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self
