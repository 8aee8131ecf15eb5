import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import features.observation as observation_module
from contracts.features import FeatureSpec
from contracts.policy import DEFAULT_ACTION_LEVELS
from features.market_features import compute_market_features
from features.observation import ObservationBuilder
from features.spec import fit_feature_spec
from market_data.source import load_market

from agents.errors import FallbackConfigError, InputShapeError
from agents.export import policy_signature, save_policy, script_policy, symbol_action_labels
from agents.fallback import (
    POSITION_FEATURE,
    SL_FEATURE,
    FeatureScale,
    SLThresholdPolicy,
    sl_threshold_actions,
    sl_threshold_policy,
)

BUY, SELL = 0.55, 0.45
RULE = {"buy_threshold": BUY, "sell_threshold": SELL}
MIDPOINTS = (0.125, 0.375, 0.625, 0.875)  # between DEFAULT_ACTION_LEVELS, written out by hand


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_market("synthetic", seed=7, n_symbols=4, n_days=120)


@pytest.fixture(scope="module")
def spec(bars: pd.DataFrame) -> FeatureSpec:
    return fit_feature_spec(bars)


@pytest.fixture(scope="module")
def market_row(bars: pd.DataFrame) -> pd.DataFrame:
    """One real row of raw market features, the template every hand-built observation starts from."""
    return compute_market_features(bars).iloc[[40]]


def observations(spec: FeatureSpec, market_row: pd.DataFrame, probabilities, held) -> np.ndarray:
    """Observations built by the real ObservationBuilder, with the SL model's output replaced by `probabilities`."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    rows = market_row.iloc[np.zeros(len(probabilities), dtype=int)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(observation_module, "predict_sl", lambda _model, _rows: probabilities)
        return ObservationBuilder(spec).symbol_observations(rows, np.asarray(held, dtype=np.float64), 0.4)


def act(policy: torch.nn.Module, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        probabilities, actions = policy(torch.from_numpy(batch))
    return probabilities.numpy(), actions.numpy()


def test_spec_when_fitted_then_sl_thresholds_inside_clip_range(spec: FeatureSpec) -> None:
    # The rule tests below assume the thresholds are resolvable by the observation (not clipped away).
    i = spec.symbol.names.index(SL_FEATURE)
    for threshold in (BUY, SELL):
        assert abs((threshold - spec.symbol.means[i]) / spec.symbol.stds[i]) < spec.clip


@pytest.mark.parametrize(
    ("probability", "held", "expected"),
    [
        (0.70, 0.0, 4),  # above buy -> buy level 1.0
        (BUY, 0.5, 4),  # exactly at buy -> buy
        (BUY - 1e-6, 0.5, 2),  # just below buy -> hold 0.5
        (0.50, 0.75, 3),  # in the band -> hold 0.75
        (SELL + 1e-6, 1.0, 4),  # just above sell -> hold 1.0
        (SELL, 1.0, 0),  # exactly at sell -> flat
        (0.30, 0.75, 0),  # below sell -> flat
        (0.50, 0.30, 1),  # band, off-grid held level -> nearest (0.25)
        (0.50, 0.125, 0),  # band, held exactly between 0 and 0.25 -> the lower level
        (0.50, 0.126, 1),
        (0.50, -0.4, 0),  # held below every level -> lowest
        (0.50, 1.3, 4),  # held above every level -> highest
    ],
)
def test_forward_when_hand_built_observation_then_action_follows_rule(
    spec: FeatureSpec, market_row: pd.DataFrame, probability: float, held: float, expected: int
) -> None:
    batch = observations(spec, market_row, [probability], [held])
    probabilities, actions = act(sl_threshold_policy(spec, **RULE), batch)
    assert actions.tolist() == [expected]
    assert probabilities.dtype == np.float32 and probabilities.shape == (1, len(DEFAULT_ACTION_LEVELS))
    assert probabilities[0].tolist() == [1.0 if a == expected else 0.0 for a in range(len(DEFAULT_ACTION_LEVELS))]
    raw = sl_threshold_actions(np.array([probability]), np.array([held]), **RULE)
    assert raw.tolist() == [expected]


def test_forward_when_buy_level_is_half_then_buy_maps_to_that_level(
    spec: FeatureSpec, market_row: pd.DataFrame
) -> None:
    policy = sl_threshold_policy(spec, **RULE, buy_level=0.5)
    _, actions = act(policy, observations(spec, market_row, [0.9, 0.5, 0.1], [1.0, 1.0, 1.0]))
    assert actions.tolist() == [2, 4, 0]


def test_forward_when_many_random_inputs_then_equals_numpy_reference_bit_for_bit(
    spec: FeatureSpec, market_row: pd.DataFrame
) -> None:
    rng = np.random.default_rng(11)
    i = spec.symbol.names.index(SL_FEATURE)
    mean, std = spec.symbol.means[i], spec.symbol.stds[i]
    # Exactly-at values and their float64 neighbours, values clipped on both sides, and a random bulk.
    edges = np.array([BUY, SELL, mean - 7 * std, mean + 7 * std, 0.0, 1.0])
    edges = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    probabilities = np.concatenate([edges, rng.uniform(0.0, 1.0, 20_000)])
    held_edges = np.concatenate([MIDPOINTS, np.nextafter(MIDPOINTS, -np.inf), np.nextafter(MIDPOINTS, np.inf)])
    held = np.concatenate([held_edges, rng.uniform(-0.5, 1.5, len(probabilities) - len(held_edges))])
    held = rng.permutation(held)
    policy = sl_threshold_policy(spec, **RULE)
    _, actions = act(policy, observations(spec, market_row, probabilities, held))
    reference = sl_threshold_actions(probabilities, held, **RULE, spec=spec)
    np.testing.assert_array_equal(actions, reference)
    # The raw rule agrees too, at the exact threshold values included; a value one float64 step beside a
    # bound is finer than the float32 observation can resolve, so those rows are left out of this check.
    resolved = ~np.isin(probabilities, edges[6:]) & ~np.isin(held, held_edges[4:])
    raw = sl_threshold_actions(probabilities[resolved], held[resolved], **RULE)
    np.testing.assert_array_equal(actions[resolved], raw)
    assert resolved.sum() > 19_000 and np.isin([BUY, SELL], probabilities[resolved]).all()
    assert set(np.unique(actions)) == set(range(len(DEFAULT_ACTION_LEVELS)))


def test_forward_when_buy_threshold_beyond_clip_then_warns_and_clipped_probability_never_buys(
    spec: FeatureSpec, market_row: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    i = spec.symbol.names.index(SL_FEATURE)
    beyond = spec.symbol.means[i] + (spec.clip + 1) * spec.symbol.stds[i]
    assert beyond < 1.0
    with caplog.at_level(logging.WARNING, logger="agents.fallback"):
        policy = sl_threshold_policy(spec, buy_threshold=beyond, sell_threshold=SELL)
    assert "buy_threshold" in caplog.text and "beyond the observation clip" in caplog.text
    probabilities = np.array([beyond, 1.0])
    _, actions = act(policy, observations(spec, market_row, probabilities, [0.25, 0.25]))
    assert actions.tolist() == [1, 1]
    assert sl_threshold_actions(probabilities, np.array([0.25, 0.25]), buy_threshold=beyond, sell_threshold=SELL,
                                spec=spec).tolist() == [1, 1]
    assert sl_threshold_actions(probabilities, np.array([0.25, 0.25]), buy_threshold=beyond,
                                sell_threshold=SELL).tolist() == [4, 4]


def test_script_policy_when_fallback_scripted_then_outputs_equal_eager(
    spec: FeatureSpec, market_row: pd.DataFrame
) -> None:
    policy = sl_threshold_policy(spec, **RULE)
    scripted = script_policy(policy)
    rng = np.random.default_rng(5)
    batch = observations(spec, market_row, rng.uniform(0.2, 0.8, 500), rng.uniform(0.0, 1.0, 500))
    eager_probabilities, eager_actions = act(policy, batch)
    scripted_probabilities, scripted_actions = act(scripted, batch)
    assert isinstance(scripted, torch.jit.ScriptModule)
    np.testing.assert_array_equal(scripted_actions, eager_actions)
    np.testing.assert_array_equal(scripted_probabilities, eager_probabilities)
    assert scripted_actions.dtype == np.int64 and scripted_probabilities.dtype == np.float32


@pytest.mark.parametrize(("batch", "shown"), [(torch.zeros(3, 14), "[3, 14]"), (torch.zeros(15), "[15]")])
def test_forward_when_observation_shape_wrong_then_runtime_error_names_expected_shape(
    spec: FeatureSpec, batch: torch.Tensor, shown: str
) -> None:
    policy = sl_threshold_policy(spec, **RULE)
    for module in (policy, script_policy(policy)):
        with pytest.raises((RuntimeError, torch.jit.Error), match=r"expects observations of shape \[batch, 15\], got .*"
                           + shown.replace("[", r"\[").replace("]", r"\]")):
            module(batch)


def test_forward_when_observations_float64_then_runtime_error_asks_for_float32(spec: FeatureSpec) -> None:
    policy = sl_threshold_policy(spec, **RULE)
    for module in (policy, script_policy(policy)):
        with pytest.raises((RuntimeError, torch.jit.Error), match=r"expects float32 observations; convert the batch"):
            module(torch.zeros(2, 15, dtype=torch.float64))


def test_save_policy_when_fallback_saved_twice_then_bytes_identical(spec: FeatureSpec, tmp_path: Path) -> None:
    signature = policy_signature("symbol_agent", len(spec.symbol.names), len(DEFAULT_ACTION_LEVELS),
                                 spec.spec_hash(), symbol_action_labels())
    first = save_policy(script_policy(sl_threshold_policy(spec, **RULE)), tmp_path / "a.ptc", signature=signature)
    second = save_policy(script_policy(sl_threshold_policy(spec, **RULE)), tmp_path / "b.ptc", signature=signature)
    assert first.read_bytes() == second.read_bytes()
    other = save_policy(script_policy(sl_threshold_policy(spec, buy_threshold=0.6, sell_threshold=SELL)),
                        tmp_path / "c.ptc", signature=signature)
    assert other.read_bytes() != first.read_bytes()


def test_save_policy_when_saved_by_processes_with_different_hash_seeds_then_bytes_identical(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from agents.export import save_policy, script_policy\n"
        "from agents.fallback import FeatureScale, SLThresholdPolicy\n"
        "policy = SLThresholdPolicy(15, FeatureScale(10, 0.5, 0.07), FeatureScale(13, 0.0, 1.0),\n"
        "                           buy_threshold=0.55, sell_threshold=0.45, buy_level_index=4)\n"
        "save_policy(script_policy(policy), sys.argv[1])\n"
    )
    paths = [tmp_path / f"hash_seed_{seed}.ptc" for seed in (3, 4)]
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONHASHSEED": str(seed)})
        for seed, path in zip((3, 4), paths)
    ]
    errors = [run.communicate(timeout=120)[1].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.mark.parametrize(
    ("buy", "sell", "message"),
    [
        (0.45, 0.55, r"0 <= sell_threshold < buy_threshold <= 1, got sell_threshold=0.55, buy_threshold=0.45"),
        (0.5, 0.5, r"got sell_threshold=0.5, buy_threshold=0.5"),
        (1.2, 0.4, r"buy_threshold=1.2"),
        (0.6, -0.1, r"sell_threshold=-0.1"),
        (float("nan"), 0.3, r"thresholds must be finite, got buy_threshold=nan"),
    ],
)
def test_sl_threshold_policy_when_thresholds_invalid_then_error_names_them(
    spec: FeatureSpec, buy: float, sell: float, message: str
) -> None:
    with pytest.raises(FallbackConfigError, match=message):
        sl_threshold_policy(spec, buy_threshold=buy, sell_threshold=sell)
    with pytest.raises(FallbackConfigError, match=message):
        sl_threshold_actions(np.array([0.5]), np.array([0.0]), buy_threshold=buy, sell_threshold=sell)


def test_sl_threshold_policy_when_buy_level_not_an_action_level_then_error_lists_levels(spec: FeatureSpec) -> None:
    with pytest.raises(FallbackConfigError, match=r"buy_level 0.6 is not one of action_levels \[0.0, 0.25"):
        sl_threshold_policy(spec, **RULE, buy_level=0.6)


@pytest.mark.parametrize(
    ("levels", "message"),
    [((0.25, 0.5, 1.0), "must contain the flat level 0.0"), ((0.0, 1.0, 0.5), "must be strictly increasing")],
)
def test_sl_threshold_policy_when_action_levels_invalid_then_error(
    spec: FeatureSpec, levels: tuple[float, ...], message: str
) -> None:
    with pytest.raises(FallbackConfigError, match=message):
        sl_threshold_policy(spec, **RULE, action_levels=levels)


@pytest.mark.parametrize("dropped", [SL_FEATURE, POSITION_FEATURE])
def test_sl_threshold_policy_when_spec_lacks_feature_then_error_names_it(spec: FeatureSpec, dropped: str) -> None:
    names = tuple(f"{name}_v0" if name == dropped else name for name in spec.symbol.names)
    renamed = spec.model_copy(update={"symbol": spec.symbol.model_copy(update={"names": names})})
    with pytest.raises(FallbackConfigError, match=rf"lacks \['{dropped}'\]"):
        sl_threshold_policy(renamed, **RULE)


def test_policy_when_feature_indices_invalid_then_error_names_index() -> None:
    position = FeatureScale(13, 0.0, 1.0)
    with pytest.raises(FallbackConfigError, match="SL feature index 15 is outside an observation of 15 features"):
        SLThresholdPolicy(15, FeatureScale(15, 0.5, 0.1), position, buy_threshold=BUY, sell_threshold=SELL,
                          buy_level_index=4)
    with pytest.raises(FallbackConfigError, match="share observation index 13"):
        SLThresholdPolicy(15, FeatureScale(13, 0.5, 0.1), position, buy_threshold=BUY, sell_threshold=SELL,
                          buy_level_index=4)


def test_sl_threshold_actions_when_lengths_differ_then_input_shape_error() -> None:
    with pytest.raises(InputShapeError, match="held_levels: axis N has size 2, expected 3"):
        sl_threshold_actions(np.array([0.1, 0.5, 0.9]), np.array([0.0, 1.0]), **RULE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_when_scripted_module_on_cuda_then_actions_equal_cpu(
    spec: FeatureSpec, market_row: pd.DataFrame
) -> None:
    scripted = script_policy(sl_threshold_policy(spec, **RULE))
    rng = np.random.default_rng(8)
    batch = observations(spec, market_row, rng.uniform(0.0, 1.0, 4096), rng.uniform(-0.5, 1.5, 4096))
    _, cpu_actions = act(scripted, batch)
    with torch.no_grad():
        _, cuda_actions = scripted.to("cuda")(torch.from_numpy(batch).to("cuda"))
    np.testing.assert_array_equal(cuda_actions.cpu().numpy(), cpu_actions)
