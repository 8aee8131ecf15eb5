"""Plain-Python lifecycle steps. Dagster assets call exactly one of these each; so do the CLI and tests."""

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.evaluation import evaluate_symbol_policy
from agents.export import policy_signature, save_policy, script_policy
from agents.training import TrainingConfig, train_master_agent, train_symbol_agent
from contracts.config import RLConfig
from contracts.features import FeatureSpec
from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES, PolicySignature
from features.market_features import compute_market_features
from features.observation import ObservationBuilder, TrainingTensors
from features.service import FeatureService
from features.spec import fit_feature_spec
from gateway.serve import free_port
from market_data.replay import ReplayClock
from market_data.source import dataset_id, load_market, trading_symbols
from marlops.errors import PipelineError
from marlops.gateway_client import GatewayClient
from marlops.loop import DecisionLoop, LoopResult, StepRecord
from marlops.paths import StatePaths
from marlops.stack import ServingStack, StackPorts
from registry.artifacts import write_signed_artifact
from registry.git import current_git_commit
from registry.keys import SigningKeys, load_or_create_signing_keys
from registry.policy_registry import PolicyRegistry
from serving.client import PolicyClient
from serving.master_service import MasterAgentService
from serving.model_repository import export_policy, exported_versions, remove_version
from serving.triton_process import TritonServer

logger = logging.getLogger(__name__)

SYMBOL_AGENT = "symbol_agent"
MASTER_AGENT = "master_agent"
KEEP_TRITON_VERSIONS = 2


@dataclass(frozen=True)
class TrainingSettings:
    seed: int = 7
    iterations: int = 30
    hidden: int = 64


@dataclass(frozen=True)
class PipelineContext:
    paths: StatePaths
    config: RLConfig
    registry: PolicyRegistry
    keys: SigningKeys

    @classmethod
    def create(cls, paths: StatePaths, config: RLConfig) -> "PipelineContext":
        paths.ensure()
        return cls(paths=paths, config=config, registry=PolicyRegistry(paths.mlflow_uri),
                   keys=load_or_create_signing_keys(paths.keys_dir))

    @property
    def model_repository(self) -> Path:
        repo = Path(self.config.serving.triton.model_repository)
        return repo if repo.is_absolute() else self.paths.project_root / repo


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


def training_bars(bars: pd.DataFrame, replay_days: int) -> pd.DataFrame:
    return bars[bars["timestamp"] < replay_start(bars, replay_days)].reset_index(drop=True)


def compute_feature_table(bars: pd.DataFrame) -> pd.DataFrame:
    return compute_market_features(bars)


def fit_spec(bars: pd.DataFrame, *, replay_days: int, seed: int) -> FeatureSpec:
    spec = fit_feature_spec(training_bars(bars, replay_days), seed=seed)
    logger.info("fitted %s v%d, spec hash %s", spec.name, spec.version, spec.spec_hash()[:12])
    return spec


# ------------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class PolicyCandidate:
    run_id: str
    workdir: str
    symbol_path: str
    master_path: str
    spec: FeatureSpec
    symbol_signature: PolicySignature
    master_signature: PolicySignature
    train_metrics: dict[str, float]
    holdout_metrics: dict[str, float]
    dataset_id: str
    git_commit: str

    def metadata(self) -> dict[str, Any]:
        return {"mlflow_run_id": self.run_id, "feature_spec_hash": self.spec.spec_hash(), "dataset_id": self.dataset_id,
                **{f"train_{k}": float(v) for k, v in self.train_metrics.items()},
                **{f"holdout_{k}": float(v) for k, v in self.holdout_metrics.items()}}


def _split_tensors(tensors: TrainingTensors, start: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    stamps = pd.DatetimeIndex(tensors.timestamps)
    train_idx = np.flatnonzero(stamps < start)
    test_idx = np.flatnonzero(stamps >= start)
    # The last training row's forward return is the first held-out bar: drop it (no look-ahead).
    return train_idx[:-1], test_idx


def train_candidate(bars: pd.DataFrame, spec: FeatureSpec, ctx: PipelineContext, *, replay_days: int,
                    training: TrainingSettings,
                    on_iteration: Callable[[str, int, dict[str, float]], None] | None = None) -> PolicyCandidate:
    builder = ObservationBuilder(spec)
    tensors = builder.training_tensors(bars)
    train_idx, test_idx = _split_tensors(tensors, replay_start(bars, replay_days))
    if len(train_idx) < 20:
        raise PipelineError(f"only {len(train_idx)} training bars after warm-up; need at least 20")
    risk = ctx.config.risk
    cfg = TrainingConfig(seed=training.seed, iterations=training.iterations, hidden=training.hidden)
    data_id = dataset_id(bars)
    commit = current_git_commit(ctx.paths.project_root)
    workdir = Path(tempfile.mkdtemp(prefix="candidate-", dir=ctx.paths.root))
    with ctx.registry.start_run("train-policies", params={
        "seed": str(training.seed), "iterations": str(training.iterations), "hidden": str(training.hidden),
        "dataset_id": data_id, "git_commit": commit, "feature_spec_hash": spec.spec_hash(),
        "n_symbols": str(len(tensors.symbols)), "train_bars": str(len(train_idx)), "holdout_bars": str(len(test_idx)),
    }) as run:
        def log(agent: str) -> Callable[[int, dict[str, float]], None]:
            def _log(i: int, metrics: dict[str, float]) -> None:
                run.log_metrics({f"{agent}.{k}": float(v) for k, v in metrics.items()}, step=i)
                if on_iteration is not None:
                    on_iteration(agent, i, metrics)
            return _log

        sym = train_symbol_agent(tensors.symbol_market[train_idx], tensors.forward_returns[train_idx], risk, cfg,
                                 on_iteration=log(SYMBOL_AGENT))
        master = train_master_agent(tensors.master_market[train_idx], tensors.symbol_market[train_idx],
                                    tensors.forward_returns[train_idx], sym.module, risk, cfg,
                                    on_iteration=log(MASTER_AGENT))
        holdout = evaluate_symbol_policy(sym.module, tensors.symbol_market[test_idx],
                                         tensors.forward_returns[test_idx], risk) if len(test_idx) > 1 else {}
        train_metrics = {**{f"symbol_{k}": float(v) for k, v in sym.metrics.items()},
                         **{f"master_{k}": float(v) for k, v in master.metrics.items()}}
        run.log_metrics({**train_metrics, **{f"holdout_{k}": float(v) for k, v in holdout.items()}})
        run.client.log_dict(run.run_id, json.loads(spec.canonical_json()), "feature_spec.json")
        run_id = run.run_id

    spec_hash = spec.spec_hash()
    sym_obs_dim = len(spec.symbol.names)
    master_obs_dim = len(spec.master.names)
    symbol_signature = policy_signature(SYMBOL_AGENT, sym_obs_dim, len(DEFAULT_ACTION_LEVELS), spec_hash,
                                        tuple(f"level_{lvl:g}" for lvl in DEFAULT_ACTION_LEVELS))
    master_signature = policy_signature(MASTER_AGENT, master_obs_dim, len(DIRECTIVE_MODES), spec_hash, DIRECTIVE_MODES)
    symbol_path = save_policy(script_policy(sym.module), workdir / f"{SYMBOL_AGENT}.ptc")
    master_path = save_policy(script_policy(master.module), workdir / f"{MASTER_AGENT}.ptc")
    logger.info("trained candidate (run %s): symbol %s, holdout %s", run_id,
                {k: round(v, 4) for k, v in sym.metrics.items()}, {k: round(v, 4) for k, v in holdout.items()})
    return PolicyCandidate(run_id=run_id, workdir=str(workdir), symbol_path=str(symbol_path),
                           master_path=str(master_path), spec=spec, symbol_signature=symbol_signature,
                           master_signature=master_signature, train_metrics=train_metrics,
                           holdout_metrics={k: float(v) for k, v in holdout.items()}, dataset_id=data_id,
                           git_commit=commit)


# ------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class RegisteredAgent:
    agent: str
    version: str
    sha256: str
    artifact: str

    @property
    def triton_version(self) -> int:
        return int(self.version)


@dataclass(frozen=True)
class RegisteredPolicies:
    symbol: RegisteredAgent
    master: RegisteredAgent
    spec: FeatureSpec
    run_id: str

    def metadata(self) -> dict[str, Any]:
        return {"symbol_agent_version": self.symbol.version, "master_agent_version": self.master.version,
                "symbol_agent_sha256": self.symbol.sha256, "master_agent_sha256": self.master.sha256,
                "feature_spec_hash": self.spec.spec_hash(), "alias": "candidate", "mlflow_run_id": self.run_id}

    def versions(self) -> dict[str, str]:
        return {SYMBOL_AGENT: self.symbol.version, MASTER_AGENT: self.master.version}


def register_candidate(candidate: PolicyCandidate, ctx: PipelineContext) -> RegisteredPolicies:
    registered: dict[str, RegisteredAgent] = {}
    spec_json = json.loads(candidate.spec.canonical_json())
    for agent, path, signature in ((SYMBOL_AGENT, candidate.symbol_path, candidate.symbol_signature),
                                   (MASTER_AGENT, candidate.master_path, candidate.master_signature)):
        manifest = {"agent": agent, "feature_spec_hash": candidate.spec.spec_hash(),
                    "signature": signature.model_dump(mode="json"), "feature_spec": spec_json,
                    "git_commit": candidate.git_commit, "dataset_id": candidate.dataset_id,
                    "mlflow_run_id": candidate.run_id, "created_at": datetime.now(timezone.utc).isoformat()}
        artifact = write_signed_artifact(Path(path), root=ctx.paths.artifacts_root, agent=agent, manifest=manifest,
                                         keys=ctx.keys)
        metrics = {**candidate.train_metrics, **{f"holdout_{k}": v for k, v in candidate.holdout_metrics.items()}}
        result = ctx.registry.register(agent, artifact, signature=signature, metrics=metrics,
                                       params={"feature_spec_hash": candidate.spec.spec_hash()},
                                       dataset_id=candidate.dataset_id, git_commit=candidate.git_commit,
                                       run_id=candidate.run_id, aliases=("candidate",))
        registered[agent] = RegisteredAgent(agent=agent, version=str(result.version), sha256=result.sha256,
                                            artifact=str(artifact))
        logger.info("registered %s version %s (sha256 %s)", agent, result.version, result.sha256[:12])
    shutil.rmtree(candidate.workdir, ignore_errors=True)
    return RegisteredPolicies(symbol=registered[SYMBOL_AGENT], master=registered[MASTER_AGENT], spec=candidate.spec,
                              run_id=candidate.run_id)


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
        for agent in (registered.symbol, registered.master):
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
        obs_dims = {SYMBOL_AGENT: len(registered.spec.symbol.names), MASTER_AGENT: len(registered.spec.master.names)}
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
    symbols = trading_symbols(bars)
    spec = registered.spec
    loop_cfg = ctx.config.serving.loop
    if audit_url is None:
        # One audit database per replay, so a summary counts only its own rows.
        ctx.paths.staging_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        audit_url = f"sqlite:///{ctx.paths.staging_dir / f'audit-{stamp}.db'}"
    stack = ServingStack(ctx.paths, ctx.config, ports=ports or StackPorts.free(), model_repository=ctx.model_repository,
                         audit_url=audit_url)
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
