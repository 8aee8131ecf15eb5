"""The routing table, served: which policy version decides each symbol, loaded in Triton, one request per version.

At each bar the trading service calls `refresh()`: one cheap revision read; on a new revision the
table is read, Triton is told to load exactly the versions it names (and to drop the others), and
each version's signed manifest is read for its feature spec. A version the table names that Triton
cannot serve sends its symbols to the `sl_fallback` slot and raises `POLICY_VERSION_MISSING`;
with no usable fallback either, those symbols get no decision this bar (they hold) and
`NO_POLICY_FOR_SYMBOLS` is raised. Nothing here crashes the service.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from contracts.config import TritonConfig
from contracts.features import FeatureSpec
from marlops.errors import MarlopsError
from marlops.routing import PolicyRef, RoutingTable
from marlops.routing_store import RoutingStore
from registry.verification import ArtifactVerificationError, verify_artifact
from serving.client import PolicyClient
from serving.errors import ServingError
from serving.triton_runtime.policy_runtime import ARTIFACT_FILE
from serving.version_sync import sync_versions

logger = logging.getLogger(__name__)

FALLBACK_SLOT = "sl_fallback"
ALERT_VERSION_MISSING = "POLICY_VERSION_MISSING"
ALERT_NO_POLICY = "NO_POLICY_FOR_SYMBOLS"
ALERT_SYNC_FAILED = "ROUTING_SYNC_FAILED"


class RoutingUnavailableError(ServingError):
    """No routing table could be put in force (store or Triton unreachable before the first sync)."""


@dataclass(frozen=True)
class VersionInfo:
    ref: PolicyRef
    spec: FeatureSpec
    manifest: dict[str, object]


def read_version_manifest(repository: Path, ref: PolicyRef, public_key_path: Path) -> VersionInfo:
    """The verified manifest of an exported version and the feature spec it was trained with."""
    artifact = Path(repository) / ref.model / str(ref.version) / ARTIFACT_FILE
    try:
        manifest = verify_artifact(artifact, Path(public_key_path).read_bytes())
    except (ArtifactVerificationError, OSError) as exc:
        raise ServingError(f"{ref}: the exported artifact {artifact} does not verify: {exc}") from exc
    raw = manifest.get("feature_spec")
    if raw is None:
        raise ServingError(f"{ref}: manifest of {artifact} carries no feature_spec")
    spec = FeatureSpec.model_validate_json(raw if isinstance(raw, str) else json.dumps(raw))
    return VersionInfo(ref=ref, spec=spec, manifest=manifest)


def version_holdout_start(repository: Path, ref: PolicyRef, public_key_path: Path) -> pd.Timestamp | None:
    """The first held-out bar signed into a version's manifest (where a replay of unseen bars starts), if readable."""
    try:
        manifest = read_version_manifest(repository, ref, public_key_path).manifest
    except ServingError as exc:  # only a default: the router reports an unservable version itself
        logger.warning("cannot read the held-out start of %s: %s", ref, exc)
        return None
    value = manifest.get("holdout_start")
    return pd.Timestamp(str(value)) if value else None


class PolicyRouter:
    def __init__(self, store: RoutingStore, *, triton_http_url: str, infer_url: str, protocol: str,
                 repository: Path, public_key_path: Path, triton: TritonConfig,
                 alert: Callable[[str, str | None], None]) -> None:
        self._store = store
        self._http_url = triton_http_url
        self._infer_url = infer_url
        self._protocol = protocol
        self._repository = Path(repository)
        self._public_key = Path(public_key_path)
        self._triton = triton
        self._alert = alert  # alert(name, detail) raises; alert(name, None) clears
        self._table: RoutingTable | None = None
        self._ready: dict[str, frozenset[int]] = {}
        self._info: dict[PolicyRef, VersionInfo] = {}
        self._clients: dict[PolicyRef, PolicyClient] = {}
        self.missing: frozenset[PolicyRef] = frozenset()
        self._stale = False

    @property
    def table(self) -> RoutingTable:
        if self._table is None:
            raise ServingError("routing table not read yet: call refresh() first")
        return self._table

    def refresh(self) -> RoutingTable:
        """The table in force for this bar; Triton follows it when its revision changed (or after `invalidate`).

        When the store or Triton cannot be reached, the table in force stays, `ROUTING_SYNC_FAILED` is raised
        and the next bar tries again; with no table yet, RoutingUnavailableError (the caller skips the bar)."""
        try:
            revision = self._store.revision()
            if self._table is not None and not self._stale and revision == self._table.revision:
                return self._table
            table = self._store.read()
            self._sync(table)
        except (MarlopsError, ServingError) as exc:
            self._alert(ALERT_SYNC_FAILED, f"routing/Triton sync failed ({exc}); "
                        + ("keeping revision %d, retrying next bar" % self._table.revision if self._table
                           else "no routing table in force yet"))
            if self._table is None:
                raise RoutingUnavailableError(str(exc)) from exc
            return self._table
        self._alert(ALERT_SYNC_FAILED, None)
        logger.info("routing table revision %d in force: %s", table.revision,
                    {slot: str(ref) for slot, ref in table.policies.items()})
        self._table, self._stale = table, False
        return table

    def invalidate(self) -> None:
        """Sync Triton again at the next bar even if the table did not change (e.g. Triton restarted and lost
        its loaded models: explicit model control loads nothing by itself)."""
        self._stale = True

    def _sync(self, table: RoutingTable) -> None:
        missing: set[PolicyRef] = set()
        wanted = {model: set(versions) for model, versions in table.served().items()}
        fallback = table.policies.get(FALLBACK_SLOT)
        if fallback is not None:  # always loaded: it must be ready the moment a routed version fails
            wanted.setdefault(fallback.model, set()).add(fallback.version)
        for model in self._ready:  # a model no slot names any more is unloaded
            wanted.setdefault(model, set())
        ready: dict[str, frozenset[int]] = {}
        for model, versions in sorted(wanted.items()):
            result = sync_versions(self._http_url, self._repository, model, set(versions), self._public_key,
                                   self._triton)
            ready[model] = frozenset(result.loaded)
            missing |= {PolicyRef(model, v) for v in result.missing}
            if result.unloaded:
                logger.info("Triton unloaded %s versions %s (no longer routed)", model, sorted(result.unloaded))
        self._ready = ready
        for ref in [r for r in self._clients if not self.is_ready(r)]:
            self._clients.pop(ref).close()
        self.missing = frozenset(missing)
        self._alert(ALERT_VERSION_MISSING,
                    f"routed but not servable by Triton: {', '.join(sorted(map(str, missing)))}; their symbols "
                    f"go to {FALLBACK_SLOT}" if missing else None)

    def is_ready(self, ref: PolicyRef) -> bool:
        return ref.version in self._ready.get(ref.model, frozenset())

    def info(self, ref: PolicyRef) -> VersionInfo:
        if ref not in self._info:
            self._info[ref] = read_version_manifest(self._repository, ref, self._public_key)
        return self._info[ref]

    def client(self, ref: PolicyRef) -> PolicyClient:
        if ref not in self._clients:
            self._clients[ref] = PolicyClient(self._infer_url, ref.model, protocol=self._protocol,  # type: ignore[arg-type]
                                              model_version=str(ref.version))
        return self._clients[ref]

    def fallback(self) -> PolicyRef | None:
        ref = self.table.policies.get(FALLBACK_SLOT)
        return ref if ref is not None and self.is_ready(ref) else None

    def acting(self, symbols: Sequence[str]) -> tuple[dict[PolicyRef, list[str]], list[str]]:
        """Symbols grouped by the servable version that decides them, and the symbols no version can decide."""
        groups: dict[PolicyRef, list[str]] = {}
        orphans: list[str] = []
        fallback = self.fallback()
        for ref, members in self.table.groups(symbols).items():
            target = ref if ref is not None and self.is_ready(ref) else fallback
            if target is None:
                orphans.extend(members)
            else:
                groups.setdefault(target, []).extend(members)
        self._alert(ALERT_NO_POLICY, f"no servable policy (nor {FALLBACK_SLOT}) for {orphans[:10]}; they hold"
                    if orphans else None)
        return groups, orphans

    def shadows(self, symbols: Sequence[str]) -> dict[PolicyRef, list[str]]:
        return {ref: members for ref, members in self.table.shadow_groups(symbols).items() if self.is_ready(ref)}

    def master(self) -> PolicyRef | None:
        ref = self.table.policies.get("master")
        return ref if ref is not None and self.is_ready(ref) else None

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
