"""Plain-Python lifecycle steps. Dagster assets call exactly one of these each; so do the CLI and tests.

Training, registration and the held-out Go/No-Go live in marlops.candidates; this module holds the data, Triton
and staging-replay steps and re-exports the rest, so callers have one import.
"""

import contextlib
import json
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contracts.config import RLConfig, VolatilityProxyConfig
from contracts.decisions import MarketSnapshotMessage
from contracts.features import FeatureSpec
from features.market_features import compute_market_features
from gateway.serve import free_port
from market_data.bar_source import BarSource, ReplayBarSource
from market_data.source import dataset_id, load_market, trading_symbols
from market_data.synthetic import synthetic_sectors
from market_data.volatility import (
    apply_volatility_proxy,
    non_tradable_symbols,
    proxy_from_spec,
)
from marlops.candidates import (
    MASTER_AGENT,
    SL_FALLBACK,
    SYMBOL_AGENT,
    PolicyCandidate,
    RegisteredPolicies,
    TrainingSettings,
    ValidationResult,
    alt_feeds_for,
    check_bars,
    evaluate_registered,
    registered_from_registry,
    fit_spec,
    register_candidate,
    train_candidate,
    validate_candidate,
)
from marlops.context import PipelineContext
from marlops.errors import PipelineError
from marlops.gateway_client import GatewayClient
from marlops.master_process import MasterSnapshotHandler
from marlops.policy_router import PolicyRouter
from marlops.routing import PolicyRef, RoutingChange
from marlops.routing_store import RoutingStore
from marlops.stack import ServingStack, StackPorts
from marlops.trading import BarOutcome, TradingService, timed_inference
from marlops.trading_state import TradingStateStore
from serving.client import PolicyClient
from serving.model_repository import export_policy, exported_versions, remove_version
from serving.triton_process import TritonServer

__all__ = [
    "MASTER_AGENT", "SL_FALLBACK", "SYMBOL_AGENT", "PipelineContext", "PolicyCandidate", "RegisteredPolicies",
    "TrainingSettings", "ValidationResult", "check_bars", "evaluate_registered", "fit_spec", "register_candidate",
    "registered_from_registry",
    "train_candidate", "validate_candidate",
]

logger = logging.getLogger(__name__)

KEEP_TRITON_VERSIONS = 2


# ---------------------------------------------------------------------------------------------- data


def load_bars(source: str, *, seed: int, n_symbols: int, n_days: int) -> pd.DataFrame:
    return load_market(source, seed=seed, n_symbols=n_symbols, n_days=n_days)


def history_bars(feed: pd.DataFrame, config: RLConfig) -> pd.DataFrame:
    """The bars before the trading days the accelerated lifecycle withholds (lifecycle.replay_trading_days)."""
    from marlops.lifecycle.market import split_for_lifecycle

    return split_for_lifecycle(feed, config.lifecycle.replay_trading_days)[0]


def bars_metadata(bars: pd.DataFrame) -> dict[str, Any]:
    ts = bars["timestamp"]
    return {"dataset_id": dataset_id(bars), "rows": len(bars), "symbols": len(trading_symbols(bars)),
            "first_bar": str(ts.min()), "last_bar": str(ts.max()), "bars_per_symbol": int(ts.nunique())}


def replay_start(bars: pd.DataFrame, replay_days: int) -> pd.Timestamp:
    """First timestamp of the held-out replay window (the latest `replay_days` bars)."""
    stamps = np.sort(bars["timestamp"].unique())
    if replay_days < 1 or len(stamps) <= replay_days:
        raise PipelineError(f"need more than replay_days={replay_days} bars, the data has {len(stamps)}")
    return pd.Timestamp(stamps[-replay_days])


def compute_feature_table(bars: pd.DataFrame, volatility_proxy: VolatilityProxyConfig | None = None) -> pd.DataFrame:
    """Market features of raw bars with the volatility proxy applied (default: the config default, `auto`)."""
    return compute_market_features(apply_volatility_proxy(bars, volatility_proxy or VolatilityProxyConfig()))


# ---------------------------------------------------------------------------------------------- triton


@dataclass(frozen=True)
class TritonDeployment:
    model_repository: str
    models: dict[str, int]
    smoke_tested: bool

    def metadata(self) -> dict[str, Any]:
        return {"model_repository": self.model_repository, "smoke_tested": self.smoke_tested,
                **{f"{name}_triton_version": v for name, v in self.models.items()}}


def deploy_to_triton(registered: RegisteredPolicies, ctx: PipelineContext, *, smoke_test: bool = True) -> TritonDeployment:
    """Download each registered version, verify it, export it into the model repository, and load it once."""
    repo = ctx.model_repository
    public_key = ctx.keys.public_key_path
    models: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="download-", dir=ctx.paths.root) as tmp:
        for agent in registered.agents.values():
            local, _manifest = ctx.registry.download_verified(agent.agent, agent.version, Path(tmp) / agent.agent,
                                                              ctx.keys.public_pem())
            export_policy(repo, agent.agent, agent.triton_version, local, public_key, ctx.config.serving.triton,
                          expected_feature_spec_hash=registered.spec.spec_hash())
            models[agent.agent] = agent.triton_version
            # Keep the new version, the one before it, and whatever production / last-known-good point at
            # (instant rollback); older ones would each cost a Python backend stub at every Triton start.
            protected = {int(v) for alias, v in ctx.registry.aliases(agent.agent).items()
                         if alias in ("production", "last-known-good")}
            for stale in exported_versions(repo, agent.agent)[:-KEEP_TRITON_VERSIONS]:
                if stale not in protected:
                    remove_version(repo, agent.agent, stale, public_key, ctx.config.serving.triton)
            logger.info("exported %s v%s into %s", agent.agent, agent.version, repo)
    if smoke_test:
        obs_dims = {SYMBOL_AGENT: len(registered.spec.symbol.names), MASTER_AGENT: len(registered.spec.master.names),
                    SL_FALLBACK: len(registered.spec.symbol.names)}
        with TritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                          workdir=ctx.paths.triton_workdir) as server:
            for name, version in models.items():
                server.load_model(name)
                client = PolicyClient(server.http_url, name, protocol="http", model_version=str(version))
                out = client.infer(np.zeros((2, obs_dims[name]), dtype=np.float32))
                client.close()
                if out.actions.shape[0] != 2:
                    raise PipelineError(f"{name} v{version}: smoke inference returned {out.actions.shape[0]} rows")
        logger.info("smoke test passed: Triton loaded and served %s", models)
    return TritonDeployment(model_repository=str(repo), models=models, smoke_tested=smoke_test)


# ---------------------------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class ReplaySummary:
    symbols: int
    trading_days: int
    bars: int
    decisions: int
    orders_submitted: int
    orders_filled: int
    orders_at_exchange: int
    audit_rows: int
    audit_by_kind: dict[str, int]
    audit_chain_ok: bool
    directives: int
    decision_latency_ms: dict[str, float]
    inference_ms: dict[str, float]
    policy_versions: dict[str, str]
    feature_spec_hash: str
    final_equity: float
    trading_state: str
    first_bar: str
    last_bar: str
    observation_checksums: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("observation_checksums")
        return {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in d.items()}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"p50": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
            "mean": float(values.mean()), "max": float(values.max())}


def tradable_symbols(bars: pd.DataFrame, spec: FeatureSpec) -> tuple[str, ...]:
    # An etf volatility proxy (e.g. VIXY) is a market input of the features, not a tradable symbol.
    return tuple(s for s in trading_symbols(bars) if s not in non_tradable_symbols(proxy_from_spec(spec)))


@dataclass(frozen=True)
class WindowRun:
    """What one replayed window produced: every bar's outcome and the gateway's and exchange's view after it."""

    outcomes: list[BarOutcome]
    symbols: tuple[str, ...]
    audit_summary: dict[str, Any]
    orders_at_exchange: int
    trading_state: str
    run_dir: Path
    gateway_alerts: list[dict[str, Any]] = field(default_factory=list)  # GET /v1/alerts after the window
    state_changes: list[dict[str, Any]] = field(default_factory=list)  # trading-state changes, oldest first
    alerts_raised: list[dict[str, Any]] = field(default_factory=list)  # the trading service's alerts, as raised


def replay_window(bars: pd.DataFrame, ctx: PipelineContext, *, start: pd.Timestamp, end: pd.Timestamp | None = None,
                  routing: RoutingStore, spec: FeatureSpec, name: str = "replay", ports: StackPorts | None = None,
                  audit_url: str | None = None, speed: float | None = None,
                  on_step: Callable[[BarOutcome], None] | None = None,
                  run_dir: Path | None = None, source: BarSource | None = None) -> WindowRun:
    """Trade the bars from `start` to `end` (inclusive; earlier bars are warm-up history) on the trading service
    (the same loop as `marlops trade`) with its own paper exchange (its own paper account), Triton and gateway,
    routed by `routing`. `speed` = bars per second (None: as fast as possible). `source` replaces the replay of
    `bars` (e.g. several providers behind a quorum); `bars` still name the universe and move the exchange."""
    if end is not None:
        bars = bars[bars["timestamp"] <= end]
    symbols = tradable_symbols(bars, spec)
    loop_cfg = ctx.config.serving.loop
    if run_dir is None:
        ctx.paths.staging_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        run_dir = ctx.paths.staging_dir / f"{name}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if audit_url is None:
        # One audit database per replay, so a summary counts only its own rows.
        audit_url = f"sqlite:///{run_dir / 'audit.db'}"
    stack = ServingStack(ctx.paths, ctx.config, ports=ports or StackPorts.free(), model_repository=ctx.model_repository,
                         audit_url=audit_url, sectors=synthetic_sectors(symbols))
    state = TradingStateStore(f"sqlite:///{run_dir / 'cursor.db'}")
    try:
        with stack, contextlib.ExitStack() as closing:
            gateway = closing.enter_context(contextlib.closing(GatewayClient(stack.gateway_url)))
            t = ctx.config.serving.triton
            box: dict[str, TradingService] = {}
            router = closing.enter_context(contextlib.closing(PolicyRouter(
                routing, triton_http_url=stack.triton.http_url, infer_url=stack.infer_url, protocol=t.protocol,
                repository=ctx.model_repository, public_key_path=ctx.keys.public_key_path,
                triton=t, alert=lambda name, detail: box["s"].alerts(name, detail))))
            assert stack.bus is not None
            bus = stack.bus

            def master(ref: PolicyRef, spec: FeatureSpec) -> Callable[[MarketSnapshotMessage], object]:
                infer = timed_inference(box["s"].metrics, ref, router.client(ref).infer)
                return MasterSnapshotHandler(infer=infer, spec=spec, portfolio=gateway.portfolio, bus=bus,
                                             risk=ctx.config.risk, loop=loop_cfg, policy_version=str(ref)).handle

            if source is None:
                source = guarded_source(ReplayBarSource(bars, start=start, bars_per_second=speed,
                                                        bar_seconds=loop_cfg.bar_seconds, name=name), ctx.config)
            service = TradingService(
                name=name, source=source, symbols=symbols, router=router, gateway=gateway, state=state, master=master,
                set_exchange_prices=stack.exchange.set_prices, on_bar=on_step, drift=ctx.config.drift,
                alt=lambda: alt_feeds_for(bars, ctx.config))
            box["s"] = service
            outcomes = service.run(threading.Event())
            audit_summary = gateway.audit_summary()
            exchange_orders = stack.exchange.orders()
            trading_state = str(gateway.state().get("trading_state"))
            gateway_alerts = list(gateway.alerts().get("alerts", []))
            changes = [e["payload"] for e in reversed(gateway.audit_events("state_change", limit=1000))
                       if e["payload"].get("event") == "trading_state"]
    finally:
        state.close()
    return WindowRun(outcomes=outcomes, symbols=symbols, audit_summary=audit_summary,
                     orders_at_exchange=len(exchange_orders), trading_state=trading_state, run_dir=run_dir,
                     gateway_alerts=gateway_alerts, state_changes=changes, alerts_raised=list(service.alerts.raised))


def guarded_source(source: BarSource, config: RLConfig) -> BarSource:
    """`source` behind the feed guard (validation, carry-forward of rejected bars), as `marlops trade` runs it."""
    from market_data.quorum import validated

    return validated(source, config=config.serving.market_data.feed, bar_seconds=config.serving.loop.bar_seconds)


def registered_routing(registered: RegisteredPolicies) -> RoutingChange:
    """Every symbol on the registered symbol agent, with its fallback and master."""
    return RoutingChange(
        policies={"production": PolicyRef(SYMBOL_AGENT, registered.symbol.triton_version),
                  "sl_fallback": PolicyRef(SL_FALLBACK, registered.agents[SL_FALLBACK].triton_version),
                  "master": PolicyRef(MASTER_AGENT, registered.master.triton_version)},
        routes={"*": ("production", None)})


def replay_on_own_table(bars: pd.DataFrame, ctx: PipelineContext, *, change: RoutingChange, principal: str,
                        reason: str, start: pd.Timestamp, spec: FeatureSpec, name: str, run_dir: Path,
                        end: pd.Timestamp | None = None, ports: StackPorts | None = None,
                        audit_url: str | None = None, speed: float | None = None,
                        on_step: Callable[[BarOutcome], None] | None = None,
                        source: BarSource | None = None) -> WindowRun:
    """`replay_window` routed by a table of its own (in `run_dir`, set by `change`): the project's routing
    table, and so production, is never touched."""
    run_dir.mkdir(parents=True, exist_ok=True)
    routing = RoutingStore(f"sqlite:///{run_dir / 'routing.db'}")
    try:
        routing.apply(change, principal=principal, reason=reason)
        return replay_window(bars, ctx, start=start, end=end, routing=routing, spec=spec, name=name, ports=ports,
                             audit_url=audit_url, speed=speed, on_step=on_step, run_dir=run_dir, source=source)
    finally:
        routing.close()


def run_replay(bars: pd.DataFrame, registered: RegisteredPolicies, ctx: PipelineContext, *, replay_days: int,
               ports: StackPorts | None = None, audit_url: str | None = None, speed: float | None = None,
               on_step: Callable[[BarOutcome], None] | None = None) -> ReplaySummary:
    """Replay the latest `replay_days` bars through the trading service, the paper exchange, Triton and the
    gateway, with a routing table of its own that sends every symbol to the registered version; stop everything."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    run = replay_on_own_table(bars, ctx, change=registered_routing(registered), principal="staging-replay",
                              reason=f"replay of run {registered.run_id}", start=replay_start(bars, replay_days),
                              spec=registered.spec, name="staging", run_dir=ctx.paths.staging_dir / f"run-{stamp}",
                              ports=ports, audit_url=audit_url, speed=speed, on_step=on_step)
    return summarize(run.outcomes, symbols=len(run.symbols), registered=registered, audit_summary=run.audit_summary,
                     orders_at_exchange=run.orders_at_exchange, trading_state=run.trading_state)


def summarize(outcomes: list[BarOutcome], *, symbols: int, registered: RegisteredPolicies,
              audit_summary: dict[str, Any], orders_at_exchange: int, trading_state: str) -> ReplaySummary:
    steps = [o for o in outcomes if o.status == "decided"]
    by_kind = {str(k): int(v) for k, v in audit_summary.get("counts", {}).items()}
    return ReplaySummary(
        symbols=symbols,
        trading_days=len(steps),
        bars=sum(s.n_symbols for s in steps),
        decisions=sum(s.n_symbols for s in steps),
        orders_submitted=sum(s.n_orders for s in steps),
        orders_filled=sum(s.n_filled for s in steps),
        orders_at_exchange=orders_at_exchange,
        audit_rows=int(audit_summary.get("total", sum(by_kind.values()))),
        audit_by_kind=by_kind,
        audit_chain_ok=bool(audit_summary.get("chain_ok", False)),
        directives=by_kind.get("directive", 0),
        decision_latency_ms=percentiles(np.array([s.latency_ms for s in steps])),
        inference_ms=percentiles(np.array([s.inference_ms for s in steps])),
        policy_versions=registered.versions(),
        feature_spec_hash=registered.spec.spec_hash(),
        final_equity=steps[-1].equity if steps else 0.0,
        trading_state=trading_state,
        first_bar=str(steps[0].timestamp) if steps else "",
        last_bar=str(steps[-1].timestamp) if steps else "",
        observation_checksums=[s.observation_checksum for s in steps],
    )


def staging_replay(bars: pd.DataFrame, registered: RegisteredPolicies, deployment: TritonDeployment,
                   ctx: PipelineContext, *, replay_days: int) -> ReplaySummary:
    if deployment.models.get(SYMBOL_AGENT) != registered.symbol.triton_version:
        raise PipelineError("the Triton deployment does not hold the registered symbol_agent version")
    if replay_start(bars, replay_days) < pd.Timestamp(registered.holdout_start):
        raise PipelineError(f"the staging replay window (latest {replay_days} bars) starts before the held-out start "
                            f"{registered.holdout_start}: it would replay bars the policy was trained on")

    def progress(step: BarOutcome) -> None:
        logger.info("replay bar %d %s: %d orders, %d denied, state %s, equity %.0f, %.1f ms", step.bar_index,
                    step.timestamp.isoformat()[:10], step.n_orders, step.n_denied, step.trading_state, step.equity,
                    step.latency_ms)

    summary = run_replay(bars, registered, ctx, replay_days=replay_days, on_step=progress)
    ctx.paths.staging_dir.mkdir(parents=True, exist_ok=True)
    (ctx.paths.staging_dir / "latest.json").write_text(summary.to_json())
    logger.info("staging replay: %d decisions, %d orders (%d filled), %d audit rows, p50 %.1f ms",
                summary.decisions, summary.orders_submitted, summary.orders_filled, summary.audit_rows,
                summary.decision_latency_ms["p50"])
    return summary
