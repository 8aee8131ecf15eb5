"""Plain-Python lifecycle steps. Dagster assets call exactly one of these each; so do the CLI and tests.

Training, registration and the held-out Go/No-Go live in marlops.candidates; this module holds the data, Triton
and staging-replay steps and re-exports the rest, so callers have one import.
"""

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contracts.config import VolatilityProxyConfig
from features.market_features import compute_market_features
from features.observation import ObservationBuilder
from features.service import FeatureService
from gateway.serve import free_port
from market_data.replay import ReplayClock
from market_data.source import dataset_id, load_market, trading_symbols
from market_data.synthetic import synthetic_sectors
from market_data.volatility import apply_volatility_proxy, non_tradable_symbols, proxy_from_spec
from marlops.candidates import (
    MASTER_AGENT,
    SL_FALLBACK,
    SYMBOL_AGENT,
    PolicyCandidate,
    RegisteredPolicies,
    TrainingSettings,
    ValidationResult,
    check_bars,
    evaluate_registered,
    fit_spec,
    register_candidate,
    train_candidate,
    validate_candidate,
)
from marlops.context import PipelineContext
from marlops.errors import PipelineError
from marlops.gateway_client import GatewayClient
from marlops.loop import DecisionLoop, LoopResult, StepRecord
from marlops.stack import ServingStack, StackPorts
from serving.client import PolicyClient
from serving.master_service import MasterAgentService
from serving.model_repository import export_policy, exported_versions, remove_version
from serving.triton_process import TritonServer

__all__ = [
    "MASTER_AGENT", "SL_FALLBACK", "SYMBOL_AGENT", "PipelineContext", "PolicyCandidate", "RegisteredPolicies",
    "TrainingSettings", "ValidationResult", "check_bars", "evaluate_registered", "fit_spec", "register_candidate",
    "train_candidate", "validate_candidate",
]

logger = logging.getLogger(__name__)

KEEP_TRITON_VERSIONS = 2


# ---------------------------------------------------------------------------------------------- data


def load_bars(source: str, *, seed: int, n_symbols: int, n_days: int) -> pd.DataFrame:
    return load_market(source, seed=seed, n_symbols=n_symbols, n_days=n_days)


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
            # Keep the new version and the one before it (instant rollback); older ones would each cost a
            # Python backend stub at every Triton start.
            for stale in exported_versions(repo, agent.agent)[:-KEEP_TRITON_VERSIONS]:
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


def run_replay(bars: pd.DataFrame, registered: RegisteredPolicies, ctx: PipelineContext, *, replay_days: int,
               ports: StackPorts | None = None, audit_url: str | None = None, speed: float | None = None,
               on_step: Callable[[StepRecord], None] | None = None) -> ReplaySummary:
    """Replay the latest `replay_days` bars through paper exchange, Triton and the gateway; stop everything."""
    start = replay_start(bars, replay_days)
    history = bars[bars["timestamp"] < start]
    replay = bars[bars["timestamp"] >= start]
    spec = registered.spec
    # An etf volatility proxy (e.g. VIXY) is a market input of the features, not a tradable symbol.
    symbols = tuple(s for s in trading_symbols(bars) if s not in non_tradable_symbols(proxy_from_spec(spec)))
    loop_cfg = ctx.config.serving.loop
    if audit_url is None:
        # One audit database per replay, so a summary counts only its own rows.
        ctx.paths.staging_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        audit_url = f"sqlite:///{ctx.paths.staging_dir / f'audit-{stamp}.db'}"
    stack = ServingStack(ctx.paths, ctx.config, ports=ports or StackPorts.free(), model_repository=ctx.model_repository,
                         audit_url=audit_url, sectors=synthetic_sectors(symbols))
    with stack:
        symbol_client = stack.policy_client(SYMBOL_AGENT, version=registered.symbol.version)
        master_client = stack.policy_client(MASTER_AGENT, version=registered.master.version)
        gateway = GatewayClient(stack.gateway_url)
        assert stack.bus is not None
        master = MasterAgentService(master_client.infer, stack.bus, ctx.config.risk,
                                    every_bars=loop_cfg.master_every_bars,
                                    ttl_seconds=loop_cfg.directive_ttl_bars * loop_cfg.bar_seconds,
                                    policy_version=f"{MASTER_AGENT}/{registered.master.version}")
        loop = DecisionLoop(features=FeatureService(spec, symbols, history=history), builder=ObservationBuilder(spec),
                            symbol_infer=symbol_client.infer, gateway=gateway,
                            policy_version=f"{SYMBOL_AGENT}/{registered.symbol.version}",
                            master=master,
                            set_exchange_prices=stack.exchange.set_prices, on_step=on_step)
        clock = ReplayClock(sorted(replay["timestamp"].unique()), speed=speed, bar_seconds=loop_cfg.bar_seconds)
        result = loop.run(replay, clock)
        audit_summary = gateway.audit_summary()
        exchange_orders = stack.exchange.orders()
        state = gateway.state()
        gateway.close()
        symbol_client.close()
        master_client.close()
    return summarize(result, symbols=len(symbols), registered=registered, audit_summary=audit_summary,
                     orders_at_exchange=len(exchange_orders), trading_state=str(state.get("trading_state")))


def summarize(result: LoopResult, *, symbols: int, registered: RegisteredPolicies, audit_summary: dict[str, Any],
              orders_at_exchange: int, trading_state: str) -> ReplaySummary:
    steps = result.steps
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
        directives=result.directives_published,
        decision_latency_ms=percentiles(result.latencies_ms()),
        inference_ms=percentiles(np.array([s.inference_ms for s in steps])),
        policy_versions=registered.versions(),
        feature_spec_hash=registered.spec.spec_hash(),
        final_equity=steps[-1].equity if steps else 0.0,
        trading_state=trading_state,
        first_bar=steps[0].timestep if steps else "",
        last_bar=steps[-1].timestep if steps else "",
        observation_checksums=[s.observation_checksum for s in steps],
    )


def staging_replay(bars: pd.DataFrame, registered: RegisteredPolicies, deployment: TritonDeployment,
                   ctx: PipelineContext, *, replay_days: int) -> ReplaySummary:
    if deployment.models.get(SYMBOL_AGENT) != registered.symbol.triton_version:
        raise PipelineError("the Triton deployment does not hold the registered symbol_agent version")
    if replay_start(bars, replay_days) < pd.Timestamp(registered.holdout_start):
        raise PipelineError(f"the staging replay window (latest {replay_days} bars) starts before the held-out start "
                            f"{registered.holdout_start}: it would replay bars the policy was trained on")

    def progress(step: StepRecord) -> None:
        logger.info("replay bar %d %s: %d orders, %d denied, state %s, equity %.0f, %.1f ms", step.bar_index,
                    step.timestep[:10], step.n_orders, step.n_denied, step.trading_state, step.equity, step.latency_ms)

    summary = run_replay(bars, registered, ctx, replay_days=replay_days, on_step=progress)
    ctx.paths.staging_dir.mkdir(parents=True, exist_ok=True)
    (ctx.paths.staging_dir / "latest.json").write_text(summary.to_json())
    logger.info("staging replay: %d decisions, %d orders (%d filled), %d audit rows, p50 %.1f ms",
                summary.decisions, summary.orders_submitted, summary.orders_filled, summary.audit_rows,
                summary.decision_latency_ms["p50"])
    return summary
