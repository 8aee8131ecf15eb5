"""Shared fixtures: one signing key pair, tiny TorchScript policies, and a pre-initialised MLflow DB.

Creating MLflow's schema takes about a second; every test copies a template database instead,
so each test gets its own registry in milliseconds and no test sees another's versions.
"""

import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import torch
from registry_test_values import DATASET_ID, FEATURE_SPEC_HASH, GIT_COMMIT

from contracts.policy import PolicySignature, TensorSpec
from registry.artifacts import candidate_dir_for, write_signed_artifact
from registry.keys import SigningKeys, load_or_create_signing_keys
from registry.policy_registry import PolicyRegistry
from registry.tracking import MLFLOW_DB_FILENAME, tracking_uri_for_state_dir


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return load_or_create_signing_keys(tmp_path_factory.mktemp("keys"), env={})


@pytest.fixture(scope="session")
def symbol_signature() -> PolicySignature:
    return PolicySignature(
        agent="symbol_agent",
        inputs=(TensorSpec(name="observation", dtype="FP32", dims=(4,)),),
        outputs=(TensorSpec(name="action_probs", dtype="FP32", dims=(3,)),),
        feature_spec_hash=FEATURE_SPEC_HASH,
        action_labels=("flat", "half", "full"),
    )


@pytest.fixture(scope="session")
def tiny_modules() -> tuple[torch.jit.ScriptModule, torch.jit.ScriptModule]:
    torch.manual_seed(7)
    return torch.jit.script(torch.nn.Linear(4, 3)), torch.jit.script(torch.nn.Linear(4, 3))


@pytest.fixture
def signed_artifact(
    tmp_path: Path, signing_keys: SigningKeys, symbol_signature: PolicySignature
) -> Callable[[torch.jit.ScriptModule, date | str], Path]:
    """Write a signed symbol_agent artifact into the candidate folder named by `key` (a run id, or a date)."""

    def write(module: torch.jit.ScriptModule, key: date | str) -> Path:
        return write_signed_artifact(
            module,
            directory=candidate_dir_for(tmp_path / "project", str(key)),
            agent="symbol_agent",
            manifest={"signature": symbol_signature, "dataset_id": DATASET_ID, "git_commit": GIT_COMMIT},
            keys=signing_keys,
        )

    return write


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("mlflow-template")
    registry = PolicyRegistry(tracking_uri_for_state_dir(state))
    assert registry.client.search_registered_models() == []  # forces the schema migration now
    return state / MLFLOW_DB_FILENAME


@pytest.fixture
def policy_registry(tmp_path: Path, mlflow_template_db: Path) -> PolicyRegistry:
    state = tmp_path / "state"
    state.mkdir()
    shutil.copyfile(mlflow_template_db, state / MLFLOW_DB_FILENAME)
    return PolicyRegistry(tracking_uri_for_state_dir(state))
