"""Candidates go to models/rl/candidates/<run_id>/, promotions to a new models/rl/production/<date>[.<n>]/.

Real MLflow (sqlite, copied from a migrated template per test), real Ed25519 keys, real TorchScript files;
the candidates are tiny scripted modules registered through `register_candidate`, not trained.
"""

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
import torch

from contracts.config import load_rl_config
from contracts.features import FeatureSpec
from features.spec import fit_feature_spec
from market_data.source import load_market
from marlops.candidates import (
    AGENTS,
    MASTER_AGENT,
    SYMBOL_AGENT,
    PolicyCandidate,
    RegisteredPolicies,
    register_candidate,
    signatures_for,
)
from marlops.context import PipelineContext
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.promotion import (
    PROMOTION_FILE,
    TAG_PRODUCTION_DIR,
    TAG_PROMOTED_AT,
    Promotion,
    production_versions,
    promote_versions,
    rollback_versions,
)
from marlops.paths import StatePaths
from registry.artifacts import (
    CANDIDATES_SUBDIR,
    PRODUCTION_SUBDIR,
    artifact_files,
    load_verified_artifact,
)
from registry.errors import (
    ArtifactVerificationError,
    ArtifactWriteError,
    PolicyNotFoundError,
)
from registry.keys import SigningKeys, load_or_create_signing_keys
from registry.policy_registry import PolicyRegistry
from registry.registered_policy import RegisteredPolicy
from registry.tracking import MLFLOW_DB_FILENAME, tracking_uri_for_state_dir

DAY_MORNING = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DAY_AFTERNOON = datetime(2026, 3, 2, 15, 45, tzinfo=UTC)

RegisterCandidate = Callable[..., RegisteredPolicies]


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return fit_feature_spec(load_market("synthetic", seed=7, n_symbols=2, n_days=80))


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    return load_or_create_signing_keys(tmp_path_factory.mktemp("keys"), env={})


@pytest.fixture(scope="module")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("mlflow-template")
    assert PolicyRegistry(tracking_uri_for_state_dir(state)).client.search_registered_models() == []  # migrates now
    return state / MLFLOW_DB_FILENAME


@pytest.fixture
def ctx(tmp_path: Path, mlflow_template_db: Path, signing_keys: SigningKeys) -> PipelineContext:
    state = tmp_path / "state"
    state.mkdir()
    shutil.copyfile(mlflow_template_db, state / MLFLOW_DB_FILENAME)
    paths = StatePaths(root=state, project_root=tmp_path / "project")
    return PipelineContext(paths=paths, config=load_rl_config(), keys=signing_keys,
                           registry=PolicyRegistry(tracking_uri_for_state_dir(state)))


@pytest.fixture
def register(ctx: PipelineContext, spec: FeatureSpec, tmp_path: Path) -> RegisterCandidate:
    """Register one candidate of three tiny scripted policies (new weights every call) from a new MLflow run."""
    made = iter(range(1, 1000))

    def candidate(run_id: str | None = None) -> PolicyCandidate:
        n = next(made)
        torch.manual_seed(n)
        workdir = tmp_path / f"work-{n}"
        workdir.mkdir()
        paths = {}
        for agent in AGENTS:
            paths[agent] = str(workdir / f"{agent}.ptc")
            torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), paths[agent])
        if run_id is None:
            with ctx.registry.start_run("train-policies") as run:
                run_id = run.run_id
        return PolicyCandidate(run_id=run_id, workdir=str(workdir), paths=paths, signatures=signatures_for(spec),
                               spec=spec, holdout_start="2026-01-05T00:00:00", train_metrics={"train_sharpe": 1.0},
                               dataset_id=f"dataset-{n}", git_commit="0123abcd")

    def register_one(run_id: str | None = None) -> RegisteredPolicies:
        return register_candidate(candidate(run_id), ctx)

    return register_one


def _production_root(ctx: PipelineContext) -> Path:
    return ctx.paths.artifacts_root / PRODUCTION_SUBDIR


def _bytes_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _stored_folder(ctx: PipelineContext, agent: str, version: str) -> Path:
    source = ctx.registry.resolve(agent, version).source
    parsed = urlparse(source)
    assert parsed.scheme == "file", source
    return Path(parsed.path)


def _promote(
    ctx: PipelineContext, registered: RegisteredPolicies, now: datetime, reason: str = "weekly retrain"
) -> Promotion:
    return promote_versions(ctx, registered.versions(), principal="risk_officer:alice", reason=reason, now=now)


# ------------------------------------------------------------------------------------------ registration


def test_register_when_trained_twice_same_day_then_production_folder_untouched(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    first = register()
    first_files = {agent: _bytes_of(Path(a.artifact).parent) for agent, a in first.agents.items()}
    second = register()

    assert first.run_id != second.run_id
    assert not (ctx.paths.artifacts_root / PRODUCTION_SUBDIR).exists()
    assert ctx.paths.candidates_dir == ctx.paths.artifacts_root / CANDIDATES_SUBDIR
    assert ctx.paths.production_dir == ctx.paths.artifacts_root / PRODUCTION_SUBDIR
    for registered in (first, second):
        folder = ctx.paths.candidates_dir / registered.run_id
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f.name for agent in AGENTS for f in artifact_files(folder / f"{agent}.ptc")
        )
        for agent, entry in registered.agents.items():
            assert Path(entry.artifact) == folder / f"{agent}.ptc"
            _, manifest = load_verified_artifact(Path(entry.artifact), ctx.keys, expected_sha256=entry.sha256,
                                                 expected_agent=agent)
            assert manifest["mlflow_run_id"] == registered.run_id
            # The registered version's source is the MLflow run's artifact folder, not the candidate folder.
            source = ctx.registry.resolve(agent, entry.version).source
            assert "models/rl/candidates" not in source
            assert source.endswith(f"/{registered.run_id}/artifacts/{agent}")
    assert {agent: _bytes_of(Path(a.artifact).parent) for agent, a in first.agents.items()} == first_files
    assert first.versions() == dict.fromkeys(AGENTS, "1")
    assert second.versions() == dict.fromkeys(AGENTS, "2")


def test_register_when_run_id_already_has_other_artifacts_then_refused_and_first_untouched(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    first = register()
    folder = ctx.paths.candidates_dir / first.run_id
    before = _bytes_of(folder)
    with pytest.raises(ArtifactWriteError, match="a different artifact is already there"):
        register(run_id=first.run_id)
    assert _bytes_of(folder) == before


# ------------------------------------------------------------------------------------------ promotion


def test_promote_when_twice_the_same_day_then_two_folders_first_unchanged_and_aliases_moved(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    first, second = register(), register()

    morning = _promote(ctx, first, DAY_MORNING)
    first_dir = ctx.paths.artifacts_root / morning.directory
    first_bytes = _bytes_of(first_dir)
    afternoon = _promote(ctx, second, DAY_AFTERNOON, reason="intraday fix")
    second_dir = ctx.paths.artifacts_root / afternoon.directory

    assert morning.directory == "models/rl/production/2026-03-02"
    assert afternoon.directory == "models/rl/production/2026-03-02.2"
    assert sorted(p.name for p in _production_root(ctx).iterdir()) == ["2026-03-02", "2026-03-02.2"]  # no staging
    assert _bytes_of(first_dir) == first_bytes
    assert (morning.versions, morning.previous) == (first.versions(), {})
    assert (afternoon.versions, afternoon.previous) == (second.versions(), first.versions())
    assert afternoon.sha256 == {agent: a.sha256 for agent, a in second.agents.items()}
    assert afternoon.promoted_at == DAY_AFTERNOON.isoformat()
    for agent in AGENTS:
        assert afternoon.files[agent] == f"models/rl/production/2026-03-02.2/{agent}.ptc"
        copied = ctx.paths.artifacts_root / afternoon.files[agent]
        _, manifest = load_verified_artifact(copied, ctx.keys, expected_sha256=afternoon.sha256[agent],
                                             expected_agent=agent)
        assert manifest["mlflow_run_id"] == second.run_id
        assert copied.read_bytes() == Path(second.agents[agent].artifact).read_bytes()
        aliases = ctx.registry.aliases(agent)
        assert aliases["production"] == second.versions()[agent]
        assert aliases["last-known-good"] == first.versions()[agent]
        tags = ctx.registry.client.get_model_version(agent, second.versions()[agent]).tags
        assert tags[TAG_PROMOTED_AT] == DAY_AFTERNOON.isoformat()
        assert tags[TAG_PRODUCTION_DIR] == afternoon.directory
    record = json.loads((second_dir / PROMOTION_FILE).read_text())
    assert record == afternoon.as_dict()
    assert (record["principal"], record["reason"]) == ("risk_officer:alice", "intraday fix")
    assert json.loads((first_dir / PROMOTION_FILE).read_text()) == morning.as_dict()
    assert production_versions(ctx, AGENTS) == second.versions()


def test_promote_when_stored_artifact_tampered_then_refused_and_no_production_folder(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    candidate = register()
    stored = _stored_folder(ctx, MASTER_AGENT, candidate.versions()[MASTER_AGENT]) / f"{MASTER_AGENT}.ptc"
    stored.write_bytes(stored.read_bytes() + b"\0")

    with pytest.raises(ArtifactVerificationError, match="artifact tampered"):
        _promote(ctx, candidate, DAY_MORNING)

    assert not _production_root(ctx).exists()
    assert production_versions(ctx, AGENTS) is None
    assert all("production" not in ctx.registry.aliases(agent) for agent in AGENTS)


def test_promote_when_later_candidate_tampered_then_earlier_production_folder_and_aliases_stay(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    good, bad = register(), register()
    promoted = _promote(ctx, good, DAY_MORNING)
    stored = _stored_folder(ctx, SYMBOL_AGENT, bad.versions()[SYMBOL_AGENT]) / f"{SYMBOL_AGENT}.manifest.sig"
    stored.unlink()

    with pytest.raises(ArtifactVerificationError, match="signature file missing"):
        _promote(ctx, bad, DAY_AFTERNOON)

    assert sorted(p.name for p in _production_root(ctx).iterdir()) == ["2026-03-02"]
    assert production_versions(ctx, AGENTS) == good.versions() == promoted.versions


def test_promote_when_moving_an_alias_fails_then_aliases_restored_and_folder_removed(
    ctx: PipelineContext, register: RegisterCandidate, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = register(), register()
    _promote(ctx, first, DAY_MORNING)
    real_promote = ctx.registry.promote

    def failing_promote(agent: str, version: str) -> RegisteredPolicy:
        if agent == MASTER_AGENT:
            raise RuntimeError("MLflow went away")
        return real_promote(agent, version)

    monkeypatch.setattr(ctx.registry, "promote", failing_promote)
    with pytest.raises(RuntimeError, match="MLflow went away"):
        _promote(ctx, second, DAY_AFTERNOON)

    assert sorted(p.name for p in _production_root(ctx).iterdir()) == ["2026-03-02"]
    assert production_versions(ctx, AGENTS) == first.versions()
    assert all("last-known-good" not in ctx.registry.aliases(agent) for agent in AGENTS)
    assert TAG_PROMOTED_AT not in ctx.registry.client.get_model_version(SYMBOL_AGENT, "2").tags


def test_promote_when_version_already_production_or_request_incomplete_then_refused(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    candidate = register()
    _promote(ctx, candidate, DAY_MORNING)
    with pytest.raises(LifecycleError, match="already production: symbol_agent v1"):
        _promote(ctx, candidate, DAY_AFTERNOON)
    with pytest.raises(LifecycleError, match="nothing to promote"):
        promote_versions(ctx, {}, principal="p", reason="r")
    with pytest.raises(LifecycleError, match="principal"):
        promote_versions(ctx, candidate.versions(), principal=" ", reason="r")
    with pytest.raises(ValueError, match="no time zone"):
        promote_versions(ctx, candidate.versions(), principal="p", reason="r", now=datetime(2026, 3, 2, 9))
    with pytest.raises(PolicyNotFoundError, match="no alias 'nope'"):
        promote_versions(ctx, {SYMBOL_AGENT: "nope"}, principal="p", reason="r")
    assert sorted(p.name for p in _production_root(ctx).iterdir()) == ["2026-03-02"]


def test_promote_when_given_aliases_then_resolved_to_version_numbers(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    register()
    promoted = promote_versions(ctx, dict.fromkeys(AGENTS, "candidate"), principal="p", reason="r",
                                now=DAY_MORNING)
    assert promoted.versions == dict.fromkeys(AGENTS, "1")


# ------------------------------------------------------------------------------------------ rollback


def test_rollback_when_last_known_good_exists_then_production_moves_back_and_second_rollback_refused(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    first, second = register(), register()
    _promote(ctx, first, DAY_MORNING)
    second_promotion = _promote(ctx, second, DAY_AFTERNOON)
    folders = {p.name: _bytes_of(p) for p in _production_root(ctx).iterdir()}

    restored = rollback_versions(ctx, AGENTS, principal="risk_officer:alice", reason="drawdown alert")

    assert restored == first.versions()
    assert production_versions(ctx, AGENTS) == first.versions()
    assert all("last-known-good" not in ctx.registry.aliases(agent) for agent in AGENTS)
    tags = ctx.registry.client.get_model_version(SYMBOL_AGENT, second.versions()[SYMBOL_AGENT]).tags
    assert (tags["rolled_back_by"], tags["rollback_reason"]) == ("risk_officer:alice", "drawdown alert")
    assert tags[TAG_PRODUCTION_DIR] == second_promotion.directory  # the record of the promotion stays
    assert {p.name: _bytes_of(p) for p in _production_root(ctx).iterdir()} == folders  # rollback writes no folder

    with pytest.raises(PolicyNotFoundError, match="no 'last-known-good' version to go back to"):
        rollback_versions(ctx, AGENTS, principal="risk_officer:alice", reason="again")
    assert production_versions(ctx, AGENTS) == first.versions()


def test_rollback_when_only_one_promotion_then_policy_not_found_and_nothing_moved(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    candidate = register()
    _promote(ctx, candidate, DAY_MORNING)
    with pytest.raises(PolicyNotFoundError, match="cannot roll back symbol_agent, master_agent, sl_fallback"):
        rollback_versions(ctx, AGENTS, principal="p", reason="r")
    assert production_versions(ctx, AGENTS) == candidate.versions()


def test_production_versions_when_nothing_promoted_then_none_and_unknown_agent_raises(
    ctx: PipelineContext, register: RegisterCandidate
) -> None:
    register()
    assert production_versions(ctx, AGENTS) is None
    with pytest.raises(PolicyNotFoundError, match="no registered policy named 'ghost_agent'"):
        production_versions(ctx, ("ghost_agent",))


def test_promotion_time_when_not_utc_then_dated_in_utc(ctx: PipelineContext, register: RegisterCandidate) -> None:
    candidate = register()
    late_evening_new_york = pd.Timestamp("2026-03-02 21:30", tz="America/New_York").to_pydatetime()
    promoted = _promote(ctx, candidate, late_evening_new_york)
    assert promoted.directory == "models/rl/production/2026-03-03"
    assert promoted.promoted_at == "2026-03-03T02:30:00+00:00"
