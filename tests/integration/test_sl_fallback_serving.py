"""The SL-threshold fallback through the whole serving path: script, sign, export, the real tritonserver.

One server for the module: the fallback is served under its own model name, beside (not instead of) the
learned symbol agent, with the same tensors and the same feature spec hash.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from contracts.config import TritonConfig
from contracts.features import FeatureSpec
from contracts.policy import DEFAULT_ACTION_LEVELS
from features.market_features import compute_market_features
from features.observation import ObservationBuilder
from features.sl_signal import predict_sl
from features.spec import fit_feature_spec
from market_data.source import dataset_id, load_market
from registry.artifacts import write_signed_artifact
from registry.keys import load_or_create_signing_keys
from serving.client import PolicyClient
from serving.model_repository import export_policy
from serving.triton_process import TritonServer, pick_free_ports

from agents.export import policy_signature, save_policy, script_policy, symbol_action_labels
from agents.fallback import sl_threshold_actions, sl_threshold_policy

pytestmark = pytest.mark.integration

MODEL = "sl_fallback"


@dataclass(frozen=True)
class RealBatch:
    """Observations built by the ObservationBuilder and the raw values they were built from."""

    observations: np.ndarray  # [N, 15] float32
    sl_probabilities: np.ndarray  # [N] raw P(up)
    held_levels: np.ndarray  # [N] raw position levels


@dataclass(frozen=True)
class Served:
    server: TritonServer
    spec: FeatureSpec
    batch: RealBatch
    rule: dict[str, float]


def _real_batch(spec: FeatureSpec, bars: pd.DataFrame) -> RealBatch:
    rows = compute_market_features(bars)
    held = np.random.default_rng(3).choice(np.array(DEFAULT_ACTION_LEVELS), size=len(rows))
    observations = ObservationBuilder(spec).symbol_observations(rows, held, float(held.mean()))
    return RealBatch(observations=observations, sl_probabilities=predict_sl(spec.sl_model, rows), held_levels=held)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("sl_fallback")
    bars = load_market("synthetic", seed=7, n_symbols=4, n_days=120)
    spec = fit_feature_spec(bars)
    batch = _real_batch(spec, bars)
    # Thresholds equal to real probabilities of the batch, so some rows sit exactly on each threshold.
    ordered = np.sort(batch.sl_probabilities)
    n = len(ordered)
    rule = {"buy_threshold": float(ordered[n * 7 // 10]), "sell_threshold": float(ordered[n * 3 // 10])}
    signature = policy_signature("symbol_agent", len(spec.symbol.names), len(DEFAULT_ACTION_LEVELS),
                                 spec.spec_hash(), symbol_action_labels())
    saved = save_policy(script_policy(sl_threshold_policy(spec, **rule)), root / f"{MODEL}.ptc", signature=signature)
    keys = load_or_create_signing_keys(root / "keys", env={})
    artifact = write_signed_artifact(saved, directory=root / "artifacts", agent="symbol_agent", keys=keys,
                                     manifest={"signature": signature, "dataset_id": dataset_id(bars)})
    repository = root / "repository"
    export_policy(repository, MODEL, 1, artifact, keys.public_key_path, TritonConfig(max_batch_size=1024),
                  expected_feature_spec_hash=spec.spec_hash())
    http, grpc, metrics = pick_free_ports(3)
    with TritonServer(
        repository, http_port=http, grpc_port=grpc, metrics_port=metrics, workdir=root / "work"
    ) as server:
        server.load_model(MODEL)
        yield Served(server=server, spec=spec, batch=batch, rule=rule)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_when_real_observations_served_then_actions_equal_numpy_reference(
    served: Served, protocol: str
) -> None:
    server, batch = served.server, served.batch
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with PolicyClient(url, MODEL, protocol=protocol, model_version="1") as client:  # type: ignore[arg-type]
        output = client.infer(batch.observations)
    expected = sl_threshold_actions(batch.sl_probabilities, batch.held_levels, **served.rule, spec=served.spec)
    np.testing.assert_array_equal(output.actions, expected)
    np.testing.assert_array_equal(output.probabilities, np.eye(len(DEFAULT_ACTION_LEVELS), dtype=np.float32)[expected])
    # Thresholds inside the clip range: the rule on the raw values gives the same actions.
    np.testing.assert_array_equal(
        output.actions, sl_threshold_actions(batch.sl_probabilities, batch.held_levels, **served.rule)
    )
    assert set(np.unique(output.actions)) >= {0, len(DEFAULT_ACTION_LEVELS) - 1}


def test_infer_when_rows_sit_exactly_on_thresholds_then_buy_and_flat(served: Served) -> None:
    batch, rule = served.batch, served.rule
    at_buy = np.flatnonzero(batch.sl_probabilities == rule["buy_threshold"])
    at_sell = np.flatnonzero(batch.sl_probabilities == rule["sell_threshold"])
    assert len(at_buy) >= 1 and len(at_sell) >= 1
    with PolicyClient(served.server.grpc_url, MODEL, model_version="1") as client:
        actions = client.infer(batch.observations[np.concatenate([at_buy, at_sell])]).actions
    buy_action = DEFAULT_ACTION_LEVELS.index(1.0)
    assert actions.tolist() == [buy_action] * len(at_buy) + [DEFAULT_ACTION_LEVELS.index(0.0)] * len(at_sell)
