"""A v1 policy and a v2 policy (HybridRLObservation with sentiment + macro) served side by side by the real Triton.

Both are trained small through the real pipeline (MAPPO, signed artifacts, MLflow registry) and deployed into one
model repository as two versions of the same agent models; each is fed observations built by its own
FeatureService (v1: market features only; v2: plus the sentiment/macro records of the feed store). The spec hash
travels with each version, and a v1-width observation sent to the v2 version is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agents.export import load_policy
from contracts.features import FeatureSpec, master_feature_names, symbol_feature_names
from features.observation import ObservationBuilder, observation_checksum
from features.service import FeatureService, MarketSnapshot
from market_data.alt_data import MACRO, SENTIMENT, AltFeeds, FeedStore, SyntheticMacroSource, \
    SyntheticSentimentSource, materialise
from market_data.replay import bars_at
from market_data.source import load_market, trading_symbols
from marlops.candidates import alt_feeds_for
from marlops.pipeline import (
    PipelineContext,
    RegisteredPolicies,
    TrainingSettings,
    deploy_to_triton,
    fit_spec,
    register_candidate,
    train_candidate,
)
from serving.client import PolicyClient
from serving.errors import InferenceError
from serving.triton_process import TritonServer, pick_free_ports

pytestmark = pytest.mark.integration

SEED = 5
N_DAYS = 160


@dataclass(frozen=True)
class Deployed:
    bars: pd.DataFrame
    symbols: tuple[str, ...]
    v1: RegisteredPolicies
    v2: RegisteredPolicies
    store: FeedStore
    server: TritonServer
    ctx: PipelineContext


def _train(bars: pd.DataFrame, ctx: PipelineContext, version: int) -> RegisteredPolicies:
    spec = fit_spec(bars, ctx.config, seed=SEED, observation_version=version)
    candidate = train_candidate(bars, spec, ctx, training=TrainingSettings(seed=SEED, iterations=2, hidden=8))
    return register_candidate(candidate, ctx)


@pytest.fixture(scope="module")
def deployed(pipeline_ctx: PipelineContext) -> Iterator[Deployed]:
    ctx = pipeline_ctx
    assert ctx.config.features.observation_version == 1  # the default: v2 is opt-in
    bars = load_market("synthetic", seed=SEED, n_symbols=4, n_days=N_DAYS)
    symbols = tuple(trading_symbols(bars))
    v1 = _train(bars, ctx, 1)
    v2 = _train(bars, ctx, 2)
    for registered in (v1, v2):
        deploy_to_triton(registered, ctx, smoke_test=False)
    # The live feed store, as the hourly assets fill it (one bulk batch here: the same records, fewer files).
    store = FeedStore.under(ctx.paths.root)
    alt = ctx.config.features.alt_data
    start = (bars["timestamp"].min() - pd.Timedelta(days=7)).floor("h")
    end = bars["timestamp"].max().floor("h") + pd.Timedelta(hours=1)
    materialise(SENTIMENT, SyntheticSentimentSource(symbols, seed=alt.seed), store, start, end)
    materialise(MACRO, SyntheticMacroSource(seed=alt.seed), store, start, end)
    http, grpc, metrics = pick_free_ports(3)
    with TritonServer(ctx.model_repository, http_port=http, grpc_port=grpc, metrics_port=metrics,
                      workdir=ctx.paths.root / "triton-work") as server:
        for model in ("symbol_agent", "master_agent"):
            server.load_model(model)
        yield Deployed(bars=bars, symbols=symbols, v1=v1, v2=v2, store=store, server=server, ctx=ctx)


def _snapshot(deployed: Deployed, spec: FeatureSpec, alt: object | None) -> tuple[FeatureService, MarketSnapshot]:
    stamps = np.sort(deployed.bars["timestamp"].unique())
    ts = stamps[-3]
    service = FeatureService(spec, deployed.symbols, history=deployed.bars[deployed.bars["timestamp"] < ts], alt=alt)
    return service, service.on_bars(bars_at(deployed.bars, ts))


def _local(registered: RegisteredPolicies, agent: str) -> torch.jit.ScriptModule:
    return load_policy(Path(registered.agents[agent].artifact))


def test_serve_when_v1_and_v2_policies_loaded_then_each_serves_with_its_own_spec(deployed: Deployed) -> None:
    server, v1, v2 = deployed.server, deployed.v1, deployed.v2
    assert v1.spec.version == 1 and v2.spec.version == 2
    assert v1.spec.spec_hash() != v2.spec.spec_hash()
    versions = {v1.symbol.triton_version, v2.symbol.triton_version}
    assert len(versions) == 2 and all(server.is_model_ready("symbol_agent", v) for v in versions)
    # Each version carries its own spec hash in the model config Triton verifies at load.
    config = (deployed.ctx.model_repository / "symbol_agent" / "config.pbtxt").read_text()
    for registered in (v1, v2):
        assert registered.spec.spec_hash() in config
    # Two widths in one model: the config leaves the width to each version's signed signature.
    assert "dims: -1" in config
    alt = AltFeeds.from_store(deployed.store)
    levels = np.linspace(0.0, 1.0, len(deployed.symbols))
    for registered, provider in ((v1, None), (v2, alt)):
        service, snapshot = _snapshot(deployed, registered.spec, provider)
        observations = service.symbol_observations(snapshot, levels, 0.5)
        assert observations.shape == (len(deployed.symbols), len(symbol_feature_names(registered.spec.version)))
        assert snapshot.stale_feeds == {}
        with PolicyClient(server.grpc_url, "symbol_agent", model_version=str(registered.symbol.triton_version)) as c:
            served = c.infer(observations)
        with torch.inference_mode():
            probabilities, actions = _local(registered, "symbol_agent")(torch.from_numpy(observations))
        np.testing.assert_allclose(served.probabilities, probabilities.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(served.actions, actions.numpy())
        master = service.master_observation(snapshot, drawdown=0.02, gross_exposure=0.5)
        assert master.shape == (1, len(master_feature_names(registered.spec.version)))
        with PolicyClient(server.grpc_url, "master_agent", model_version=str(registered.master.triton_version)) as c:
            assert c.infer(master).actions.shape == (1,)


def test_serve_when_v1_observation_sent_to_v2_policy_then_refused_naming_widths(deployed: Deployed) -> None:
    service, snapshot = _snapshot(deployed, deployed.v1.spec, None)
    v1_rows = service.symbol_observations(snapshot, np.zeros(len(deployed.symbols)), 0.0)
    width_v2 = len(symbol_feature_names(2))
    with PolicyClient(deployed.server.grpc_url, "symbol_agent",
                      model_version=str(deployed.v2.symbol.triton_version)) as client:
        with pytest.raises(InferenceError, match=f"{v1_rows.shape[1]} features per row, the policy expects {width_v2}"):
            client.infer(v1_rows)
        # The model keeps serving the right width.
        v2_rows = np.zeros((2, width_v2), dtype=np.float32)
        assert client.infer(v2_rows).actions.shape == (2,)


def test_serve_when_v2_spec_served_from_feed_store_then_equals_training_observation(deployed: Deployed) -> None:
    spec = deployed.v2.spec
    service, snapshot = _snapshot(deployed, spec, AltFeeds.from_store(deployed.store))
    tensors = ObservationBuilder(spec).training_tensors(deployed.bars, alt=alt_feeds_for(deployed.bars,
                                                                                         deployed.ctx.config))
    k = tensors.timestamps.get_loc(snapshot.timestamp)
    assert observation_checksum(service.symbol_market_matrix(snapshot)) == observation_checksum(
        tensors.symbol_market[k])


def test_registry_when_v2_candidate_logged_then_manifest_names_version_and_alt_definitions(deployed: Deployed) -> None:
    manifest = json.loads((deployed.ctx.model_repository / "symbol_agent" / str(deployed.v2.symbol.triton_version)
                           / "model.manifest.json").read_text())
    spec = manifest["feature_spec"]
    assert spec["version"] == 2 and spec["definitions"]["sentiment_max_age_hours"] == 6.0
    assert manifest["signature"]["inputs"][0]["dims"] == [len(symbol_feature_names(2))]


def test_trading_service_when_v1_production_and_v2_candidate_routed_then_each_decides_with_its_own_spec(
        deployed: Deployed) -> None:
    """The live loop (trading service -> Triton -> gateway -> paper exchange) with a v1 production policy and a v2
    candidate on two symbols: one feature service per spec hash, each version decides its own symbols, the v2
    features come from the sentiment/macro records, and no inference fails."""
    from marlops.pipeline import replay_on_own_table
    from marlops.routing import PolicyRef, RoutingChange

    ctx, v1, v2 = deployed.ctx, deployed.v1, deployed.v2
    stamps = np.sort(deployed.bars["timestamp"].unique())
    candidates = deployed.symbols[:2]
    change = RoutingChange(
        policies={"production": PolicyRef("symbol_agent", v1.symbol.triton_version),
                  "candidate": PolicyRef("symbol_agent", v2.symbol.triton_version),
                  "sl_fallback": PolicyRef("sl_fallback", v1.agents["sl_fallback"].triton_version),
                  "master": PolicyRef("master_agent", v1.master.triton_version)},
        routes={"*": ("production", None), **{s: ("candidate", None) for s in candidates}})
    run = replay_on_own_table(deployed.bars, ctx, change=change, principal="test", reason="v1 and v2 side by side",
                              start=pd.Timestamp(stamps[-6]), spec=v1.spec, name="versions",
                              run_dir=ctx.paths.root / "versions-replay")
    decided = [o for o in run.outcomes if o.status == "decided"]
    assert len(decided) == 6
    v1_ref, v2_ref = f"symbol_agent/{v1.symbol.triton_version}", f"symbol_agent/{v2.symbol.triton_version}"
    for outcome in decided:
        assert outcome.policies == {v1_ref: len(deployed.symbols) - 2, v2_ref: 2}
        assert outcome.detail is not None and not outcome.detail.failed
        by_symbol = {d.symbol: d.policy_version for d in outcome.detail.decisions}
        assert {by_symbol[s] for s in candidates} == {v2_ref}
        assert {by_symbol[s] for s in deployed.symbols[2:]} == {v1_ref}
    assert not any(a["name"] in ("INFERENCE_FAILED", "ALT_FEED_STALE") for a in run.alerts_raised)
