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
"""

from __future__ import annotations

import argparse
import json
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
from pydantic import ValidationError

from contracts.config import LoopConfig, RiskOverlaysConfig
from contracts.decisions import MarketSnapshotMessage, MasterDirective
from contracts.features import FeatureSpec
from marlops.errors import MarlopsError
from serving.client import PolicyOutput
from features.errors import FeatureError
from features.observation import ObservationBuilder
from serving.directive_bus import DirectiveBus, RedisDirectiveBus
from serving.errors import ServingError
from serving.master_service import MasterAgentService
from serving.model_repository import exported_versions
from serving.snapshot_bus import SNAPSHOT_CHANNEL, SnapshotBus
from serving.triton_runtime.policy_runtime import MANIFEST_FILE

logger = logging.getLogger(__name__)

MASTER_MODEL = "master_agent"
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
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


def load_master_model(model_repository: Path, version: int | None = None,
                      model_name: str = MASTER_MODEL) -> MasterModel:
    """The exported master version (`version`, or the highest one in `<repository>/<model_name>/`) and the
    FeatureSpec signed into its `model.manifest.json` (key `feature_spec`, checked against `feature_spec_hash`)."""
    repository = Path(model_repository)
    versions = exported_versions(repository, model_name)
    if not versions:
        raise MasterProcessError(f"{repository / model_name}: no exported {model_name} version "
                                 "(export one, or pass --model-repository)")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise MasterProcessError(f"{repository / model_name}: version {chosen} not exported; versions are {versions}")
    version_dir = repository / model_name / str(chosen)
    manifest_path = version_dir / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        spec = FeatureSpec.model_validate(manifest["feature_spec"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = f"no key {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise MasterProcessError(f"{manifest_path}: cannot read the feature spec ({reason})") from exc
    signed = manifest.get("feature_spec_hash")
    if signed is not None and signed != spec.spec_hash():
        raise MasterProcessError(f"{manifest_path}: feature_spec hashes to {spec.spec_hash()[:12]}, the manifest "
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

    def handle(self, snapshot: MarketSnapshotMessage) -> MasterDirective | None:
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
) -> MasterRunSummary:
    """Consume snapshots from `snapshot_channel` and publish directives on `directive_channel` until `stop`
    is set (or SIGTERM / SIGINT arrive, when called on the main thread with `handle_signals`). `ready` is set
    once the snapshot subscription is confirmed. Raises DirectiveBusError when Redis is unreachable at start;
    later outages are reported and survived (both channels reconnect by themselves)."""
    stop = stop or threading.Event()
    directives = RedisDirectiveBus(redis_url, directive_channel)
    handler = MasterSnapshotHandler(
        infer=infer, spec=spec, portfolio=portfolio, bus=directives, risk=risk, loop=loop,
        policy_version=policy_version, every_bars=every_bars, every_seconds=every_seconds,
    )
    inbox: queue.Queue[MarketSnapshotMessage] = queue.Queue()
    snapshots: SnapshotBus | None = None
    try:
        with _stop_on_signals(stop, handle_signals):
            snapshots = SnapshotBus(redis_url, snapshot_channel)
            snapshots.subscribe(inbox.put)
            cadence = (f"every {every_seconds:g}s of market time" if every_seconds is not None
                       else f"every {handler.schedule.every_bars} bar(s)")
            logger.info("master %s ready: snapshots from %s, directives to %s at %s, %s or on a regime shift",
                        policy_version, snapshot_channel, directive_channel, redis_url, cadence)
            if ready is not None:
                ready.set()
            while not stop.is_set():
                try:
                    snapshot = inbox.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                handler.handle(snapshot)
    finally:
        if snapshots is not None:
            snapshots.close()
        directives.close()
    summary = handler.summary
    logger.info("master stopped: %d snapshot(s), %d directive(s), %d refused, %d failed", summary.snapshots,
                len(summary.directives), summary.refused, summary.failed)
    return summary


# ---- the command ----------------------------------------------------------------------------------
def add_master_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`marlops master ...` (the caller's parser provides the global `--config-dir` and `--verbose`)."""
    master = subparsers.add_parser(
        "master", help="run the master agent service: market snapshots from Redis -> directives on Redis")
    master.add_argument("--redis-url", default=None,
                        help="the bus (default: MARLOPS_DIRECTIVE_BUS_URL / REDIS_URL, else directive_bus.redis_url "
                             "of serving.yaml)")
    master.add_argument("--snapshot-channel", default=SNAPSHOT_CHANNEL)
    master.add_argument("--directive-channel", default=None, help="default: directive_bus.channel of serving.yaml")
    master.add_argument("--version", type=int, default=None,
                        help="master_agent version to use (default: the routing table's master slot, else the "
                             "highest exported one; read at start: restart after changing the slot)")
    master.add_argument("--model-repository", type=Path, default=None,
                        help="Triton model repository (default: triton.model_repository of serving.yaml)")
    master.add_argument("--triton-url", default=None,
                        help="Triton endpoint (default: 127.0.0.1 and the serving.yaml port of --protocol)")
    master.add_argument("--protocol", choices=["grpc", "http"], default=None,
                        help="default: triton.protocol of serving.yaml")
    master.add_argument("--gateway-url", default=DEFAULT_GATEWAY_URL)
    master.add_argument("--gateway-token-file", type=Path, default=None,
                        help="raw bearer token for GET /v1/portfolio (default: <MARLOPS_HOME>/tokens/viewer.token, "
                             "else trader.token, if present)")
    master.add_argument("--every-bars", type=int, default=None, help="default: loop.master_every_bars")
    master.add_argument("--every-seconds", type=float, default=None,
                        help="act when this much market time has passed since the last directive (e.g. 300), "
                             "instead of every K bars")
    master.set_defaults(func=cmd_master)
    return master


def _default_token(tokens_dir: Path) -> str | None:
    from gateway.token_file import read_token_file

    for role in ("viewer", "trader"):
        path = tokens_dir / f"{role}.token"
        if path.is_file():
            return read_token_file(path)
    return None


def _routed_master_version(paths: Any) -> int | None:
    """The master_agent version the routing table's `master` slot names (None: none routed)."""
    from marlops.routing import RoutingStore

    store = RoutingStore(paths.state_url)
    try:
        ref = store.read().policies.get("master")
    finally:
        store.close()
    return None if ref is None else ref.version


def cmd_master(args: argparse.Namespace) -> int:
    from contracts.config import load_rl_config
    from gateway.token_file import read_token_file
    from marlops.gateway_client import GatewayClient
    from marlops.paths import StatePaths
    from marlops.settings import MarlopsSettings
    from serving.client import PolicyClient

    config = load_rl_config(Path(args.config_dir))
    paths = StatePaths.from_env()
    serving = config.serving
    model = load_master_model(args.model_repository or paths.model_repository(serving.triton.model_repository),
                              args.version if args.version is not None else _routed_master_version(paths),
                              serving.models.master_agent)
    redis_url = args.redis_url or MarlopsSettings.load().directive_bus_url or serving.directive_bus.redis_url
    protocol = args.protocol or serving.triton.protocol
    port = serving.triton.grpc_port if protocol == "grpc" else serving.triton.http_port
    triton_url = args.triton_url or f"127.0.0.1:{port}"
    token = read_token_file(args.gateway_token_file) if args.gateway_token_file else _default_token(paths.tokens_dir)
    gateway = GatewayClient(args.gateway_url, timeout_s=5.0, token=token)
    logger.info("master: %s version %d from %s (spec %s), Triton %s://%s, gateway %s", serving.models.master_agent,
                model.version, model.version_dir, model.spec.spec_hash()[:12], protocol, triton_url,
                args.gateway_url)
    try:
        with PolicyClient(triton_url, serving.models.master_agent, protocol=protocol,
                          model_version=str(model.version)) as client:
            run_master(
                redis_url=redis_url, infer=client.infer, spec=model.spec, portfolio=gateway.portfolio,
                risk=config.risk, loop=serving.loop, policy_version=model.policy_version,
                every_bars=args.every_bars, every_seconds=args.every_seconds,
                snapshot_channel=args.snapshot_channel,
                directive_channel=args.directive_channel or serving.directive_bus.channel,
            )
    except ValidationError as exc:
        raise MasterProcessError(f"master: {exc}") from exc
    finally:
        gateway.close()
    return 0
