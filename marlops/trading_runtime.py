"""Wires the trading service from settings: stores, routing, Triton, gateway, source, master, metrics.

Kept apart from `marlops.trading` so the loop itself is built from plain callables in tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import start_http_server
from sqlalchemy.exc import SQLAlchemyError

from contracts.config import RLConfig, VolatilityProxyConfig
from contracts.decisions import MarketSnapshotMessage, MasterDirective
from contracts.features import FeatureSpec
from gateway.token_file import read_token_file
from marlops.errors import MarlopsError
from marlops.gateway_client import GatewayClient
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.canary import anomaly_rules_of
from marlops.lifecycle.recorder import BarRecorder
from marlops.lifecycle.records import LIVE_SCOPE, BarRecord
from marlops.model_watch import ModelAnomalyWatch
from marlops.lifecycle.store import LifecycleStore
from marlops.master_process import MasterSnapshotHandler
from marlops.paths import StatePaths
from marlops.policy_router import (
    PolicyRouter,
    read_version_manifest,
    version_holdout_start,
)
from marlops.routing import PolicyRef
from marlops.routing_store import RoutingStore
from marlops.stack import PAPER_KEY_ID, PAPER_SECRET
from marlops.trade_cli import build_source
from marlops.trading import BarOutcome, TradingService, timed_inference
from marlops.trading_state import TradingStateStore
from registry.keys import PUBLIC_KEY_FILENAME, TRUSTED_PUBLIC_KEY_ENV
from serving.errors import ServingError

logger = logging.getLogger(__name__)

ALERT_LIFECYCLE_RECORD = "LIFECYCLE_RECORD_FAILED"



class HttpDirectiveBus:
    """Publishes directives to one gateway over HTTP (POST /v1/directives), for runs without Redis."""

    def __init__(self, gateway: GatewayClient) -> None:
        self._gateway = gateway

    def publish(self, directive: MasterDirective) -> None:
        self._gateway.post_directive(directive)

    def subscribe(self, callback: Any) -> None:  # pragma: no cover - publish-only
        raise MarlopsError("the HTTP directive bus only publishes")

    def close(self) -> None:
        return None


class SimPriceFeed:
    """Moves the LOCAL paper exchange's market to each replayed bar's closes (`/_sim/prices`). It sends the local
    paper key pair only, never the APCA_* keys of a real account."""

    def __init__(self, url: str) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=10.0,
                                  headers={"APCA-API-KEY-ID": PAPER_KEY_ID, "APCA-API-SECRET-KEY": PAPER_SECRET})

    def __call__(self, prices: dict[str, float]) -> None:
        response = self._http.post("/_sim/prices", json={"prices": prices})
        if response.status_code >= 400:
            raise MarlopsError(f"paper exchange refused prices: {response.status_code} {response.text[:200]}")

    def close(self) -> None:
        self._http.close()


def public_key_path(paths: StatePaths) -> Path:
    override = os.environ.get(TRUSTED_PUBLIC_KEY_ENV)
    path = Path(override) if override else paths.keys_dir / PUBLIC_KEY_FILENAME
    if not path.is_file():
        raise MarlopsError(f"trusted public key {path} not found: train and register a policy first "
                           f"(`make demo` or `marlops train`), or set {TRUSTED_PUBLIC_KEY_ENV}")
    return path


@dataclass
class TradingRuntime:
    service: TradingService
    closers: list[Any] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace, paths: StatePaths, config: RLConfig) -> TradingRuntime:
        closers: list[Any] = []
        triton = config.serving.triton
        repository = paths.model_repository(triton.model_repository)
        key_path = public_key_path(paths)
        routing = RoutingStore(args.state_url or paths.state_url)
        closers.append(routing)
        table = routing.read()
        production = table.policies.get("production")
        if production is None:
            raise MarlopsError("the routing table names no production policy: set one with `marlops route set "
                               "--policy production=symbol_agent/<version> --policy sl_fallback=sl_fallback/<version> "
                               "--reason ...` (`make up` does this for the demo policy)")
        state = TradingStateStore(args.state_url or paths.state_url)
        closers.append(state)
        if args.reset:
            state.reset(args.name)
        start = version_holdout_start(repository, production, key_path)
        source, symbols = build_source(args, config, start, _proxy(repository, production, key_path))
        closers.append(source)
        token = None
        if not args.insecure_no_auth:
            token = read_token_file(args.token_file or paths.tokens_dir / "trader.token")
        gateway = GatewayClient(args.gateway_url, token=token)
        closers.append(gateway)
        infer_url = args.triton_url or f"127.0.0.1:{triton.grpc_port if triton.protocol == 'grpc' else triton.http_port}"
        http_url = args.triton_http_url or f"http://127.0.0.1:{triton.http_port}"
        service_ref: dict[str, TradingService] = {}
        router = PolicyRouter(routing, triton_http_url=http_url, infer_url=infer_url, protocol=triton.protocol,
                              repository=repository, public_key_path=key_path, triton=triton,
                              alert=lambda name, detail: service_ref["s"].alerts(name, detail))
        closers.append(router)
        master_mode = args.master or ("external" if args.directive_bus else "inprocess")
        publish_snapshot = None
        bus: Any = None
        if args.directive_bus:
            from serving.snapshot_bus import SnapshotBus

            publisher = SnapshotBus(args.directive_bus)
            closers.append(publisher)
            publish_snapshot = publisher.publish if master_mode == "external" else None
            if master_mode == "inprocess":
                from serving.directive_bus import RedisDirectiveBus

                bus = RedisDirectiveBus(args.directive_bus, config.serving.directive_bus.channel)
                closers.append(bus)
        if master_mode == "inprocess" and bus is None:
            bus = HttpDirectiveBus(gateway)
        loop = config.serving.loop

        def master_factory(ref: PolicyRef, spec: FeatureSpec) -> Callable[[MarketSnapshotMessage], object]:
            # The same snapshot handler (schedule, observation, directive) as `marlops master`, in process.
            infer = timed_inference(service_ref["s"].metrics, ref, router.client(ref).infer)
            return MasterSnapshotHandler(infer=infer, spec=spec, portfolio=gateway.portfolio, bus=bus, risk=config.risk,
                                         loop=loop, policy_version=str(ref)).handle

        prices = None
        if args.sim_exchange:
            prices = SimPriceFeed(args.sim_exchange)
            closers.append(prices)
        # Every decided bar is recorded for the lifecycle's sensors (canary health, model anomaly).
        lifecycle = LifecycleStore(args.state_url or paths.state_url)
        closers.append(lifecycle)

        watch: list[ModelAnomalyWatch] = []  # made with the service's metrics registry, below

        def record(bar: BarRecord) -> None:
            for w in watch:
                w.observe(bar)
            try:
                # live, the market clock is the trading service's bars
                lifecycle.append_bars(LIVE_SCOPE, [bar], advance_clock="market")
            except (LifecycleError, SQLAlchemyError) as exc:  # the sensors see a gap; trading goes on
                service_ref["s"].alerts(ALERT_LIFECYCLE_RECORD, f"bar {bar.bar_index} not recorded: {exc}")
                return
            service_ref["s"].alerts(ALERT_LIFECYCLE_RECORD, None)

        recorder = BarRecorder(sink=record, keep=False)

        def on_bar(outcome: BarOutcome) -> None:
            _log_bar(outcome)
            recorder(outcome)

        service = TradingService(
            name=args.name, source=source, symbols=symbols, router=router, gateway=gateway, state=state,
            publish_snapshot=publish_snapshot, master=master_factory if master_mode == "inprocess" else None,
            set_exchange_prices=prices, on_bar=on_bar, drift=config.drift,
            alt=lambda: _alt_feeds(paths),
        )
        service_ref["s"] = service
        watch.append(ModelAnomalyWatch(service.metrics.registry, anomaly_rules_of(config)))
        if args.metrics_port:
            start_http_server(args.metrics_port, addr="127.0.0.1", registry=service.metrics.registry)
            logger.info("trading metrics on http://127.0.0.1:%d/metrics", args.metrics_port)
        return cls(service=service, closers=closers)

    def run(self, stop: threading.Event, *, max_bars: int | None = None) -> list[BarOutcome]:
        return self.service.run(stop, max_bars=max_bars)

    def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                closer.close()
            except Exception as exc:  # keep closing the rest; each failure is reported
                logger.error("closing %s failed: %s", type(closer).__name__, exc)
        self.closers.clear()


def _alt_feeds(paths: StatePaths) -> object:
    """Sentiment and macro as of each bar, from the store the hourly Dagster assets fill (v2 specs only)."""
    from market_data.alt_data import AltFeeds, FeedStore

    return AltFeeds.from_store(FeedStore.under(paths.root))


def _proxy(repository: Path, ref: PolicyRef, key_path: Path) -> VolatilityProxyConfig | None:
    """The volatility proxy of `ref`'s feature spec; None (the default) when its manifest cannot be read."""
    from market_data.volatility import proxy_from_spec

    try:
        return proxy_from_spec(read_version_manifest(repository, ref, key_path).spec)
    except ServingError as exc:  # the router reports an unservable version itself
        logger.warning("cannot read the feature spec of %s: %s", ref, exc)
        return None


def _log_bar(outcome: BarOutcome) -> None:
    logger.info("bar %d %s: %s, %d orders, %.1f ms, policies %s, state %s", outcome.bar_index,
                outcome.timestamp.isoformat()[:19], outcome.status, outcome.n_orders, outcome.latency_ms,
                outcome.policies, outcome.trading_state or "-")
