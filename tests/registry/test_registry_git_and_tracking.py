"""current_git_commit on real throwaway repositories, and tracking URI resolution."""

import subprocess
from pathlib import Path

import pytest

from registry.errors import RegistryError
from registry.git import current_git_commit
from registry.tracking import default_artifact_location, normalize_tracking_uri, tracking_uri_for_state_dir


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Keep git from walking up into any repository that happens to contain the temp folder.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.delenv("MARLOPS_GIT_COMMIT", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    return repo


def test_current_git_commit_when_not_a_repository_then_unknown(isolated_git: Path) -> None:
    assert current_git_commit(isolated_git) == "unknown"


def test_current_git_commit_when_clean_then_head_sha_and_when_edited_then_dirty(isolated_git: Path) -> None:
    _git(isolated_git, "init", "-q")
    (isolated_git / "train.py").write_text("seed = 7\n")
    _git(isolated_git, "add", "train.py")
    _git(isolated_git, "commit", "-q", "-m", "first")
    head = _git(isolated_git, "rev-parse", "HEAD")

    assert current_git_commit(isolated_git) == head
    (isolated_git / "train.py").write_text("seed = 8\n")
    assert current_git_commit(isolated_git) == f"{head}-dirty"


def test_current_git_commit_when_repository_has_no_commit_then_unknown(isolated_git: Path) -> None:
    _git(isolated_git, "init", "-q")
    assert current_git_commit(isolated_git) == "unknown"


def test_current_git_commit_when_env_override_then_it_wins(isolated_git: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARLOPS_GIT_COMMIT", "abc123-from-build")
    assert current_git_commit(isolated_git) == "abc123-from-build"


def test_tracking_uri_when_state_dir_relative_then_absolute_sqlite_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert tracking_uri_for_state_dir(Path(".marlops")) == f"sqlite:///{tmp_path / '.marlops' / 'mlflow.db'}"


def test_normalize_tracking_uri_when_relative_sqlite_then_absolute_and_folder_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_tracking_uri("sqlite:///state/mlflow.db") == f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    assert (tmp_path / "state").is_dir()
    assert normalize_tracking_uri("http://mlflow.internal:5000") == "http://mlflow.internal:5000"


def test_normalize_tracking_uri_when_in_memory_sqlite_then_refused() -> None:
    with pytest.raises(RegistryError, match="use sqlite:///<path to a database file>"):
        normalize_tracking_uri("sqlite://")


def test_default_artifact_location_when_sqlite_then_folder_beside_db_and_when_server_then_none(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert default_artifact_location(uri) == (tmp_path / "mlartifacts").as_uri()
    assert default_artifact_location("postgresql://postgres@127.0.0.1:5432/test") is None
