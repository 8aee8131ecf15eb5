"""`marlops master`: the master agent service as its own process.

    market-snapshots (Redis) ─► schedule ─► master observation ─► Triton `master_agent` (pinned version)
        ─► MasterDirective (preset of the chosen mode) ─► master-directives (Redis) ─► gateway(s)

The trading service publishes one `MarketSnapshotMessage` per bar (`serving.snapshot_bus.SnapshotBus.
publish_snapshot`). The master acts on a snapshot when

  * `regime_shift` is set, or
  * the bar is on the schedule: `bar_index % every_bars == 0` (`loop.master_every_bars`, K bars), or,
    with `every_seconds` (e.g. 300 for "every 5 minutes of market time" on minute bars), when at least
    that much market time has passed since its last directive (the first snapshot always acts).

Its observation is `ObservationBuilder(spec).master_observation(master_row, drawdown, gross_exposure)`
with drawdown and gross exposure from the gateway's `GET /v1/portfolio`; the directive's id is
`directive_id_for("master_agent/<version>", bar_index)`, so a re-sent snapshot gives the same id.
A snapshot whose `feature_spec_hash` is not the master's spec is refused (logged error), as is one at
or before the bar last handled. A failing inference, gateway read or publish is logged, and the next
snapshot acts in place of the failed one (a gateway that does not answer: its last known portfolio is
used). SIGTERM / SIGINT stop the loop within about `_POLL_S`.

Which version: `--version N` pins one. Otherwise the process follows the routing table's `master` slot
(`MasterVersionFollower`): before each snapshot it reads the table's revision (one row) and, when that
changed and the slot names another version, loads that version (its feature spec from the VERIFIED
signed artifact, `read_version_manifest`) and a PolicyClient for it, and swaps the handler; the schedule
carries over. A version that cannot be loaded yet is logged and tried again on the next snapshot, the
current one acting meanwhile.

Metrics: `--metrics-port N` (off by default; `make up` passes UpOptions.master_metrics_port, 9102) serves on
127.0.0.1:N/metrics the master's Triton requests in `marlops_trading_inference_seconds{model="master_agent",
version}` (the trading service's histogram, one definition: MasterAgentLatencyHigh reads both) and
`marlops_master_directives_published_total{mode}`; Prometheus scrapes it as job `marlops-master`.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, start_http_server
from pydantic import ValidationError

from contracts.config import LoopConfig, RiskOverlaysConfig
from contracts.decisions import MarketSnapshotMessage, MasterDirective
from contracts.features import FeatureSpec
from contracts.logs import correlation
from contracts.urls import redact_url
from features.errors import FeatureError
from features.observation import ObservationBuilder
from marlops.errors import MarlopsError
from marlops.master_cli import add_master_parser  # noqa: F401  (its home before master_cli)
from marlops.policy_router import read_version_manifest
from marlops.routing import PolicyRef
from marlops.routing_store import RoutingStore
from marlops.trading import inference_histogram, timed_inference
from serving.client import PolicyOutput
from serving.directive_bus import DirectiveBus, RedisDirectiveBus
from serving.errors import ServingError
from serving.master_service import MasterAgentService
from serving.model_repository import exported_versions
from serving.snapshot_bus import SNAPSHOT_CHANNEL, SnapshotBus

logger = logging.getLogger(__name__)

MASTER_MODEL = "master_agent"
_POLL_S = 0.2


class MasterProcessError(MarlopsError):
    """The master process cannot start: no model version, unreadable manifest, bad schedule."""


# ---- the model: version, feature spec -------------------------------------------------------------
@dataclass(frozen=True)
class MasterModel:
    version: int
    version_dir: Path
    spec: FeatureSpec

    @property
    def policy_version(self) -> str:
        """As the pipeline names it (`master_agent/<N>`): part of every directive id."""
        return f"{MASTER_MODEL}/{self.version}"


def load_master_model(model_repository: Path, version: int | None = None, model_name: str = MASTER_MODEL, *,
                      public_key_path: Path | Callable[[], Path]) -> MasterModel:
    """The exported master version (`version`, or the highest one in `<repository>/<model_name>/`) and the
    FeatureSpec signed into it: the artifact's signature is verified with `public_key_path` (a path, or a
    callable giving it, resolved only once a version exists) before its manifest is trusted, and the spec
    must hash to the manifest's `feature_spec_hash`."""
    repository = Path(model_repository)
    versions = exported_versions(repository, model_name)
    if not versions:
        raise MasterProcessError(f"{repository / model_name}: no exported {model_name} version "
                                 "(export one, or pass --model-repository)")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise MasterProcessError(f"{repository / model_name}: version {chosen} not exported; versions are {versions}")
    version_dir = repository / model_name / str(chosen)
    key = public_key_path() if callable(public_key_path) else Path(public_key_path)
    try:
        info = read_version_manifest(repository, PolicyRef(model_name, chosen), key)
    except ServingError as exc:
        raise MasterProcessError(f"{model_name}/{chosen}: refused, its signed manifest cannot be trusted "
                                 f"or read: {exc}") from exc
    except (ValidationError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0]
        raise MasterProcessError(f"{version_dir}: cannot read the feature spec ({reason})") from exc
    spec = info.spec
    signed = info.manifest.get("feature_spec_hash")
    if signed is not None and signed != spec.spec_hash():
        raise MasterProcessError(f"{version_dir}: feature_spec hashes to {spec.spec_hash()[:12]}, the manifest "
                                 f"says {str(signed)[:12]}")
    return MasterModel(version=chosen, version_dir=version_dir, spec=spec)


# ---- the schedule ---------------------------------------------------------------------------------
class MasterSchedule:
    """When the master acts: on a regime shift, else every `every_bars` bars, or (with `every_seconds`)
    once `every_seconds` of market time have passed since its last directive."""

    def __init__(self, every_bars: int, every_seconds: float | None = None) -> None:
        if every_bars < 1:
            raise MasterProcessError(f"every_bars must be >= 1, got {every_bars}")
        if every_seconds is not None and every_seconds <= 0:
            raise MasterProcessError(f"every_seconds must be > 0, got {every_seconds}")
        self.every_bars = every_bars
        self.every_seconds = every_seconds
        self._last_acted: pd.Timestamp | None = None

    def due(self, snapshot: MarketSnapshotMessage) -> str | None:
        """Why the master acts on `snapshot` ("regime shift", "schedule"), or None."""
        if snapshot.regime_shift:
            return "regime shift"
        if self.every_seconds is not None:
            if self._last_acted is None:
                return "schedule (first snapshot)"
            elapsed = (pd.Timestamp(snapshot.timestamp) - self._last_acted).total_seconds()
            return "schedule" if elapsed >= self.every_seconds else None
        return "schedule" if snapshot.bar_index % self.every_bars == 0 else None

    def acted(self, snapshot: MarketSnapshotMessage) -> None:
        self._last_acted = pd.Timestamp(snapshot.timestamp)


# ---- one snapshot ---------------------------------------------------------------------------------
@dataclass
class MasterRunSummary:
    snapshots: int = 0
    directives: list[str] = field(default_factory=list)
    refused: int = 0
    failed: int = 0


class MasterSnapshotHandler:
    """Turns each snapshot into a published directive when due (no threads, no Redis: the loop feeds it)."""

    def __init__(
        self,
        *,
        infer: Callable[[np.ndarray], PolicyOutput],
        spec: FeatureSpec,
        portfolio: Callable[[], Mapping[str, Any]],
        bus: DirectiveBus,
        risk: RiskOverlaysConfig,
        loop: LoopConfig,
        policy_version: str,
        every_bars: int | None = None,
        every_seconds: float | None = None,
    ) -> None:
        self._builder = ObservationBuilder(spec)
        self.policy_version = policy_version
        self.spec_hash = self._builder.spec_hash
        self._portfolio = portfolio
        self.schedule = MasterSchedule(every_bars or loop.master_every_bars,
                                       every_seconds if every_seconds is not None else loop.master_every_seconds)
        # every_bars=1: the service issues whenever asked; MasterSchedule decides when to ask.
        self._service = MasterAgentService(
            infer, bus, risk, every_bars=1,
            ttl_seconds=loop.directive_ttl_bars * loop.bar_seconds, policy_version=policy_version,
        )
        self._last_bar: int | None = None
        self._missed: int | None = None  # a due bar whose directive failed: the next snapshot tries again
        self._last_portfolio: tuple[float, float] | None = None
        self.summary = MasterRunSummary()

    def continue_from(self, previous: MasterSnapshotHandler) -> MasterSnapshotHandler:
        """Take over `previous`'s place (another master version): its schedule, last bar, pending retry,
        last known portfolio and running summary, so the cadence goes on as if nothing changed."""
        self.schedule = previous.schedule
        self._last_bar = previous._last_bar
        self._missed = previous._missed
        self._last_portfolio = previous._last_portfolio
        self.summary = previous.summary
        return self

    def handle(self, snapshot: MarketSnapshotMessage) -> MasterDirective | None:
        with correlation(bar=snapshot.timestamp):  # every line logged for this snapshot carries its bar's market time
            return self._handle(snapshot)

    def _handle(self, snapshot: MarketSnapshotMessage) -> MasterDirective | None:
        self.summary.snapshots += 1
        if snapshot.feature_spec_hash != self.spec_hash:
            self.summary.refused += 1
            logger.error("snapshot of bar %d refused: feature spec %s is not the master's %s (is the trading "
                         "service on another policy version?)", snapshot.bar_index,
                         snapshot.feature_spec_hash[:12] or "<none>", self.spec_hash[:12])
            return None
        if self._last_bar is not None and snapshot.bar_index <= self._last_bar:
            self.summary.refused += 1
            logger.warning("snapshot of bar %d ignored: bar %d was already handled", snapshot.bar_index,
                           self._last_bar)
            return None
        self._last_bar = snapshot.bar_index
        reason = self.schedule.due(snapshot)
        if reason is None and self._missed is not None:
            reason = f"retry: bar {self._missed} gave no directive"
        if reason is None:
            logger.debug("bar %d: no directive due", snapshot.bar_index)
            return None
        try:
            drawdown, gross = self._portfolio_now()
            observation = self._builder.master_observation(pd.Series(snapshot.master_features), drawdown, gross)
            directive = self._service.step(snapshot.timestamp, snapshot.bar_index, observation, snapshot.regime_shift)
        except (MarlopsError, ServingError, FeatureError, ValueError, KeyError, OSError) as exc:
            self.summary.failed += 1
            self._missed = snapshot.bar_index if self._missed is None else self._missed
            logger.error("bar %d (%s): no directive: %s: %s", snapshot.bar_index, reason, type(exc).__name__, exc)
            return None
        if directive is None:  # cannot happen with every_bars=1; kept for type narrowing
            return None
        self.schedule.acted(snapshot)
        self._missed = None
        self.summary.directives.append(directive.directive_id)
        logger.info("bar %d %s (%s): published %s directive %s (drawdown %.3f, gross %.3f)", snapshot.bar_index,
                    snapshot.timestamp.isoformat(), reason, directive.mode, directive.directive_id, drawdown, gross)
        return directive

    def _portfolio_now(self) -> tuple[float, float]:
        """(drawdown, gross exposure) from the gateway; its last known values when it does not answer now."""
        try:
            body = self._portfolio()
            values = (float(body["drawdown"]), float(body["gross_exposure"]))
        except Exception as exc:  # the gateway may be restarting: reuse what it said last, if anything
            if self._last_portfolio is None:
                raise MasterProcessError(f"gateway portfolio unavailable and none known yet: {exc}") from exc
            logger.warning("gateway portfolio unavailable (%s); using the last known drawdown %.3f, gross %.3f",
                           exc, *self._last_portfolio)
            return self._last_portfolio
        self._last_portfolio = values
        return values


# ---- following the routing table's master slot ----------------------------------------------------
@dataclass(frozen=True)
class MasterBinding:
    """What one master version acts with: its name in directive ids, its feature spec, its inference."""

    policy_version: str
    spec: FeatureSpec
    infer: Callable[[np.ndarray], PolicyOutput]


def _follow(follow: Callable[[], MasterBinding | None], handler: MasterSnapshotHandler,
            make_handler: Callable[[MasterBinding], MasterSnapshotHandler]) -> MasterSnapshotHandler:
    try:
        binding = follow()
    except Exception as exc:  # noqa: BLE001 - the follower must not stop the loop: the current version acts on
        logger.error("master: checking the routing table's master slot failed (%s: %s); keeping %s",
                     type(exc).__name__, exc, handler.policy_version)
        return handler
    if binding is None:
        return handler
    logger.warning("master: switching from %s to %s (routing table's master slot changed)",
                   handler.policy_version, binding.policy_version)
    return make_handler(binding).continue_from(handler)


class MasterVersionFollower:
    """Called before each snapshot: reads the routing table's revision (one row) and, when it changed and the
    `master` slot names another version than the one in use, loads that version (verified spec, a client
    from `client_factory`) and returns its `MasterBinding`; else None. The previous client is closed once the
    new one is handed out. A version that cannot be loaded is logged, and tried again on the next call."""

    def __init__(
        self,
        store: RoutingStore,
        *,
        model_repository: Path,
        model_name: str,
        public_key_path: Path | Callable[[], Path],
        current: MasterModel,
        client_factory: Callable[[MasterModel], Any],
        current_client: Any = None,
    ) -> None:
        self._store = store
        self._repository = Path(model_repository)
        self._model_name = model_name
        self._public_key_path = public_key_path
        self.current = current
        self._client_factory = client_factory
        self._client = current_client
        self._revision: int | None = None
        self._failed: tuple[int, str] | None = None  # (version, reason) last refused: logged once per reason
        try:
            self._revision = store.revision()
        except MarlopsError as exc:
            logger.warning("master: cannot read the routing revision (%s); will retry", exc)

    def __call__(self) -> MasterBinding | None:
        revision = self._store.revision()
        if revision == self._revision and self._failed is None:
            return None
        ref = self._store.read().policies.get("master")
        self._revision = revision
        if ref is None:
            logger.warning("master: the routing table (revision %d) has no master slot; keeping %s", revision,
                           self.current.policy_version)
            self._failed = None
            return None
        if ref.model != self._model_name:
            self._note_failure(ref.version, f"the master slot names model {ref.model}, this process serves "
                                            f"{self._model_name}")
            return None
        if ref.version == self.current.version:
            self._failed = None
            return None
        try:
            model = load_master_model(self._repository, ref.version, self._model_name,
                                      public_key_path=self._public_key_path)
            client = self._client_factory(model)
        except Exception as exc:  # noqa: BLE001 - not loadable yet (or ever): the current version acts on
            self._note_failure(ref.version, f"{type(exc).__name__}: {exc}")
            return None
        previous, self._client = self._client, client
        self.current, self._failed = model, None
        logger.info("master: routing revision %d: master slot is %s (spec %s)", revision, model.policy_version,
                    model.spec.spec_hash()[:12])
        if previous is not None:
            _close_quietly(previous)
        return MasterBinding(policy_version=model.policy_version, spec=model.spec, infer=client.infer)

    def _note_failure(self, version: int, reason: str) -> None:
        if self._failed != (version, reason):
            logger.error("master: cannot switch to %s/%d (%s); %s keeps acting, retrying on each snapshot",
                         self._model_name, version, reason, self.current.policy_version)
        self._failed = (version, reason)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)


def _close_quietly(client: Any) -> None:
    close = getattr(client, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:  # closing a stale client must not stop the master
        logger.exception("master: closing the previous policy client failed")


# ---- metrics --------------------------------------------------------------------------------------
class MasterMetrics:
    """What `marlops master --metrics-port` serves: its inference latency (the trading service's histogram
    definition, `marlops.trading.inference_histogram`) and the directives it published, by mode."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.inference = inference_histogram(self.registry)
        self.directives = Counter("marlops_master_directives_published_total",
                                  "Master directives published on the directive bus, by mode", ["mode"],
                                  registry=self.registry)

    def timed(self, policy_version: str, infer: Callable[[np.ndarray], PolicyOutput]
              ) -> Callable[[np.ndarray], PolicyOutput]:
        """`infer` observed in marlops_trading_inference_seconds{model, version} (`policy_version` is `<model>/<N>`)."""
        model, _, version = policy_version.rpartition("/")
        timed = timed_inference(self, PolicyRef(model or MASTER_MODEL, int(version)), infer)
        return timed  # type: ignore[return-value]  # same return as infer's


class _CountingBus:
    """The directive bus, counting each directive once its publish returned."""

    def __init__(self, bus: DirectiveBus, metrics: MasterMetrics) -> None:
        self._bus = bus
        self._metrics = metrics

    def publish(self, directive: MasterDirective) -> None:
        self._bus.publish(directive)
        self._metrics.directives.labels(directive.mode).inc()

    def subscribe(self, callback: Any) -> None:
        self._bus.subscribe(callback)

    def close(self) -> None:
        self._bus.close()


def serve_master_metrics(port: int, metrics: MasterMetrics, host: str = "127.0.0.1") -> Callable[[], None]:
    """GET http://<host>:<port>/metrics in a daemon thread; returns what stops it."""
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise MasterProcessError(f"master: cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    logger.info("master: metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


# ---- the loop -------------------------------------------------------------------------------------
@contextmanager
def _stop_on_signals(stop: threading.Event, enabled: bool) -> Iterator[None]:
    """SIGTERM / SIGINT set `stop` (main thread only); the previous handlers come back afterwards."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum: int, _frame: object) -> None:
        logger.info("master: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_master(
    *,
    redis_url: str,
    infer: Callable[[np.ndarray], PolicyOutput],
    spec: FeatureSpec,
    portfolio: Callable[[], Mapping[str, Any]],
    risk: RiskOverlaysConfig,
    loop: LoopConfig,
    policy_version: str,
    every_bars: int | None = None,
    every_seconds: float | None = None,
    snapshot_channel: str = SNAPSHOT_CHANNEL,
    directive_channel: str = "master-directives",
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    handle_signals: bool = True,
    follow: Callable[[], MasterBinding | None] | None = None,
    metrics: MasterMetrics | None = None,
) -> MasterRunSummary:
    """Consume snapshots from `snapshot_channel` and publish directives on `directive_channel` until `stop`
    is set (or SIGTERM / SIGINT arrive, when called on the main thread with `handle_signals`). `ready` is set
    once the snapshot subscription is confirmed. Raises DirectiveBusError when Redis is unreachable at start;
    later outages are reported and survived (both channels reconnect by themselves).

    `follow`, when given, is asked before each snapshot whether another master version should act now
    (e.g. a `MasterVersionFollower`): a `MasterBinding` it returns replaces the handler (the schedule and
    summary carry over); None keeps the current one. `metrics`, when given, times each inference and counts each
    published directive (`MasterMetrics`)."""
    stop = stop or threading.Event()
    directives = RedisDirectiveBus(redis_url, directive_channel)
    bus: DirectiveBus = directives if metrics is None else _CountingBus(directives, metrics)

    def make_handler(binding: MasterBinding) -> MasterSnapshotHandler:
        infer = binding.infer if metrics is None else metrics.timed(binding.policy_version, binding.infer)
        return MasterSnapshotHandler(
            infer=infer, spec=binding.spec, portfolio=portfolio, bus=bus, risk=risk, loop=loop,
            policy_version=binding.policy_version, every_bars=every_bars, every_seconds=every_seconds,
        )

    handler = make_handler(MasterBinding(policy_version=policy_version, spec=spec, infer=infer))
    inbox: queue.Queue[MarketSnapshotMessage] = queue.Queue()
    snapshots: SnapshotBus | None = None
    try:
        with _stop_on_signals(stop, handle_signals):
            snapshots = SnapshotBus(redis_url, snapshot_channel)
            snapshots.subscribe(inbox.put)
            cadence = (f"every {every_seconds:g}s of market time" if every_seconds is not None
                       else f"every {handler.schedule.every_bars} bar(s)")
            logger.info("master %s ready: snapshots from %s, directives to %s at %s, %s or on a regime shift",
                        policy_version, snapshot_channel, directive_channel, redact_url(redis_url), cadence)
            if ready is not None:
                ready.set()
            while not stop.is_set():
                try:
                    snapshot = inbox.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if follow is not None:
                    handler = _follow(follow, handler, make_handler)
                handler.handle(snapshot)
    finally:
        if snapshots is not None:
            snapshots.close()
        directives.close()
    summary = handler.summary
    logger.info("master stopped: %d snapshot(s), %d directive(s), %d refused, %d failed", summary.snapshots,
                len(summary.directives), summary.refused, summary.failed)
    return summary


# ---- the command (its parser: marlops/master_cli.py) ---------------------------------------------
def _routed_master_version(store: RoutingStore) -> int | None:
    """The master_agent version the routing table's `master` slot names (None: none routed)."""
    ref = store.read().policies.get("master")
    return None if ref is None else ref.version


def cmd_master(args: argparse.Namespace) -> int:
    from contracts.config import load_rl_config
    from gateway.token_file import read_token_file
    from marlops.gateway_client import GatewayClient
    from marlops.paths import StatePaths
    from marlops.settings import MarlopsSettings
    from marlops.trading_runtime import public_key_path
    from serving.client import PolicyClient

    config = load_rl_config(Path(args.config_dir))
    paths = StatePaths.from_env()
    serving = config.serving
    repository = args.model_repository or paths.model_repository(serving.triton.model_repository)
    pinned = args.version is not None
    store = None if pinned else RoutingStore(paths.state_url)
    try:
        return _run_master_command(args, config, paths, repository, store, read_token_file, GatewayClient,
                                   MarlopsSettings, lambda: public_key_path(paths), PolicyClient)
    finally:
        if store is not None:
            store.close()


def _run_master_command(args: argparse.Namespace, config: Any, paths: Any, repository: Path,
                        store: RoutingStore | None, read_token_file: Callable[[Path], str], gateway_client: Any,
                        settings: Any, public_key: Callable[[], Path], policy_client: Any) -> int:
    serving = config.serving
    model_name = serving.models.master_agent
    model = load_master_model(repository, args.version if store is None else _routed_master_version(store),
                              model_name, public_key_path=public_key)
    redis_url = args.redis_url or settings.load().directive_bus_url or serving.directive_bus.redis_url
    protocol = args.protocol or serving.triton.protocol
    port = serving.triton.grpc_port if protocol == "grpc" else serving.triton.http_port
    triton_url = args.triton_url or f"127.0.0.1:{port}"
    from gateway.token_file import read_local_token

    token = (read_token_file(args.gateway_token_file) if args.gateway_token_file
             else read_local_token(paths.tokens_dir, ("viewer", "trader")))
    gateway = gateway_client(args.gateway_url, timeout_s=5.0, token=token)

    def open_client(chosen: MasterModel) -> Any:
        return policy_client(triton_url, model_name, protocol=protocol, model_version=str(chosen.version))

    logger.info("master: %s version %d from %s (spec %s), Triton %s://%s, gateway %s; %s", model_name,
                model.version, model.version_dir, model.spec.spec_hash()[:12], protocol, triton_url,
                args.gateway_url, "pinned by --version" if store is None else "following the routing table's "
                "master slot")
    metrics = MasterMetrics() if args.metrics_port is not None else None
    client = open_client(model)
    follower = None if store is None else MasterVersionFollower(
        store, model_repository=repository, model_name=model_name, public_key_path=public_key, current=model,
        client_factory=open_client, current_client=client)
    stop_metrics: Callable[[], None] | None = None
    try:
        if metrics is not None:
            stop_metrics = serve_master_metrics(args.metrics_port, metrics)
        run_master(
            redis_url=redis_url, infer=client.infer, spec=model.spec, portfolio=gateway.portfolio,
            risk=config.risk, loop=serving.loop, policy_version=model.policy_version,
            every_bars=args.every_bars, every_seconds=args.every_seconds,
            snapshot_channel=args.snapshot_channel,
            directive_channel=args.directive_channel or serving.directive_bus.channel,
            follow=follower, metrics=metrics,
        )
    except ValidationError as exc:
        raise MasterProcessError(f"master: {exc}") from exc
    finally:
        if stop_metrics is not None:
            stop_metrics()
        if follower is not None:
            follower.close()  # closes whichever client is current
        else:
            _close_quietly(client)
        gateway.close()
    return 0
