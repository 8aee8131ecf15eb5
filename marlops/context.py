"""What every lifecycle step needs: where state lives, the config in force, the registry and the signing keys."""

from dataclasses import dataclass
from pathlib import Path

from contracts.config import RLConfig
from marlops.paths import StatePaths
from registry.keys import SigningKeys, load_or_create_signing_keys
from registry.policy_registry import PolicyRegistry


@dataclass(frozen=True)
class PipelineContext:
    paths: StatePaths
    config: RLConfig
    registry: PolicyRegistry
    keys: SigningKeys

    @classmethod
    def create(cls, paths: StatePaths, config: RLConfig) -> "PipelineContext":
        paths.ensure()
        return cls(paths=paths, config=config, registry=PolicyRegistry(paths.mlflow_uri),
                   keys=load_or_create_signing_keys(paths.keys_dir))

    @property
    def model_repository(self) -> Path:
        return self.paths.model_repository(self.config.serving.triton.model_repository)
