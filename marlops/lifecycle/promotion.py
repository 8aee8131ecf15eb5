"""Promotion and rollback of registered policy versions, and the dated production folders they leave.

A promotion downloads each version from MLflow, verifies it against the trusted key and its registered
sha256, copies the verified files into a new `models/rl/production/<YYYY-MM-DD>[.<n>]/` folder (published
by one atomic rename, with a `promotion.json` saying who promoted what and why), then moves the registry
aliases: `production` -> the new version, the old production -> `last-known-good`. A production folder is
never written twice: the second promotion of a day gets `<date>.2`, the third `<date>.3`, and so on.
Candidates live in `models/rl/candidates/<run_id>/` (`marlops.candidates.register_candidate`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marlops.context import PipelineContext
from marlops.lifecycle.errors import LifecycleError
from registry.artifacts import (
    PRODUCTION_SUBDIR,
    copy_signed_artifact,
    load_verified_artifact,
    production_dir_for,
)
from registry.errors import PolicyNotFoundError
from registry.registered_policy import (
    ALIAS_LAST_KNOWN_GOOD,
    ALIAS_PRODUCTION,
    RegisteredPolicy,
)

logger = logging.getLogger(__name__)

PROMOTION_FILE = "promotion.json"
TAG_PROMOTED_AT = "promoted_at"
TAG_PRODUCTION_DIR = "production_dir"
TAG_ROLLED_BACK_AT = "rolled_back_at"
TAG_ROLLED_BACK_BY = "rolled_back_by"
TAG_ROLLBACK_REASON = "rollback_reason"
_MOVED_ALIASES = (ALIAS_PRODUCTION, ALIAS_LAST_KNOWN_GOOD)
_TAKEN = (errno.EEXIST, errno.ENOTEMPTY)


@dataclass(frozen=True)
class Promotion:
    promoted_at: str  # ISO-8601 UTC
    directory: str  # models/rl/production/<date>[.<n>], relative to the artifacts root
    versions: dict[str, str]  # agent -> version now production
    previous: dict[str, str]  # agent -> version that was production (now last-known-good); empty on first promotion
    files: dict[str, str]  # agent -> the .ptc in `directory`, relative to the artifacts root
    sha256: dict[str, str]
    principal: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def promote_versions(
    ctx: PipelineContext,
    versions: Mapping[str, str],
    *,
    principal: str,
    reason: str,
    now: datetime | None = None,
) -> Promotion:
    """Make `versions` (agent -> version number or alias) production; see the module docstring.

    Raises ArtifactVerificationError (nothing written, no alias moved) when a version fails verification,
    PolicyNotFoundError for an unknown agent or version, LifecycleError for an empty request, a missing
    principal or reason, or a version that already is production.
    """
    if not versions:
        raise LifecycleError("nothing to promote: no agent versions given")
    if not principal.strip() or not reason.strip():
        raise LifecycleError("a promotion needs a principal (who) and a reason (why)")
    moment = _utc(now)
    registry = ctx.registry
    targets = {agent: registry.resolve(agent, version) for agent, version in versions.items()}
    before = {agent: registry.aliases(agent) for agent in targets}
    already = [f"{agent} v{policy.version}" for agent, policy in targets.items()
               if before[agent].get(ALIAS_PRODUCTION) == policy.version]
    if already:
        raise LifecycleError(f"already production: {', '.join(already)}; promote only the agents that change")
    previous = {agent: aliases[ALIAS_PRODUCTION] for agent, aliases in before.items() if ALIAS_PRODUCTION in aliases}

    root = ctx.paths.artifacts_root
    public_pem = ctx.keys.public_pem()
    with tempfile.TemporaryDirectory(prefix="marlops-promote-") as tmp:
        downloaded = {agent: registry.download_verified(agent, policy.version, Path(tmp) / agent, public_pem)[0]
                      for agent, policy in targets.items()}

        def record(directory: Path) -> Promotion:
            return Promotion(
                promoted_at=moment.isoformat(),
                directory=directory.relative_to(root).as_posix(),
                versions={agent: policy.version for agent, policy in targets.items()},
                previous=previous,
                files={agent: (directory.relative_to(root) / path.name).as_posix()
                       for agent, path in downloaded.items()},
                sha256={agent: policy.sha256 for agent, policy in targets.items()},
                principal=principal,
                reason=reason,
            )

        directory, promotion = _publish(root, moment, targets, downloaded, public_pem, record)

    try:
        for agent, policy in targets.items():
            registry.promote(agent, policy.version)
        for agent, policy in targets.items():
            registry.set_version_tags(agent, policy.version, {TAG_PROMOTED_AT: promotion.promoted_at,
                                                              TAG_PRODUCTION_DIR: promotion.directory})
    except BaseException:
        _undo(ctx, targets, before, directory)
        raise
    for agent, policy in targets.items():
        logger.info("promoted %s v%s to production (was %s), files in %s", agent, policy.version,
                    f"v{previous[agent]}" if agent in previous else "none", promotion.directory)
    logger.info("promotion by %s (%s) recorded in %s", principal, reason, directory / PROMOTION_FILE)
    return promotion


def rollback_versions(ctx: PipelineContext, agents: Sequence[str], *, principal: str, reason: str) -> dict[str, str]:
    """Point each agent's `production` back at its `last-known-good`; returns agent -> version production now.

    Checks every agent first: PolicyNotFoundError (nothing moved) when any has no last-known-good.
    The version rolled back from is tagged rolled_back_at / rolled_back_by / rollback_reason.
    """
    wanted = list(dict.fromkeys(agents))
    if not wanted:
        raise LifecycleError("nothing to roll back: no agents given")
    if not principal.strip() or not reason.strip():
        raise LifecycleError("a rollback needs a principal (who) and a reason (why)")
    registry = ctx.registry
    before = {agent: registry.aliases(agent) for agent in wanted}
    missing = [agent for agent, aliases in before.items() if ALIAS_LAST_KNOWN_GOOD not in aliases]
    if missing:
        raise PolicyNotFoundError(
            f"cannot roll back {', '.join(missing)}: no {ALIAS_LAST_KNOWN_GOOD!r} version to go back to "
            "(never promoted twice, or already rolled back); promote a version instead"
        )
    now = datetime.now(UTC).isoformat()
    restored: dict[str, str] = {}
    for agent in wanted:
        demoted = before[agent].get(ALIAS_PRODUCTION)
        restored[agent] = registry.rollback(agent).version
        if demoted is not None:
            registry.set_version_tags(agent, demoted, {TAG_ROLLED_BACK_AT: now, TAG_ROLLED_BACK_BY: principal,
                                                       TAG_ROLLBACK_REASON: reason})
        logger.warning("rollback by %s (%s): %s production v%s -> v%s", principal, reason, agent, demoted,
                       restored[agent])
    return restored


def production_versions(ctx: PipelineContext, agents: Sequence[str]) -> dict[str, str] | None:
    """agent -> the version its `production` alias points at; None when any agent has none.
    PolicyNotFoundError when an agent is not registered at all."""
    current = {agent: ctx.registry.aliases(agent).get(ALIAS_PRODUCTION) for agent in agents}
    if any(version is None for version in current.values()):
        return None
    return {agent: str(version) for agent, version in current.items()}


# ------------------------------------------------------------------------------------------ internals


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"promotion time {now.isoformat()} has no time zone; pass an aware datetime")
    return now.astimezone(UTC)


def _publish(
    root: Path,
    moment: datetime,
    targets: Mapping[str, RegisteredPolicy],
    downloaded: Mapping[str, Path],
    public_pem: bytes,
    record: Callable[[Path], Promotion],
) -> tuple[Path, Promotion]:
    """Stage the verified files and promotion.json beside the production folders, then rename the staging
    folder to the first free `<date>[.<n>]`. Never writes into a folder that exists."""
    base = root / PRODUCTION_SUBDIR
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{moment.date().isoformat()}-", dir=base))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the published folder is read by other services
        for agent, path in downloaded.items():
            if (staging / path.name).exists():
                raise LifecycleError(f"two agents' artifacts are both named {path.name}; cannot publish them together")
            copied = copy_signed_artifact(path, staging)
            # The copy is what production will read: verify it, not only the download.
            load_verified_artifact(copied, public_pem, expected_sha256=targets[agent].sha256, expected_agent=agent)
        n = 1
        while True:
            directory = production_dir_for(root, moment.date(), n)
            n += 1
            if directory.exists():
                continue
            promotion = record(directory)
            (staging / PROMOTION_FILE).write_text(json.dumps(promotion.as_dict(), indent=2, sort_keys=True) + "\n")
            try:
                os.rename(staging, directory)
            except OSError as exc:
                if exc.errno in _TAKEN:  # another promotion took that name in between: try the next one
                    continue
                raise
            return directory, promotion
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _undo(ctx: PipelineContext, targets: Mapping[str, RegisteredPolicy], before: Mapping[str, Mapping[str, str]],
          directory: Path) -> None:
    """A failure after publishing: put the aliases back as they were, drop the promotion tags, and remove the
    folder (it never held production). When the aliases cannot be restored the folder stays as the record."""
    registry = ctx.registry
    restored = True
    for agent, policy in targets.items():
        try:
            now = registry.aliases(agent)
            for alias in _MOVED_ALIASES:
                was = before[agent].get(alias)
                if was is None and alias in now:
                    registry.delete_alias(agent, alias)
                elif was is not None and now.get(alias) != was:
                    registry.set_alias(agent, alias, was)
            registry.delete_version_tags(agent, policy.version, [TAG_PROMOTED_AT, TAG_PRODUCTION_DIR])
        except Exception:
            restored = False
            logger.exception("promotion failed and %s's aliases could not be restored to %s", agent,
                             dict(before[agent]))
    if restored:
        shutil.rmtree(directory, ignore_errors=True)
        logger.error("promotion failed; aliases restored and %s removed", directory)
    else:
        logger.critical("promotion failed half-way; %s kept as the record of what was attempted", directory)
