"""serving.version_sync against the REAL tritonserver: versions follow the wanted set without a restart.

One server for the module. Version 1 of the model is a "slow" policy whose forward pass spins for as many
iterations as the first feature of the first row asks, so a test can keep a request in flight on it
while the sync drops it; versions 2 and 3 are ordinary tiny policies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.config import TritonConfig
from serving.client import PolicyClient
from serving.errors import InferenceError
from serving.model_repository import export_policy
from serving.testing import SignedPolicy, make_signed_policy
from serving.triton_process import TritonServer, pick_free_ports
from serving.version_sync import VersionSyncResult, ready_versions, sync_versions

pytestmark = pytest.mark.integration

MODEL = "symbol_agent"
D, A = 16, 5


class SlowPolicy(torch.nn.Module):
    """Like TinyPolicy, but spins int(observations[0, 0]) iterations first (the answer does not depend on it)."""

    def __init__(self, features: int, actions: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(features, actions)
        self.mix = torch.nn.Parameter(torch.eye(128) * 0.5)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        work = int(observations[0, 0].item())
        h = torch.ones(1, 128)
        for _ in range(work):
            h = torch.tanh(h @ self.mix)
        logits = self.linear(observations) + 0.0 * h.sum()
        probabilities = torch.softmax(logits, dim=-1)
        return probabilities, torch.argmax(probabilities, dim=-1)


@dataclass
class Repo:
    server: TritonServer
    repository: Path
    public_key: Path
    triton: TritonConfig
    policies: dict[int, SignedPolicy]
    sync_seconds: list[float] = field(default_factory=list)

    def sync(self, versions: set[int]) -> VersionSyncResult:
        started = time.monotonic()
        result = sync_versions(self.server.http_url, self.repository, MODEL, versions, self.public_key, self.triton)
        self.sync_seconds.append(time.monotonic() - started)
        return result

    def ready(self) -> set[int]:
        return ready_versions(self.server.http_url, MODEL)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = tmp_path_factory.mktemp("version_sync")
    key = Ed25519PrivateKey.generate()
    repository = root / "repository"
    triton = TritonConfig(max_batch_size=64)
    policies: dict[int, SignedPolicy] = {}
    for version in (1, 2, 3):
        module = None
        if version == 1:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1)
                module = SlowPolicy(D, A)
        policies[version] = make_signed_policy(
            root / f"v{version}", key, features=D, actions=A, version=str(version), seed=version, module=module
        )
        export_policy(repository, MODEL, version, policies[version].artifact, policies[version].public_key_path, triton)
    http, grpc, metrics = pick_free_ports(3)
    with TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics, workdir=root / "work") as server:
        yield Repo(server, repository, policies[1].public_key_path, triton, policies)


def _batch(seed: int, work: int = 0) -> np.ndarray:
    batch = np.random.default_rng(seed).normal(size=(4, D)).astype(np.float32)
    batch[0, 0] = work
    return batch


class PinnedTraffic:
    """A thread sending requests pinned to one version back to back; records every success and failure."""

    def __init__(self, repo: Repo, version: int) -> None:
        self.repo, self.version = repo, version
        self.ok = 0
        self.failures: list[str] = []
        self.mismatches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        batch = _batch(seed=5)
        with torch.inference_mode():
            self.batch, self.expected = batch, repo.policies[version].module(torch.from_numpy(batch))[0].numpy()

    def _run(self) -> None:
        with PolicyClient(self.repo.server.grpc_url, MODEL, model_version=str(self.version), timeout_s=30) as client:
            while not self._stop.is_set():
                try:
                    output = client.infer(self.batch)
                except InferenceError as exc:
                    self.failures.append(str(exc))
                    continue
                self.ok += 1
                if not np.allclose(output.probabilities, self.expected, rtol=1e-5, atol=1e-6):
                    self.mismatches += 1

    def wait_for(self, requests: int, timeout_s: float = 30) -> None:
        target = self.ok + requests
        deadline = time.monotonic() + timeout_s
        while self.ok < target and not self.failures:
            assert time.monotonic() < deadline, f"only {self.ok} requests answered in {timeout_s}s"
            time.sleep(0.01)

    def __enter__(self) -> PinnedTraffic:
        self._thread.start()
        self.wait_for(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_sync_when_versions_1_and_2_wanted_then_both_ready_and_3_not(repo: Repo) -> None:
    result = repo.sync({1, 2})
    assert result.loaded == {1, 2} and not result.missing and result.ok
    assert repo.ready() == {1, 2}
    assert repo.server.is_model_ready(MODEL, 1) and repo.server.is_model_ready(MODEL, 2)
    assert not repo.server.is_model_ready(MODEL, 3)


def test_sync_when_wanted_moves_to_2_3_then_1_unloaded_3_ready_same_pid_and_pinned_v2_traffic_never_fails(
    repo: Repo,
) -> None:
    repo.sync({2})
    assert repo.ready() == {2}
    pid = repo.server.pid
    with PinnedTraffic(repo, version=2) as traffic:
        first = repo.sync({1, 2})
        traffic.wait_for(5)
        during_first = traffic.ok
        second = repo.sync({2, 3})
        traffic.wait_for(5)
    assert first.loaded == {1, 2} and first.unloaded == frozenset()
    assert second.loaded == {2, 3} and second.unloaded == {1} and not second.missing
    assert repo.ready() == {2, 3}
    assert repo.server.pid == pid and repo.server.is_running()
    assert traffic.failures == [], traffic.failures[:3]
    assert traffic.mismatches == 0
    assert during_first > 5 and traffic.ok > during_first


def test_sync_when_dropped_version_has_request_in_flight_then_it_completes_and_later_requests_are_refused(
    repo: Repo,
) -> None:
    repo.sync({1, 2})
    assert repo.ready() == {1, 2}
    # How long one spin takes on this host, so the request outlasts the next sync with room to spare: the fastest
    # of three (TorchScript optimises after its first runs, and a busy host slows any one of them; a per-spin time
    # too long plans a request that ends before the sync does).
    with PolicyClient(repo.server.grpc_url, MODEL, model_version="1", timeout_s=120) as client:
        spins = []
        for _ in range(3):
            started = time.monotonic()
            client.infer(_batch(seed=6, work=20_000))
            spins.append(time.monotonic() - started)
        per_spin = max(min(spins), 1e-3) / 20_000
    target_s = max(10.0, 3.0 * max(repo.sync_seconds))
    work = int(target_s / per_spin)
    outcomes: dict[str, object] = {}

    def request(name: str, work: int) -> None:
        with PolicyClient(repo.server.grpc_url, MODEL, model_version="1", timeout_s=600) as slow:
            try:
                outcomes[name] = slow.infer(_batch(seed=7, work=work))
            except InferenceError as exc:
                outcomes[name] = exc

    # A spins; a light request B queued behind it on the one instance (seen pending in Triton) proves A is
    # executing there. A B that got in first simply finishes; another is sent until one queues.
    threads = {"A": threading.Thread(target=request, args=("A", work), daemon=True)}
    threads["A"].start()
    deadline = time.monotonic() + 60
    while _pending(repo, version=1) < 1:
        assert time.monotonic() < deadline and threads["A"].is_alive(), f"requests never queued in Triton: {outcomes}"
        if not any(t.is_alive() for name, t in threads.items() if name != "A"):
            name = f"B{len(threads)}"
            threads[name] = threading.Thread(target=request, args=(name, 0), daemon=True)
            threads[name].start()
        time.sleep(0.02)
    last_b = list(threads)[-1]
    result = repo.sync({2, 3})
    in_flight_after_sync = [name for name in ("A", last_b) if threads[name].is_alive()]
    assert result.unloaded == {1} and result.loaded == {2, 3}
    assert not repo.server.is_model_ready(MODEL, 1)
    with PolicyClient(repo.server.grpc_url, MODEL, model_version="1") as late:
        with pytest.raises(InferenceError, match=r"version 1 is not at ready state|not found|unknown model"):
            late.infer(_batch(seed=8))
    for thread in threads.values():
        thread.join(timeout=600)
    assert in_flight_after_sync == ["A", last_b], (
        f"inconclusive: the requests ({target_s:.0f}s planned) ended before the sync did "
        f"({repo.sync_seconds[-1]:.1f}s): {outcomes}"
    )
    for name, output in outcomes.items():
        assert not isinstance(output, Exception), f"request {name} in flight on the dropped version failed: {output}"
        np.testing.assert_allclose(output.probabilities.sum(axis=1), 1.0, rtol=1e-5)  # type: ignore[attr-defined]
    assert set(outcomes) == set(threads)


def _pending(repo: Repo, version: int) -> int:
    """Requests of `version` queued in Triton, waiting for its instance (nv_inference_pending_request_count)."""
    for line in httpx.get(repo.server.metrics_url, timeout=5).text.splitlines():
        if line.startswith("nv_inference_pending_request_count") and f'version="{version}"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def test_sync_when_a_wanted_version_is_not_exported_then_it_is_missing_and_the_rest_served(repo: Repo) -> None:
    result = repo.sync({2, 9})
    assert result.loaded == {2} and result.missing == {9} and not result.ok
    assert "not exported" in result.problems[9]
    assert repo.ready() == {2}
    pid, log_size = repo.server.pid, repo.server.log_path.stat().st_size
    again = repo.sync({2})  # already served exactly: nothing sent, nothing reloaded
    assert again.loaded == {2} and again.ok and repo.server.pid == pid
    assert "loading: symbol_agent" not in repo.server.log_path.read_text()[log_size:]


def test_sync_when_nothing_wanted_then_model_unloaded_and_can_be_loaded_again(repo: Repo) -> None:
    repo.sync({2})
    result = repo.sync(set())
    assert result.loaded == frozenset() and result.unloaded == {2}
    deadline = time.monotonic() + 60
    while repo.server.is_model_ready(MODEL):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert repo.ready() == set()
    assert repo.sync({3}).loaded == {3}
