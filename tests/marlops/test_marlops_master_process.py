"""`marlops master` as its own process: snapshots from Redis -> directives on Redis, read by a real gateway.

The Triton call is the one thing injected (a deterministic callable at run_master's `infer`): the CLI
path builds a PolicyClient, which needs a Triton server. Redis is the machine's (channels unique per
test); the gateway and the paper exchange are real, served by uvicorn in threads."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from polling import wait_for
from redis_server import REDIS_URL

from contracts.config import LoopConfig, RiskOverlaysConfig
from contracts.decisions import MarketSnapshotMessage, MasterDirective
from contracts.features import (
    MASTER_FEATURES,
    MASTER_MARKET_FEATURES,
    SYMBOL_FEATURES,
    FeatureBlock,
    FeatureSpec,
    SLModelParams,
)
from contracts.policy import DIRECTIVE_MODES
from gateway.app import create_app
from paper_exchange.app import create_paper_exchange_app
from gateway.serve import ServerHandle, free_port, serve_app_in_thread
from gateway.settings import ApiToken, GatewaySettings
from gateway.token_file import read_token_file
from gateway.tokens import hash_token
from marlops.gateway_client import GatewayClient
from marlops.master_process import (
    MasterModel,
    MasterProcessError,
    MasterSnapshotHandler,
    MasterVersionFollower,
    load_master_model,
    run_master,
)
from marlops.routing import PolicyRef, RoutingChange
from marlops.routing_store import RoutingStore
from marlops.trading import TradingMetrics
from registry.verification import sign_artifact
from serving.client import PolicyOutput
from serving.directive_bus import InProcessDirectiveBus, RedisDirectiveBus
from serving.snapshot_bus import SnapshotBus, snapshot_message
from serving.testing import write_public_key

T0 = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
HIGH_VOL = MASTER_FEATURES.index("regime_high_vol")
_WAIT_S = 10.0


def make_spec() -> FeatureSpec:
    def block(names: tuple[str, ...]) -> FeatureBlock:
        return FeatureBlock(names=names, means=(0.0,) * len(names), stds=(1.0,) * len(names))

    return FeatureSpec(symbol=block(SYMBOL_FEATURES), master=block(MASTER_FEATURES),
                       sl_model=SLModelParams(feature_names=("ret_1",), means=(0.0,), stds=(1.0,), coef=(0.5,),
                                              intercept=0.0))


SPEC = make_spec()


def export_signed_master(repository: Path, version: int, spec: FeatureSpec, key: Ed25519PrivateKey,
                         **manifest: Any) -> Path:
    """`<repository>/master_agent/<version>/` as an export leaves it: model.ptc and its SIGNED manifest (with the
    feature spec); the trusted public key is written to `<repository>/trusted.pub.pem`, which is returned."""
    folder = repository / "master_agent" / str(version)
    folder.mkdir(parents=True)
    (folder / "model.ptc").write_bytes(f"master artifact v{version}".encode())
    body = {"agent": "master_agent", "version": str(version), "feature_spec_hash": spec.spec_hash(),
            "feature_spec": json.loads(spec.canonical_json()), **manifest}
    sign_artifact(folder / "model.ptc", {k: v for k, v in body.items() if v is not None}, key)
    return write_public_key(key, repository / "trusted.pub.pem")


class RegimePolicy:
    """Stands in for Triton's master_agent: defensive in a high-volatility regime, else normal."""

    def __init__(self) -> None:
        self.observations: list[np.ndarray] = []

    def __call__(self, observation: np.ndarray) -> PolicyOutput:
        self.observations.append(observation)
        action = DIRECTIVE_MODES.index("defensive" if observation[0, HIGH_VOL] > 0.5 else "normal")
        probabilities = np.zeros((1, len(DIRECTIVE_MODES)), dtype=np.float32)
        probabilities[0, action] = 1.0
        return PolicyOutput(probabilities=probabilities, actions=np.array([action], dtype=np.int64))


def snapshot(bar_index: int, *, high_vol: bool = False, regime_shift: bool = False, spec_hash: str | None = None,
             at: datetime | None = None) -> MarketSnapshotMessage:
    features = {name: 0.0 for name in MASTER_MARKET_FEATURES}
    features["regime_high_vol"] = 1.0 if high_vol else 0.0
    return snapshot_message(timestamp=at or T0 + timedelta(days=bar_index), bar_index=bar_index,
                            master_features=features, regime_shift=regime_shift,
                            feature_spec_hash=SPEC.spec_hash() if spec_hash is None else spec_hash)


@pytest.fixture
def channels(machine_redis: str, request: pytest.FixtureRequest) -> dict[str, str]:
    suffix = f"{os.getpid()}-{request.node.name}"
    return {"snapshots": f"test-market-snapshots-{suffix}", "directives": f"test-master-directives-{suffix}"}


@pytest.fixture
def gateway(tmp_path: Path, channels: dict[str, str]) -> Iterator[tuple[ServerHandle, Path]]:
    """A real gateway (paper exchange broker) subscribed to the test's directive channel; token file for a viewer."""
    exchange = serve_app_in_thread(create_paper_exchange_app(initial_cash=1_000_000.0))
    token = "marlops-test-viewer-token"
    token_file = tmp_path / "tokens" / "viewer.token"
    token_file.parent.mkdir()
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    settings = GatewaySettings(
        risk=RiskOverlaysConfig(), audit_url=f"sqlite:///{tmp_path / 'gateway' / 'audit.db'}",
        broker_base_url=exchange.url, fill_wait_s=0.2, reconcile_interval_s=0,
        api_tokens=(ApiToken(principal="master", role="viewer", token_sha256=hash_token(token)),),
        directive_bus_url=REDIS_URL, directive_channel=channels["directives"],
    )
    handle = serve_app_in_thread(create_app(settings))
    yield handle, token_file
    handle.stop()
    exchange.stop()


@pytest.fixture
def master(channels: dict[str, str], gateway: tuple[ServerHandle, Path]) -> Iterator[dict[str, Any]]:
    """run_master in a thread, reading the portfolio from the real gateway with the token file's token."""
    handle, token_file = gateway
    client = GatewayClient(handle.url, token=read_token_file(token_file), timeout_s=5)
    policy = RegimePolicy()
    stop, ready = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def _run() -> None:
        result["summary"] = run_master(
            redis_url=REDIS_URL, infer=policy, spec=SPEC, portfolio=client.portfolio, risk=RiskOverlaysConfig(),
            loop=LoopConfig(master_every_bars=5, directive_ttl_bars=10, bar_seconds=86400),
            policy_version="master_agent/7", snapshot_channel=channels["snapshots"],
            directive_channel=channels["directives"], stop=stop, ready=ready, handle_signals=False,
        )

    thread = threading.Thread(target=_run, daemon=True)
    thread.start()
    assert ready.wait(_WAIT_S)
    yield {"policy": policy, "stop": stop, "thread": thread, "result": result}
    stop.set()
    thread.join(5)
    client.close()


@pytest.fixture
def directives(channels: dict[str, str]) -> Iterator[queue.Queue[tuple[MasterDirective, datetime | None]]]:
    inbox: queue.Queue[tuple[MasterDirective, datetime | None]] = queue.Queue()
    bus = RedisDirectiveBus(REDIS_URL, channels["directives"])
    bus.subscribe_published(lambda d, at: inbox.put((d, at)))
    yield inbox
    bus.close()


@pytest.fixture
def snapshots(channels: dict[str, str]) -> Iterator[SnapshotBus]:
    bus = SnapshotBus(REDIS_URL, channels["snapshots"])
    yield bus
    bus.close()


def test_run_master_when_snapshots_published_then_directives_on_schedule_and_regime_shift_reach_gateway(
    master: dict[str, Any], snapshots: SnapshotBus, gateway: tuple[ServerHandle, Path],
    directives: queue.Queue[tuple[MasterDirective, datetime | None]],
) -> None:
    for bar in range(7):
        snapshots.publish(snapshot(bar, high_vol=bar == 0, regime_shift=bar == 3))
    snapshots.publish(snapshot(10))
    got = [directives.get(timeout=_WAIT_S) for _ in range(4)]
    ids = [d.directive_id for d, _ in got]
    # Every 5 bars (0, 5, 10) and on the regime shift (3); bars 1, 2, 4 and 6 give nothing.
    assert ids == ["master-master_agent/7-bar0", "master-master_agent/7-bar3", "master-master_agent/7-bar5",
                   "master-master_agent/7-bar10"]
    assert [d.mode for d, _ in got] == ["defensive", "normal", "normal", "normal"]
    first, published_at = got[0]
    assert first.issued_at == T0 and first.ttl_seconds == 10 * 86400 and first.policy_version == "master_agent/7"
    assert first.defensive and published_at is not None
    assert directives.empty()
    # The observation: one row of the master features, the portfolio block from the gateway (flat book).
    observations = master["policy"].observations
    assert len(observations) == 4 and observations[0].shape == (1, len(MASTER_FEATURES))
    assert observations[0][0, -2:].tolist() == [0.0, 0.0]  # drawdown, gross exposure (z-scored with 0/1)
    # The gateway subscribed to the same channel applied them.
    handle, token_file = gateway
    client = GatewayClient(handle.url, token=read_token_file(token_file))
    try:
        wait_for(lambda: (client.state()["latest_directive"] or {}).get("directive_id") == ids[-1],
                 "the gateway to apply bar 10's directive")
        assert client.state()["latest_directive"]["mode"] == "normal"
    finally:
        client.close()

    master["stop"].set()
    master["thread"].join(5)
    assert not master["thread"].is_alive()
    summary = master["result"]["summary"]
    assert summary.snapshots == 8 and summary.directives == ids and summary.refused == 0 and summary.failed == 0


def test_snapshot_when_feature_spec_hash_differs_then_refused_with_logged_error_and_loop_goes_on(
    master: dict[str, Any], snapshots: SnapshotBus, directives: queue.Queue[tuple[MasterDirective, datetime | None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    snapshots.publish(snapshot(0, spec_hash="0" * 64))
    snapshots.publish(snapshot(5))
    directive, _ = directives.get(timeout=_WAIT_S)
    assert directive.directive_id == "master-master_agent/7-bar5"
    assert "snapshot of bar 0 refused: feature spec 000000000000 is not the master's" in caplog.text
    master["stop"].set()
    master["thread"].join(5)
    assert master["result"]["summary"].refused == 1 and master["thread"].is_alive() is False


def test_handler_when_every_seconds_then_acts_once_that_much_market_time_passed() -> None:
    bus = InProcessDirectiveBus()
    issued: list[MasterDirective] = []
    bus.subscribe(issued.append)
    handler = MasterSnapshotHandler(
        infer=RegimePolicy(), spec=SPEC, portfolio=lambda: {"drawdown": 0.05, "gross_exposure": 0.8}, bus=bus,
        risk=RiskOverlaysConfig(), loop=LoopConfig(master_every_bars=5, bar_seconds=60),
        policy_version="master_agent/3", every_seconds=300,
    )
    minutes = [0, 2, 4, 6, 8, 10, 11, 12]  # irregular minute bars: 5 minutes of market time, not 5 bars
    for bar, minute in enumerate(minutes):
        handler.handle(snapshot(bar, at=T0 + timedelta(minutes=minute)))
    assert [d.directive_id for d in issued] == ["master-master_agent/3-bar0", "master-master_agent/3-bar3",
                                                "master-master_agent/3-bar6"]
    assert issued[0].ttl_seconds == 10 * 60
    # A re-sent (or late) snapshot of a handled bar is ignored, so its directive is not issued twice.
    handler.handle(snapshot(6, at=T0 + timedelta(minutes=11), regime_shift=True))
    assert len(issued) == 3 and handler.summary.refused == 1


def test_handler_when_gateway_unreachable_then_next_bar_retries_and_last_known_portfolio_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = InProcessDirectiveBus()
    issued: list[MasterDirective] = []
    bus.subscribe(issued.append)
    answers: list[Any] = [httpx.ConnectError("gateway down"), {"drawdown": 0.1, "gross_exposure": 0.5},
                          httpx.ConnectError("gateway down")]

    def portfolio() -> dict[str, float]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    handler = MasterSnapshotHandler(infer=RegimePolicy(), spec=SPEC, portfolio=portfolio, bus=bus,
                                    risk=RiskOverlaysConfig(), loop=LoopConfig(master_every_bars=5),
                                    policy_version="master_agent/3")
    for bar in (0, 1, 2, 5):
        handler.handle(snapshot(bar))
    # Bar 0 was due but the gateway never answered yet: bar 1 acts in its place; bar 5 reuses bar 1's portfolio.
    assert [d.directive_id for d in issued] == ["master-master_agent/3-bar1", "master-master_agent/3-bar5"]
    assert answers == []
    assert handler.summary.failed == 1 and "gateway portfolio unavailable and none known yet" in caplog.text
    assert "using the last known drawdown 0.100, gross 0.500" in caplog.text


def test_load_master_model_when_versions_exported_then_highest_and_its_spec_unless_pinned(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    other = SPEC.model_copy(update={"clip": 4.0})
    for version, spec in ((2, other), (7, SPEC)):
        public_key = export_signed_master(tmp_path, version, spec, key)
    latest = load_master_model(tmp_path, public_key_path=public_key)
    assert (latest.version, latest.spec, latest.policy_version) == (7, SPEC, "master_agent/7")
    assert load_master_model(tmp_path, 2, public_key_path=lambda: public_key).spec == other
    with pytest.raises(MasterProcessError, match=r"version 5 not exported; versions are \[2, 7\]"):
        load_master_model(tmp_path, 5, public_key_path=public_key)
    with pytest.raises(MasterProcessError, match="no exported master_agent version"):
        load_master_model(tmp_path / "empty", public_key_path=public_key)


def test_load_master_model_when_manifest_tampered_or_unsigned_then_refused_with_clear_error(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    public_key = export_signed_master(tmp_path, 7, SPEC, key)
    manifest_path = tmp_path / "master_agent" / "7" / "model.manifest.json"
    # Tampered: the feature spec swapped for another one (hash updated too), signature left as it was.
    tampered = json.loads(manifest_path.read_text())
    other = SPEC.model_copy(update={"clip": 4.0})
    tampered["feature_spec"], tampered["feature_spec_hash"] = json.loads(other.canonical_json()), other.spec_hash()
    manifest_path.write_text(json.dumps(tampered))
    with pytest.raises(MasterProcessError, match=r"master_agent/7: refused, its signed manifest cannot be trusted"):
        load_master_model(tmp_path, public_key_path=public_key)
    # Signed by another key than the trusted one.
    rogue = tmp_path / "rogue"
    export_signed_master(rogue, 7, SPEC, Ed25519PrivateKey.generate())
    with pytest.raises(MasterProcessError, match="does not verify"):
        load_master_model(rogue, public_key_path=public_key)
    # Validly signed, but without a feature spec.
    bare = tmp_path / "bare"
    bare_key = export_signed_master(bare, 3, SPEC, key, feature_spec=None)
    with pytest.raises(MasterProcessError, match="carries no feature_spec"):
        load_master_model(bare, public_key_path=bare_key)


class FakePolicyClient:
    """What the follower's client factory hands out in place of a PolicyClient to Triton."""

    def __init__(self, model: MasterModel) -> None:
        self.model = model
        self.policy = RegimePolicy()
        self.closed = False

    def infer(self, observation: np.ndarray) -> PolicyOutput:
        return self.policy(observation)

    def close(self) -> None:
        self.closed = True


def test_run_master_when_routing_master_slot_changes_then_next_directive_comes_from_the_new_version(
    tmp_path: Path, channels: dict[str, str], snapshots: SnapshotBus,
    directives: queue.Queue[tuple[MasterDirective, datetime | None]], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    key = Ed25519PrivateKey.generate()
    repository = tmp_path / "repository"
    for version in (7, 8):
        public_key = export_signed_master(repository, version, SPEC, key)
    # Version 9 is routed later but its manifest was tampered with: refused, version 8 keeps acting.
    export_signed_master(repository, 9, SPEC, key)
    manifest_9 = repository / "master_agent" / "9" / "model.manifest.json"
    manifest_9.write_text(manifest_9.read_text().replace('"clip":', '"clip": 9.0, "_was":'))
    store = RoutingStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.apply(RoutingChange(policies={"master": PolicyRef("master_agent", 7)}), principal="rita", reason="go")
    current = load_master_model(repository, 7, public_key_path=public_key)
    clients: list[FakePolicyClient] = [FakePolicyClient(current)]

    def open_client(model: MasterModel) -> FakePolicyClient:
        clients.append(FakePolicyClient(model))
        return clients[-1]

    follower = MasterVersionFollower(store, model_repository=repository, model_name="master_agent",
                                     public_key_path=public_key, current=current, client_factory=open_client,
                                     current_client=clients[0])
    stop, ready = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def _run() -> None:
        result["summary"] = run_master(
            redis_url=REDIS_URL, infer=clients[0].infer, spec=current.spec,
            portfolio=lambda: {"drawdown": 0.0, "gross_exposure": 0.0}, risk=RiskOverlaysConfig(),
            loop=LoopConfig(master_every_bars=5, directive_ttl_bars=10, bar_seconds=86400),
            policy_version=current.policy_version, snapshot_channel=channels["snapshots"],
            directive_channel=channels["directives"], stop=stop, ready=ready, handle_signals=False, follow=follower,
        )

    thread = threading.Thread(target=_run, daemon=True)
    thread.start()
    try:
        assert ready.wait(_WAIT_S)
        snapshots.publish(snapshot(0))
        first, _ = directives.get(timeout=_WAIT_S)
        assert (first.directive_id, first.policy_version) == ("master-master_agent/7-bar0", "master_agent/7")

        store.apply(RoutingChange(policies={"master": PolicyRef("master_agent", 8)}), principal="rita",
                    reason="promote master v8")
        snapshots.publish(snapshot(3))  # not due: the schedule carried over (bar 0 acted), no directive
        snapshots.publish(snapshot(5))
        second, _ = directives.get(timeout=_WAIT_S)
        assert (second.directive_id, second.policy_version) == ("master-master_agent/8-bar5", "master_agent/8")
        assert [c.model.version for c in clients] == [7, 8] and clients[0].closed and not clients[1].closed
        assert len(clients[0].policy.observations) == 1 and len(clients[1].policy.observations) == 1
        assert "switching from master_agent/7 to master_agent/8" in caplog.text

        store.apply(RoutingChange(policies={"master": PolicyRef("master_agent", 9)}), principal="rita",
                    reason="promote master v9")
        snapshots.publish(snapshot(10))
        third, _ = directives.get(timeout=_WAIT_S)
        assert third.directive_id == "master-master_agent/8-bar10"
        assert "cannot switch to master_agent/9" in caplog.text and "does not verify" in caplog.text
        assert len(clients) == 2
    finally:
        stop.set()
        thread.join(5)
        follower.close()
        store.close()
    assert not thread.is_alive() and clients[1].closed
    summary = result["summary"]
    assert summary.snapshots == 4 and summary.directives == [
        "master-master_agent/7-bar0", "master-master_agent/8-bar5", "master-master_agent/8-bar10"]
    assert directives.empty()


def test_master_follower_when_slot_unset_or_names_the_version_in_use_then_no_switch(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    public_key = export_signed_master(tmp_path, 4, SPEC, key)
    store = RoutingStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        current = load_master_model(tmp_path, 4, public_key_path=public_key)
        follower = MasterVersionFollower(store, model_repository=tmp_path, model_name="master_agent",
                                         public_key_path=public_key, current=current,
                                         client_factory=FakePolicyClient)
        assert follower() is None  # no master slot at all: keeps version 4
        store.apply(RoutingChange(policies={"master": PolicyRef("master_agent", 4)}), principal="rita", reason="r")
        assert follower() is None  # the slot names the version in use
        assert follower() is None and follower.current.version == 4
    finally:
        store.close()


_SUBPROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    from contracts.config import LoopConfig, RiskOverlaysConfig
    from contracts.features import FeatureSpec
    from marlops.master_process import run_master
    from serving.client import PolicyOutput

    SPEC = FeatureSpec.model_validate_json(sys.argv[4])

    def infer(observation):
        return PolicyOutput(np.array([[1.0, 0.0, 0.0]], dtype=np.float32), np.array([0]))

    summary = run_master(redis_url=sys.argv[1], infer=infer, spec=SPEC,
                         portfolio=lambda: {"drawdown": 0.0, "gross_exposure": 0.0},
                         risk=RiskOverlaysConfig(), loop=LoopConfig(), policy_version="master_agent/1",
                         snapshot_channel=sys.argv[2], directive_channel=sys.argv[3])
    print("exited cleanly after", summary.snapshots, "snapshot(s)")
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_master_when_signalled_then_exits_0_promptly(channels: dict[str, str], signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SUBPROCESS, REDIS_URL, channels["snapshots"], channels["directives"],
         SPEC.canonical_json()],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[2],
    )
    client = redis.Redis.from_url(REDIS_URL)
    try:
        wait_for(lambda: client.pubsub_numsub(channels["snapshots"])[0][1] == 1 or proc.poll() is not None,
                 "the master to subscribe", timeout_s=60)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signum)
        # a master that ignored the signal would still be polling its inbox: communicate() raises
        # TimeoutExpired (no wall-clock assertion: under a loaded CI the clean shutdown itself takes seconds)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "exited cleanly after 0 snapshot(s)" in output
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_master_command_when_no_version_exported_then_clear_error(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from marlops.master_process import add_master_parser

    parser = argparse.ArgumentParser()
    parser.add_argument("--config-dir", default=str(Path(__file__).parents[2] / "config" / "rl"))
    add_master_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["master", "--version", "3", "--every-seconds", "300", "--redis-url", REDIS_URL,
                              "--model-repository", str(tmp_path / "empty_repository")])
    assert (args.version, args.every_seconds, args.snapshot_channel) == (3, 300.0, "market-snapshots")
    monkeypatch.setenv("MARLOPS_HOME", str(tmp_path / "home"))
    with pytest.raises(MasterProcessError, match="no exported master_agent version"):
        args.func(args)


_COMMAND = textwrap.dedent("""
    import argparse
    import sys
    from pathlib import Path

    import numpy as np

    from contracts.config import load_rl_config
    from marlops.master_process import _run_master_command, add_master_parser
    from serving.client import PolicyOutput

    class Client:  # stands in for Triton's PolicyClient: always the first mode
        def __init__(self, *args, **kwargs):
            pass

        def infer(self, observation):
            return PolicyOutput(np.array([[1.0, 0.0, 0.0]], dtype=np.float32), np.array([0]))

        def close(self):
            pass

    class Gateway:
        def __init__(self, *args, **kwargs):
            pass

        def portfolio(self):
            return {"drawdown": 0.0, "gross_exposure": 0.0}

        def close(self):
            pass

    parser = argparse.ArgumentParser()
    parser.add_argument("--config-dir")
    add_master_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(sys.argv[1:])
    repository = args.model_repository
    sys.exit(_run_master_command(args, load_rl_config(Path(args.config_dir)), None, repository, None,
                                 lambda path: "token", Gateway, None, lambda: repository / "trusted.pub.pem", Client))
""")


def _scrape(url: str) -> str | None:
    try:
        answer = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return answer.text if answer.status_code == 200 else None


def _buckets(text: str) -> set[str]:
    return {line.split('le="', 1)[1].split('"', 1)[0] for line in text.splitlines()
            if line.startswith("marlops_trading_inference_seconds_bucket{")}


def test_master_command_when_metrics_port_given_then_serves_inference_latency_and_directives(
        tmp_path: Path, channels: dict[str, str]) -> None:
    repository = tmp_path / "repository"
    export_signed_master(repository, 1, SPEC, Ed25519PrivateKey.generate())
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    argv = ["--config-dir", str(Path(__file__).parents[2] / "config" / "rl"), "master", "--version", "1",
            "--redis-url", REDIS_URL, "--model-repository", str(repository), "--gateway-token-file", "unused",
            "--snapshot-channel", channels["snapshots"], "--directive-channel", channels["directives"],
            "--every-bars", "1", "--metrics-port", str(port)]
    proc = subprocess.Popen([sys.executable, "-c", _COMMAND, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[2])
    client = redis.Redis.from_url(REDIS_URL)
    bus = SnapshotBus(REDIS_URL, channels["snapshots"])
    try:
        wait_for(lambda: proc.poll() is not None or (client.pubsub_numsub(channels["snapshots"])[0][1] == 1
                                                     and _scrape(url) is not None),
                 "the master to subscribe and serve /metrics", timeout_s=60)
        assert proc.poll() is None, proc.communicate()[0]
        for bar in range(3):
            bus.publish(snapshot(bar))
        wait_for(lambda: 'marlops_master_directives_published_total{mode="normal"} 3.0' in (_scrape(url) or ""),
                 "three directives counted in the master's /metrics")
        text = _scrape(url) or ""
        assert 'marlops_trading_inference_seconds_count{model="master_agent",version="1"} 3.0' in text
        # The trading service's histogram, the same buckets (the 0.4 s one MasterAgentLatencyHigh reads).
        trading = TradingMetrics()
        trading.inference.labels("master_agent", "1").observe(0.01)
        from prometheus_client import generate_latest
        assert _buckets(text) == _buckets(generate_latest(trading.registry).decode()) and "0.4" in _buckets(text)

        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, output
        assert _scrape(url) is None
    finally:
        bus.close()
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_master_parser_when_no_metrics_port_then_metrics_off() -> None:
    import argparse

    from marlops.master_process import add_master_parser

    parser = argparse.ArgumentParser()
    add_master_parser(parser.add_subparsers(dest="command"))

    assert parser.parse_args(["master"]).metrics_port is None
    assert parser.parse_args(["master", "--metrics-port", "9102"]).metrics_port == 9102
