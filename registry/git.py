"""The git commit a policy was trained from, recorded in its manifest and MLflow tags."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

# Containers built without `.git` can pass the commit in at build time.
GIT_COMMIT_ENV = "MARLOPS_GIT_COMMIT"
UNKNOWN_COMMIT = "unknown"
DIRTY_SUFFIX = "-dirty"


def current_git_commit(cwd: Path | None = None) -> str:
    """HEAD's full sha, with `-dirty` when tracked or untracked files differ; "unknown" outside a repo."""
    override = os.environ.get(GIT_COMMIT_ENV)
    if override:
        return override
    head = _git(["rev-parse", "--verify", "HEAD"], cwd)
    if head is None:
        return UNKNOWN_COMMIT
    status = _git(["status", "--porcelain"], cwd)
    if status is None:
        logger.warning("git status failed in %s; recording commit %s without a cleanliness check", cwd, head)
        return head
    return head + DIRTY_SUFFIX if status else head


def _git(args: list[str], cwd: Path | None) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.debug("git %s failed: %s", " ".join(args), exc)
        return None
    if done.returncode != 0:
        logger.debug("git %s exited %d: %s", " ".join(args), done.returncode, done.stderr.strip())
        return None
    return done.stdout.strip()
