"""Make Triton serve exactly the versions of one model that the routing table names, without a restart.

    result = sync_versions(server.http_url, repository, "symbol_agent", {2, 3}, public_key_path, triton)
    result.loaded, result.missing, result.unloaded

One `POST /v2/repository/models/<model>/load` with a config override whose
`version_policy.specific.versions` is exactly the wanted versions that are exported (and verify).
What Triton 2.51 (nvidia-pytriton 0.7.0) does with it, checked on the real server by
tests/serving/test_serving_version_sync.py:
  * same process, no restart; the load answers once every new version is READY;
  * every version that stays wanted is RELOADED too (the config changed, so a new python-backend stub
    per version), but the old instance keeps serving until the new one is ready: requests pinned to a
    kept version never fail during the sync;
  * a dropped version goes to UNLOADING right after the load answers; requests already inside Triton for
    it (executing, and queued behind it) are finished and answered normally, then it unloads; requests
    that arrive for it after that are refused ("... version N is not at ready state").
An identical wanted set that is already READY sends nothing (no needless reload) unless `force`.
Wanted = empty unloads the model.

The override is built by serving.model_repository.build_model_config from the signed manifests, each
verified again here: the per-version artifact hashes and feature-spec hashes in the override are the
ones the model refuses to load without.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from google.protobuf import json_format

from contracts.config import TritonConfig
from serving.errors import ArtifactRejectedError, ModelLoadError, TritonUnavailableError
from serving.model_repository import _common_signature, _verify, build_model_config, exported_versions
from serving.triton_process import triton_error_text
from serving.triton_runtime import policy_runtime

logger = logging.getLogger(__name__)

# Loading a version starts a python-backend stub that imports torch: seconds on a busy host.
LOAD_TIMEOUT_S = 300.0
_POLL_S = 0.1


@dataclass(frozen=True)
class VersionSyncResult:
    loaded: frozenset[int]     # wanted and READY after the sync
    missing: frozenset[int]    # wanted but not exported, not verifiable, or not READY after the load
    unloaded: frozenset[int]   # READY before, not wanted, and no longer READY
    problems: dict[int, str] = field(default_factory=dict)   # version -> why it is missing
    error: str | None = None   # Triton's answer when the load request itself failed

    @property
    def ok(self) -> bool:
        return not self.missing and self.error is None


def ready_versions(http_url: str, model: str, *, timeout_s: float = 10.0) -> set[int]:
    """Versions of `model` Triton reports READY (from `POST /v2/repository/index`)."""
    try:
        with httpx.Client(base_url=http_url, timeout=timeout_s) as client:
            return _ready(client, model)
    except httpx.TransportError as exc:
        raise TritonUnavailableError(f"tritonserver at {http_url} did not answer the repository index: {exc}") from exc


def _ready(client: httpx.Client, model: str) -> set[int]:
    response = client.post("/v2/repository/index", json={})
    if response.status_code != 200:
        raise ModelLoadError(f"repository index failed: {triton_error_text(response)}")
    ready: set[int] = set()
    for entry in response.json():
        if entry.get("name") == model and entry.get("state") == "READY" and str(entry.get("version", "")).isdigit():
            ready.add(int(entry["version"]))
    return ready


def _wanted(versions: Iterable[int]) -> frozenset[int]:
    wanted = frozenset(versions)
    for version in wanted:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"model versions must be integers >= 1, got {version!r}")
    return wanted


def sync_versions(
    http_url: str,
    repository: Path,
    model: str,
    versions: set[int],
    public_key_path: Path,
    triton: TritonConfig,
    *,
    unload_timeout_s: float = 60.0,
    force: bool = False,
) -> VersionSyncResult:
    """Load the wanted versions of `model` that are exported, unload the rest; report what happened.

    Never restarts the server. Versions that stay wanted keep serving throughout. Waits (up to
    `unload_timeout_s`) for dropped versions to leave READY, i.e. for their in-flight requests to finish.
    When exactly the wanted (exported, verified) versions are READY already nothing is sent, unless
    `force`: Triton answers every changed config with a reload of every version (a new backend stub each).
    """
    wanted = _wanted(versions)
    repository = Path(repository)
    public_key_path = Path(public_key_path).resolve()
    try:
        with httpx.Client(base_url=http_url, timeout=LOAD_TIMEOUT_S) as client:
            before = _ready(client, model)
            problems: dict[int, str] = {}
            exported = set(exported_versions(repository, model))
            for version in sorted(wanted - exported):
                problems[version] = f"not exported in {repository / model}"
            manifests: dict[int, dict[str, Any]] = {}
            for version in sorted(wanted & exported):
                artifact = repository / model / str(version) / policy_runtime.ARTIFACT_FILE
                try:
                    manifests[version] = _verify(artifact, public_key_path, None)
                except ArtifactRejectedError as exc:
                    problems[version] = str(exc)
                    logger.error("model %s version %s not loaded: %s", model, version, exc)

            error: str | None = None
            if manifests and before == set(manifests) and not force:
                logger.debug("%s already serves exactly versions %s; nothing to load", model, sorted(before))
            elif manifests:
                signature = _common_signature(model, manifests)
                config = build_model_config(model, signature, manifests, public_key_path, triton)
                body = {"parameters": {"config": json_format.MessageToJson(config)}}
                logger.info("loading %s versions %s (ready before: %s)", model, sorted(manifests), sorted(before))
                response = client.post(f"/v2/repository/models/{model}/load", json=body)
                if response.status_code != 200:
                    error = f"model '{model}' failed to load versions {sorted(manifests)}: {triton_error_text(response)}"
                    logger.error("%s", error)
            elif before or model in _known(client):
                logger.info("unloading %s: no wanted version can be served (ready before: %s)", model, sorted(before))
                response = client.post(f"/v2/repository/models/{model}/unload", json={})
                if response.status_code != 200:
                    error = f"model '{model}' failed to unload: {triton_error_text(response)}"
                    logger.error("%s", error)

            after = _ready(client, model)
            dropped = before - set(manifests) if error is None else set()
            deadline = time.monotonic() + unload_timeout_s
            while after & dropped and time.monotonic() < deadline:
                time.sleep(_POLL_S)
                after = _ready(client, model)
    except httpx.TransportError as exc:
        raise TritonUnavailableError(f"tritonserver at {http_url} did not answer during the version sync: {exc}") from exc

    loaded = frozenset(wanted & after)
    for version in sorted(set(manifests) - after):
        problems.setdefault(version, "not READY after the load" + (f" ({error})" if error else ""))
    result = VersionSyncResult(
        loaded=loaded,
        missing=frozenset(wanted - loaded),
        unloaded=frozenset(before - after - wanted),
        problems=problems,
        error=error,
    )
    logger.info(
        "version sync of %s: loaded %s, missing %s, unloaded %s",
        model, sorted(result.loaded), sorted(result.missing), sorted(result.unloaded),
    )
    return result


def _known(client: httpx.Client) -> set[str]:
    response = client.post("/v2/repository/index", json={})
    if response.status_code != 200:
        return set()
    return {str(entry.get("name")) for entry in response.json() if entry.get("state") not in (None, "", "UNAVAILABLE")}


