"""Where marlops keeps its state. Everything lives under one root (default `.marlops/`)."""

import os
from dataclasses import dataclass
from pathlib import Path

STATE_ENV = "MARLOPS_HOME"
STATE_URL_ENV = "MARLOPS_STATE_URL"


@dataclass(frozen=True)
class StatePaths:
    root: Path
    project_root: Path

    @classmethod
    def from_env(cls, project_root: Path | None = None) -> "StatePaths":
        project = (project_root or Path.cwd()).resolve()
        root = Path(os.environ.get(STATE_ENV, project / ".marlops")).resolve()
        return cls(root=root, project_root=project)

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def artifacts_root(self) -> Path:
        """Signed artifacts go to `<artifacts_root>/models/rl/production/<date>/<agent>.ptc`."""
        return self.project_root

    @property
    def model_repository(self) -> Path:
        return self.root / "triton_models"

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
        return os.environ.get(STATE_URL_ENV) or f"sqlite:///{self.root / 'state.db'}"

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
