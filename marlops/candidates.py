"""Policy candidates: split -> walk-forward SL -> MAPPO -> signed artifacts -> registry -> held-out Go/No-Go.

The split is by time. The last `holdout_fraction` of the bars (after the feature warm-up) is held out: the feature
spec, the SL model and both policies are fitted on the bars before it, and the Go/No-Go verdict is computed on
it only. The held-out start is written into every artifact's signed manifest, so `marlops evaluate` can refuse
to score a policy on bars it was trained on.
"""

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.environment import EnvSettings, MarketEpisode
from agents.evaluation import POLICY, Evaluation, evaluate_held_out
from agents.fault_drill import plant_fault
from agents.export import (
    load_policy,
    master_action_labels,
    policy_signature,
    save_policy,
    script_policy,
    symbol_action_labels,
)
from agents.fallback import sl_threshold_policy
from agents.mappo import MAPPOConfig, train_mappo
from contracts.config import RLConfig, VolatilityProxyConfig
from contracts.features import FeatureSpec
from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES, PolicySignature
from data_checks.acknowledgements import DEFAULT_ACKNOWLEDGEMENTS, Acknowledgements, how_to_acknowledge
from data_checks.bars_suite import validate_bars
from data_checks.results import DataCheckResult
from features.market_features import WARMUP_BARS, compute_market_features
from features.alt_features import AltFreshness
from features.observation import ObservationBuilder, TrainingTensors
from features.sl_walk_forward import walk_forward_sl_probabilities
from features.spec import fit_feature_spec
from market_data.alt_data import AltFeeds, macro_source, sentiment_source
from market_data.source import dataset_id, trading_symbols
from marlops.context import PipelineContext
from marlops.errors import DataQualityError, PipelineError
from registry.artifacts import candidate_dir_for, write_signed_artifact
from registry.git import current_git_commit

logger = logging.getLogger(__name__)

SYMBOL_AGENT = "symbol_agent"
MASTER_AGENT = "master_agent"
SL_FALLBACK = "sl_fallback"
AGENTS: tuple[str, ...] = (SYMBOL_AGENT, MASTER_AGENT, SL_FALLBACK)
HOLDOUT_START_KEY = "holdout_start"


@dataclass(frozen=True)
class TrainingSettings:
    seed: int = 7
    iterations: int = 80
    hidden: int = 64
    fault_drill: str = ""  # agents.fault_drill: plant a defect on purpose (drills, the demo); "" = none

    def mappo(self) -> MAPPOConfig:
        return MAPPOConfig(seed=self.seed, iterations=self.iterations, hidden=self.hidden)


# ---------------------------------------------------------------------------------------------- data


def check_bars(bars: pd.DataFrame, volatility_proxy: VolatilityProxyConfig | None = None, *,
               acknowledgements: Acknowledgements | None = None) -> DataCheckResult:
    """Refuse bars the data checks flag (gaps, suspected splits, bad rows), naming the rows and the checks and how
    to let a reviewed row through (an entry in an acknowledgement file).

    The volatility series demanded follows `volatility_proxy` (default: the config default, `auto`, which
    demands no VIX: bars without one train on the realized-volatility fallback). `acknowledgements`: reviewed rows
    let through (data_checks/acknowledgements.py); the result lists them."""
    result = validate_bars(bars, volatility_proxy=volatility_proxy or VolatilityProxyConfig(),
                           acknowledgements=acknowledgements)
    if not result.success:
        path = acknowledgements.source if acknowledgements is not None and acknowledgements.source \
            else DEFAULT_ACKNOWLEDGEMENTS
        hint = how_to_acknowledge(result, bars.reset_index(drop=True), path)
        if hint and acknowledgements is None:
            hint += ("\n(Another file: `marlops train --acknowledgements PATH`, or the Dagster market_data resource's "
                     "`acknowledgements`.)")
        raise DataQualityError(result, hint=hint)
    return result


ACKNOWLEDGEMENTS_ARTIFACT_DIR = "data_acknowledgements"


def _log_acknowledgements(run: Any, acknowledgements: Acknowledgements | None) -> None:
    """The acknowledgement file as an artifact of the training run, its entry count and sha256 as params and tags:
    which flagged rows a person let into this training set, and who, stays with the run."""
    count = len(acknowledgements) if acknowledgements is not None else 0
    facts = {"data_acknowledgements_count": str(count)}
    if acknowledgements is not None and count:
        facts |= {"data_acknowledgements_sha256": acknowledgements.file_sha256,
                  "data_acknowledgements_fingerprint": acknowledgements.fingerprint()}
    run.log_params(facts)
    run.set_tags(facts | ({"data_acknowledgements_file": acknowledgements.source} if count else {}))
    if acknowledgements is not None and count and acknowledgements.source:
        run.client.log_artifact(run.run_id, acknowledgements.source, ACKNOWLEDGEMENTS_ARTIFACT_DIR)
        run.client.log_dict(run.run_id, json.loads(acknowledgements.canonical_json()),
                            f"{ACKNOWLEDGEMENTS_ARTIFACT_DIR}/canonical_entries.json")


def holdout_start(bars: pd.DataFrame, holdout_fraction: float) -> pd.Timestamp:
    """First held-out timestamp: the last `holdout_fraction` of the bars after the feature warm-up."""
    stamps = np.sort(bars["timestamp"].unique())[WARMUP_BARS:]
    held = int(round(len(stamps) * holdout_fraction))
    if len(stamps) < 2 or held < 1 or held >= len(stamps):
        raise PipelineError(
            f"cannot hold out {holdout_fraction:.0%} of {len(stamps)} bars after the {WARMUP_BARS}-bar warm-up: "
            "need more bars (or another walk_forward.holdout_fraction in config/rl/evaluation.yaml)"
        )
    return pd.Timestamp(stamps[len(stamps) - held])


def training_part(bars: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    return bars[bars["timestamp"] < start].reset_index(drop=True)


def alt_feeds_for(bars: pd.DataFrame, config: RLConfig) -> AltFeeds:
    """The sentiment/macro records a v2 spec is fitted, trained and evaluated on: the configured sources
    (config/rl/features.yaml `alt_data`; synthetic by default) over the bars' span plus a week before the first
    bar, so the first bars already have an as-of record. Serving reads the same records from the FeedStore the
    hourly Dagster assets fill."""
    alt = config.features.alt_data
    first, last = pd.Timestamp(bars["timestamp"].min()), pd.Timestamp(bars["timestamp"].max())
    start, end = (first - pd.Timedelta(days=7)).floor("h"), last.floor("h") + pd.Timedelta(hours=1)
    return AltFeeds.from_sources(sentiment_source(alt.sentiment_source, symbols=trading_symbols(bars), seed=alt.seed),
                                 macro_source(alt.macro_source, seed=alt.seed), start, end)


def _alt_for_spec(bars: pd.DataFrame, spec: FeatureSpec, config: RLConfig, alt: AltFeeds | None) -> AltFeeds | None:
    return None if spec.version < 2 else (alt if alt is not None else alt_feeds_for(bars, config))


def fit_spec(bars: pd.DataFrame, config: RLConfig, *, seed: int, observation_version: int | None = None,
             alt: AltFeeds | None = None) -> FeatureSpec:
    """Feature spec and SL model fitted on the training part only, with the configured volatility proxy
    (`serving.market_data.volatility_proxy`) applied to the raw bars and named in the spec.

    `observation_version` (default: config/rl/features.yaml, itself 1 by default) 2 fits HybridRLObservation v2
    with the sentiment/macro records of `alt` (default: alt_feeds_for)."""
    start = holdout_start(bars, config.evaluation.walk_forward.holdout_fraction)
    version = observation_version or config.features.observation_version
    freshness = AltFreshness(config.features.alt_data.sentiment_max_age_hours,
                             config.features.alt_data.macro_max_age_hours)
    v2 = {} if version < 2 else {"observation_version": version, "freshness": freshness,
                                 "alt": alt if alt is not None else alt_feeds_for(bars, config)}
    spec = fit_feature_spec(training_part(bars, start), seed=seed,
                            volatility_proxy=config.serving.market_data.volatility_proxy, **v2)
    logger.info("fitted %s v%d on bars before %s (volatility input %s), spec hash %s", spec.name, spec.version,
                start.date(), spec.volatility_source, spec.spec_hash()[:12])
    return spec


def episode_of(tensors: TrainingTensors, spec: FeatureSpec, keep: np.ndarray | None = None) -> MarketEpisode:
    rows = np.arange(len(tensors.timestamps)) if keep is None else keep
    return MarketEpisode(
        timestamps=tensors.timestamps[rows],
        symbols=tensors.symbols,
        symbol_market=tensors.symbol_market[rows],
        master_market=tensors.master_market[rows],
        closes=tensors.closes[rows],
        clip=spec.clip,
        observation_version=spec.version,
    )


def training_episode(bars: pd.DataFrame, spec: FeatureSpec, config: RLConfig,
                     alt: AltFeeds | None = None) -> MarketEpisode:
    """The training bars with walk-forward (out-of-sample) SL predictions in the observations (v2 specs: plus the
    as-of sentiment/macro records of `alt`, default alt_feeds_for)."""
    walk = config.evaluation.walk_forward
    train = training_part(bars, holdout_start(bars, walk.holdout_fraction))
    builder = ObservationBuilder(spec)
    inputs = builder.market_inputs(train)  # the spec's volatility proxy applied, as in serving
    sl = walk_forward_sl_probabilities(compute_market_features(inputs), inputs, min_train_bars=walk.sl_min_train_bars,
                                       refit_every=walk.sl_refit_every)
    tensors = builder.training_tensors(train, sl_probabilities=sl, alt=_alt_for_spec(bars, spec, config, alt))
    if len(tensors.timestamps) < 20:
        raise PipelineError(f"only {len(tensors.timestamps)} training bars after warm-up and SL walk-forward; need 20+")
    return episode_of(tensors, spec)


def held_out_episode(bars: pd.DataFrame, spec: FeatureSpec, start: pd.Timestamp,
                     alt: AltFeeds | None = None) -> tuple[MarketEpisode, np.ndarray]:
    """Held-out bars (>= `start`) as scored by the served SL model; earlier bars only feed the warm-up windows.
    `alt`: the sentiment/macro records a v2 spec joins (required for v2 specs)."""
    tensors = ObservationBuilder(spec).training_tensors(bars, alt=alt)
    keep = np.flatnonzero(tensors.timestamps >= start)
    if len(keep) < 2:
        last = bars["timestamp"].max()
        raise PipelineError(
            f"no held-out bars: the policy was trained on bars before {start.isoformat()} and the data ends at "
            f"{pd.Timestamp(last).isoformat()}; evaluate it on later bars"
        )
    return episode_of(tensors, spec, keep), tensors.benchmark_closes[keep]


def env_settings(config: RLConfig) -> EnvSettings:
    return EnvSettings.from_loop(config.serving.loop)


# ------------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class PolicyCandidate:
    run_id: str
    workdir: str
    paths: dict[str, str]  # agent -> TorchScript file
    signatures: dict[str, PolicySignature]
    spec: FeatureSpec
    holdout_start: str
    train_metrics: dict[str, float]
    dataset_id: str
    git_commit: str

    def metadata(self) -> dict[str, Any]:
        return {"mlflow_run_id": self.run_id, "feature_spec_hash": self.spec.spec_hash(), "dataset_id": self.dataset_id,
                HOLDOUT_START_KEY: self.holdout_start, **{k: float(v) for k, v in self.train_metrics.items()}}


def signatures_for(spec: FeatureSpec) -> dict[str, PolicySignature]:
    spec_hash = spec.spec_hash()
    symbol_dim, master_dim = len(spec.symbol.names), len(spec.master.names)
    n_levels = len(DEFAULT_ACTION_LEVELS)
    return {
        SYMBOL_AGENT: policy_signature(SYMBOL_AGENT, symbol_dim, n_levels, spec_hash, symbol_action_labels()),
        MASTER_AGENT: policy_signature(MASTER_AGENT, master_dim, len(DIRECTIVE_MODES), spec_hash, master_action_labels()),
        SL_FALLBACK: policy_signature(SL_FALLBACK, symbol_dim, n_levels, spec_hash, symbol_action_labels()),
    }


def train_candidate(bars: pd.DataFrame, spec: FeatureSpec, ctx: PipelineContext, *, training: TrainingSettings,
                    on_iteration: Callable[[int, dict[str, float]], None] | None = None,
                    acknowledgements: Acknowledgements | None = None) -> PolicyCandidate:
    """Train the symbol and master policies with MAPPO on the training part; build the SL fallback beside them.

    `acknowledgements`: the reviewed rows the bars were let through with (check_bars); they enter the dataset id
    and the file is logged with the MLflow run."""
    config = ctx.config
    start = holdout_start(bars, config.evaluation.walk_forward.holdout_fraction)
    episode = training_episode(bars, spec, config)
    data_id = dataset_id(bars, acknowledgements=acknowledgements)
    commit = current_git_commit(ctx.paths.project_root)
    mappo = training.mappo()
    workdir = Path(tempfile.mkdtemp(prefix="candidate-", dir=ctx.paths.root))
    params = {**{k: str(v) for k, v in mappo.model_dump().items()}, "dataset_id": data_id, "git_commit": commit,
              "feature_spec_hash": spec.spec_hash(), "n_symbols": str(len(episode.symbols)),
              "train_first_bar": episode.timestamps[0].isoformat(), "train_last_bar": episode.timestamps[-1].isoformat(),
              "train_bars": str(episode.n_steps), HOLDOUT_START_KEY: start.isoformat(),
              **({"fault_drill": training.fault_drill} if training.fault_drill else {})}
    with ctx.registry.start_run("train-policies", params=params) as run:
        _log_acknowledgements(run, acknowledgements)

        def log(iteration: int, metrics: dict[str, float]) -> None:
            run.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)}, step=iteration)
            if on_iteration is not None:
                on_iteration(iteration, metrics)

        result = train_mappo(episode, config.risk, mappo, settings=env_settings(config), on_iteration=log)
        last = result.history[-1]
        train_metrics = {f"train_{k}": float(v) for k, v in last.items() if k != "iteration"}
        run.client.log_dict(run.run_id, json.loads(spec.canonical_json()), "feature_spec.json")
        run_id = run.run_id
    fallback_cfg = config.evaluation.sl_fallback
    fallback = sl_threshold_policy(spec, buy_threshold=fallback_cfg.buy_threshold,
                                   sell_threshold=fallback_cfg.sell_threshold, buy_level=fallback_cfg.buy_level)
    signatures = signatures_for(spec)
    symbol_policy = result.symbol_policy
    if training.fault_drill:
        symbol_policy = plant_fault(symbol_policy, training.fault_drill, full_batch=len(episode.symbols),
                                    obs_dim=len(spec.symbol.names))
        logger.warning("FAULT DRILL %r planted in the symbol policy of run %s (recorded in its parameters)",
                       training.fault_drill, run_id)
    paths = {
        SYMBOL_AGENT: str(save_policy(script_policy(symbol_policy), workdir / f"{SYMBOL_AGENT}.ptc")),
        MASTER_AGENT: str(save_policy(script_policy(result.master_policy), workdir / f"{MASTER_AGENT}.ptc")),
        SL_FALLBACK: str(save_policy(script_policy(fallback), workdir / f"{SL_FALLBACK}.ptc")),
    }
    logger.info("trained candidate (run %s): final episode return %.3f, sharpe %.2f", run_id,
                last["episode_return"], last["episode_sharpe"])
    return PolicyCandidate(run_id=run_id, workdir=str(workdir), paths=paths, signatures=signatures, spec=spec,
                           holdout_start=start.isoformat(), train_metrics=train_metrics, dataset_id=data_id,
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
    agents: dict[str, RegisteredAgent]
    spec: FeatureSpec
    run_id: str
    holdout_start: str

    @property
    def symbol(self) -> RegisteredAgent:
        return self.agents[SYMBOL_AGENT]

    @property
    def master(self) -> RegisteredAgent:
        return self.agents[MASTER_AGENT]

    @property
    def fallback(self) -> RegisteredAgent:
        return self.agents[SL_FALLBACK]

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"feature_spec_hash": self.spec.spec_hash(), "alias": "candidate",
                               "mlflow_run_id": self.run_id, HOLDOUT_START_KEY: self.holdout_start}
        for name, agent in self.agents.items():
            out[f"{name}_version"] = agent.version
            out[f"{name}_sha256"] = agent.sha256
        return out

    def versions(self) -> dict[str, str]:
        return {name: agent.version for name, agent in self.agents.items()}


def register_candidate(candidate: PolicyCandidate, ctx: PipelineContext) -> RegisteredPolicies:
    registered: dict[str, RegisteredAgent] = {}
    spec_json = json.loads(candidate.spec.canonical_json())
    for agent in AGENTS:
        signature = candidate.signatures[agent]
        manifest = {"agent": agent, "feature_spec_hash": candidate.spec.spec_hash(),
                    "signature": signature.model_dump(mode="json"), "feature_spec": spec_json,
                    "git_commit": candidate.git_commit, "dataset_id": candidate.dataset_id,
                    "mlflow_run_id": candidate.run_id, HOLDOUT_START_KEY: candidate.holdout_start,
                    "created_at": datetime.now(timezone.utc).isoformat()}
        artifact = write_signed_artifact(Path(candidate.paths[agent]), agent=agent, manifest=manifest, keys=ctx.keys,
                                         directory=candidate_dir_for(ctx.paths.artifacts_root, candidate.run_id))
        result = ctx.registry.register(agent, artifact, signature=signature, metrics=candidate.train_metrics,
                                       params={"feature_spec_hash": candidate.spec.spec_hash(),
                                               HOLDOUT_START_KEY: candidate.holdout_start},
                                       dataset_id=candidate.dataset_id, git_commit=candidate.git_commit,
                                       run_id=candidate.run_id, aliases=("candidate",))
        registered[agent] = RegisteredAgent(agent=agent, version=str(result.version), sha256=result.sha256,
                                            artifact=str(artifact))
        logger.info("registered %s version %s (sha256 %s)", agent, result.version, result.sha256[:12])
    shutil.rmtree(candidate.workdir, ignore_errors=True)
    return RegisteredPolicies(agents=registered, spec=candidate.spec, run_id=candidate.run_id,
                              holdout_start=candidate.holdout_start)


def registered_from_registry(ctx: PipelineContext, versions: dict[str, str]) -> RegisteredPolicies:
    """The registered candidate with these versions, rebuilt from the registry: each artifact downloaded and
    verified (signature, sha256, feature spec) into `<MARLOPS_HOME>/approved/<run>/`. What an approved RFC names
    is what gets deployed, whatever was trained since."""
    agents: dict[str, RegisteredAgent] = {}
    manifest: dict[str, Any] = {}
    run_id = ""
    for agent in AGENTS:
        if agent not in versions:
            raise PipelineError(f"{agent}: no version given; an RFC names all of {', '.join(AGENTS)}")
        policy = ctx.registry.resolve(agent, str(versions[agent]))
        run_id = run_id or policy.run_id
        if policy.run_id != run_id:
            raise PipelineError(f"{agent} v{policy.version} comes from run {policy.run_id}, not {run_id}: the versions "
                                "of one candidate are registered from one training run")
        local, manifest_of = ctx.registry.download_verified(agent, policy.version, ctx.paths.root / "approved" / run_id,
                                                           ctx.keys.public_pem())
        manifest = manifest_of if agent == SYMBOL_AGENT else manifest
        agents[agent] = RegisteredAgent(agent=agent, version=policy.version, sha256=policy.sha256, artifact=str(local))
    spec = FeatureSpec.model_validate(manifest["feature_spec"])
    return RegisteredPolicies(agents=agents, spec=spec, run_id=run_id, holdout_start=str(manifest[HOLDOUT_START_KEY]))


# ---------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ValidationResult:
    evaluation: Evaluation
    files: dict[str, str]
    versions: dict[str, str]
    holdout_start: str

    @property
    def passed(self) -> bool:
        return self.evaluation.report.verdict.passed

    def as_dict(self) -> dict[str, Any]:
        return {"versions": self.versions, HOLDOUT_START_KEY: self.holdout_start, "files": self.files,
                **self.evaluation.report.as_dict()}

    def metadata_metrics(self) -> dict[str, float]:
        """The policy's held-out metrics (finite ones)."""
        return {k: float(v) for k, v in self.evaluation.report.metrics[POLICY].items() if np.isfinite(v)}

    def metadata(self) -> dict[str, Any]:
        report = self.evaluation.report
        policy = report.metrics[POLICY]
        out: dict[str, Any] = {"go_no_go": "GO" if self.passed else "NO-GO",
                               "held_out": f"{report.held_out_start[:10]} .. {report.held_out_end[:10]}"}
        out.update({f"policy_{k}": float(v) for k, v in policy.items() if np.isfinite(v)})
        out.update({f"beats_{name}": bool(c["beats"]) for name, c in report.comparisons.items()})
        return out


def evaluate_policies(bars: pd.DataFrame, local: dict[str, Path], spec: FeatureSpec, start: pd.Timestamp,
                      ctx: PipelineContext, out_dir: Path) -> Evaluation:
    episode, bench = held_out_episode(bars, spec, start, alt=_alt_for_spec(bars, spec, ctx.config, None))
    modules = {agent: load_policy(path) for agent, path in local.items()}
    evaluation = evaluate_held_out(episode, bench, ctx.config.risk, ctx.config.evaluation,
                                   symbol_policy=modules[SYMBOL_AGENT], master_policy=modules[MASTER_AGENT],
                                   fallback_policy=modules[SL_FALLBACK], settings=env_settings(ctx.config))
    return evaluation


def validate_candidate(bars: pd.DataFrame, registered: RegisteredPolicies, ctx: PipelineContext) -> ValidationResult:
    """Held-out Go/No-Go of a registered candidate; the report goes to its MLflow run and its versions' tags."""
    local = {name: Path(agent.artifact) for name, agent in registered.agents.items()}
    out_dir = ctx.paths.root / "validation" / f"run-{registered.run_id}"
    evaluation = evaluate_policies(bars, local, registered.spec, pd.Timestamp(registered.holdout_start), ctx, out_dir)
    result = ValidationResult(evaluation=evaluation, files={k: str(v) for k, v in evaluation.write(out_dir).items()},
                              versions=registered.versions(), holdout_start=registered.holdout_start)
    _record_validation(ctx, registered.run_id, registered.versions(), result, out_dir)
    return result


def _record_validation(ctx: PipelineContext, run_id: str, versions: dict[str, str], result: ValidationResult,
                       out_dir: Path) -> None:
    client = ctx.registry.client
    report = result.evaluation.report
    for name, metrics in report.metrics.items():
        for key, value in metrics.items():
            if np.isfinite(value):
                client.log_metric(run_id, f"holdout.{name}.{key}", float(value))
    client.log_artifacts(run_id, str(out_dir), "validation")
    verdict = "GO" if result.passed else "NO-GO"
    for agent, version in versions.items():
        client.set_model_version_tag(agent, version, "go_no_go", verdict)
        client.set_model_version_tag(agent, version, "go_no_go_failed", ",".join(report.verdict.as_dict()["failed"]))  # type: ignore[arg-type]
    logger.info("validation of run %s: %s", run_id, verdict)


def resolve_companions(ctx: PipelineContext, policy: str) -> dict[str, str]:
    """symbol_agent version or alias -> the versions of all three agents registered from the same MLflow run."""
    symbol = ctx.registry.resolve(SYMBOL_AGENT, policy)
    versions = {SYMBOL_AGENT: symbol.version}
    for agent in (MASTER_AGENT, SL_FALLBACK):
        same_run = [p.version for p in ctx.registry.list_versions(agent) if p.run_id == symbol.run_id]
        if not same_run:
            raise PipelineError(f"{agent}: no version registered from run {symbol.run_id} (that of {SYMBOL_AGENT} "
                                f"v{symbol.version}); register the candidate's three policies together")
        versions[agent] = same_run[-1]
    return versions


def evaluate_registered(bars: pd.DataFrame, policy: str, ctx: PipelineContext, out_dir: Path) -> ValidationResult:
    """`marlops evaluate`: download and verify a registered version (or alias) and its companions, then score them
    on the bars of `bars` at or after the held-out start signed into their manifests."""
    versions = resolve_companions(ctx, policy)
    symbols = trading_symbols(bars)
    with tempfile.TemporaryDirectory(prefix="evaluate-", dir=ctx.paths.root) as tmp:
        local: dict[str, Path] = {}
        manifests: dict[str, dict[str, Any]] = {}
        for agent, version in versions.items():
            local[agent], manifests[agent] = ctx.registry.download_verified(agent, version, Path(tmp) / agent,
                                                                            ctx.keys.public_pem())
        manifest = manifests[SYMBOL_AGENT]
        spec = FeatureSpec.model_validate(manifest["feature_spec"])
        start = manifest.get(HOLDOUT_START_KEY)
        if not start:
            raise PipelineError(f"{SYMBOL_AGENT} v{versions[SYMBOL_AGENT]}: manifest has no {HOLDOUT_START_KEY}; "
                                "it predates held-out evaluation and cannot be scored honestly")
        logger.info("evaluating %s on %d symbols from %s", versions, len(symbols), start)
        evaluation = evaluate_policies(bars, local, spec, pd.Timestamp(start), ctx, out_dir)
    return ValidationResult(evaluation=evaluation, files={k: str(v) for k, v in evaluation.write(out_dir).items()},
                            versions=versions, holdout_start=str(start))
