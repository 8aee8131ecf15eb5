import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from contracts.config import DirectivePreset, RiskOverlaysConfig
from contracts.policy import DEFAULT_ACTION_LEVELS

from agents.backtest import constant_master, run_backtest
from agents.environment import SYMBOL_OBS_DIM, EnvSettings
from agents.mappo import MAPPOConfig, MAPPOResult, ValueNormalizer, deterministic_torch, gae, train_mappo
from agents.networks import PolicyNet

TINY = MAPPOConfig(seed=7, iterations=3, hidden=8, epochs=2, minibatches=2)


@pytest.fixture
def torch_globals() -> Iterator[None]:
    """Leave torch's process-wide settings as this test found them, whatever the test sets."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- GAE and value normalisation ----------------------------------------------------------------------------


def test_gae_when_three_steps_ending_in_zero_discount_then_matches_hand_computation() -> None:
    rewards = np.array([1.0, 2.0, 3.0])
    values = np.array([0.5, 1.0, 1.5])
    discounts = np.array([0.9, 0.9, 0.0])
    advantages, returns = gae(rewards, values, discounts, lam=0.8)

    # delta_2 = 3 + 0 - 1.5 = 1.5;           A_2 = 1.5
    # delta_1 = 2 + 0.9 x 1.5 - 1.0 = 2.35;  A_1 = 2.35 + 0.9 x 0.8 x 1.5 = 3.43
    # delta_0 = 1 + 0.9 x 1.0 - 0.5 = 1.4;   A_0 = 1.4 + 0.72 x 3.43 = 3.8696
    np.testing.assert_allclose(advantages, [3.8696, 3.43, 1.5], rtol=1e-12)
    np.testing.assert_allclose(returns, [3.8696 + 0.5, 3.43 + 1.0, 1.5 + 1.5], rtol=1e-12)


def test_gae_when_lambda_one_then_returns_are_discounted_reward_sums_whatever_the_values() -> None:
    rewards = np.array([0.3, -0.2, 0.5, 0.1])
    discounts = np.array([0.5, 0.5, 0.5, 0.0])
    _, returns = gae(rewards, np.array([9.0, -4.0, 2.0, 7.0]), discounts, lam=1.0)
    expected = [
        0.3 + 0.5 * -0.2 + 0.25 * 0.5 + 0.125 * 0.1,
        -0.2 + 0.5 * 0.5 + 0.25 * 0.1,
        0.5 + 0.5 * 0.1,
        0.1,
    ]
    np.testing.assert_allclose(returns, expected, rtol=1e-12)


def test_gae_when_zero_discount_mid_sequence_then_no_bootstrap_across_it() -> None:
    rewards = np.array([1.0, 1.0])
    advantages, _ = gae(rewards, np.array([0.0, 100.0]), np.array([0.0, 0.0]), lam=0.9)
    np.testing.assert_allclose(advantages, [1.0, 1.0 - 100.0])


def test_gae_when_agents_in_columns_then_each_column_as_if_alone() -> None:
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    discounts = np.array([0.9, 0.9, 0.9, 0.9, 0.0])
    advantages, returns = gae(rewards, values, discounts[:, None] * np.ones((1, 3)), lam=0.7)
    for j in range(3):
        column_adv, column_ret = gae(rewards[:, j], values[:, j], discounts, lam=0.7)
        np.testing.assert_allclose(advantages[:, j], column_adv, rtol=1e-12)
        np.testing.assert_allclose(returns[:, j], column_ret, rtol=1e-12)


def test_value_normalizer_when_batches_added_then_mean_std_of_their_concatenation() -> None:
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 2.0, size=7), rng.normal(-1.0, 0.5, size=(4, 3)), rng.normal(10.0, 1.0, size=1)]
    norm = ValueNormalizer()
    for batch in batches:
        norm.update(batch)
    everything = np.concatenate([b.reshape(-1) for b in batches])
    assert norm.count == everything.size
    assert norm.mean == pytest.approx(float(everything.mean()), rel=1e-12)
    assert norm.std == pytest.approx(float(everything.std()), rel=1e-12)
    np.testing.assert_allclose(norm.normalize(everything), (everything - everything.mean()) / everything.std())
    np.testing.assert_allclose(norm.denormalize(norm.normalize(everything)), everything, rtol=1e-12)


def test_value_normalizer_when_fewer_than_two_values_then_identity_scale() -> None:
    norm = ValueNormalizer()
    assert (norm.mean, norm.std) == (0.0, 1.0)
    norm.update(np.array([4.0]))
    norm.update(np.array([]))
    assert (norm.count, norm.mean, norm.std) == (1, 4.0, 1.0)


# ---- torch global state -------------------------------------------------------------------------------------


@pytest.mark.parametrize("deterministic_before", [False, True])
def test_deterministic_torch_when_left_then_threads_and_flag_restored(torch_globals, deterministic_before) -> None:
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(deterministic_before)
    with deterministic_torch(5) as gen:
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        first = torch.rand(3, generator=gen)
    assert torch.get_num_threads() == 2
    assert torch.are_deterministic_algorithms_enabled() is deterministic_before
    with deterministic_torch(5) as gen:
        assert torch.equal(torch.rand(3, generator=gen), first)


def test_train_when_finished_or_failed_then_torch_settings_restored(torch_globals, make_planted_episode, risk) -> None:
    episode = make_planted_episode(12, 2, 0)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(False)
    train_mappo(episode, risk, TINY.model_copy(update={"iterations": 1}))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (2, False)

    def fail(_iteration: int, _record: dict[str, float]) -> None:
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        train_mappo(episode, risk, TINY, on_iteration=fail)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (2, False)


# ---- training runs ------------------------------------------------------------------------------------------


def test_train_when_same_seed_twice_then_identical_policies_and_history(make_planted_episode, risk) -> None:
    episode = make_planted_episode(20, 3, 0)
    first = train_mappo(episode, risk, TINY)
    second = train_mappo(episode, risk, TINY)
    assert _same_state(first.symbol_policy, second.symbol_policy)
    assert _same_state(first.master_policy, second.master_policy)
    assert first.history == second.history
    assert len(first.history) == TINY.iterations


def test_train_when_different_seed_then_different_policies(make_planted_episode, risk) -> None:
    episode = make_planted_episode(20, 3, 0)
    first = train_mappo(episode, risk, TINY)
    other = train_mappo(episode, risk, TINY.model_copy(update={"seed": 8}))
    assert not _same_state(first.symbol_policy, other.symbol_policy)
    assert first.history != other.history


def test_train_when_callback_given_then_called_once_per_iteration_with_stats(make_planted_episode, risk) -> None:
    episode = make_planted_episode(20, 3, 0)
    calls: list[tuple[int, dict[str, float]]] = []
    result = train_mappo(
        episode, risk, TINY, settings=EnvSettings(master_every_bars=5), on_iteration=lambda i, r: calls.append((i, r))
    )
    assert [i for i, _ in calls] == list(range(TINY.iterations))
    assert [r for _, r in calls] == result.history
    for i, record in calls:
        assert record["iteration"] == float(i)
        for key in ("episode_return", "episode_sharpe", "episode_max_drawdown", "episode_cost", "symbol_entropy",
                    "symbol_policy_loss", "symbol_value_loss", "master_entropy", "masked_share"):
            assert math.isfinite(record[key]), key
        assert 0.0 < record["symbol_entropy"] <= math.log(len(DEFAULT_ACTION_LEVELS)) + 1e-6
        assert record["master_decisions"] == 4.0  # bars 0, 5, 10, 15 of 20; no regime flag changes


def test_train_when_episode_bars_set_then_each_iteration_replays_a_window(make_planted_episode, risk) -> None:
    episode = make_planted_episode(40, 2, 0)
    cfg = TINY.model_copy(update={"episode_bars": 10})
    result = train_mappo(episode, risk, cfg, settings=EnvSettings(master_every_bars=5))
    assert [r["master_decisions"] for r in result.history] == [2.0] * cfg.iterations  # bars 0 and 5 of 10


def test_train_when_every_directive_is_defensive_then_policy_acts_only_within_the_mask(
    make_planted_episode,
) -> None:
    presets = dict(RiskOverlaysConfig().directive_presets)
    presets["normal"] = DirectivePreset(max_position_size=0.10, risk_scale=1.0, defensive=True)
    presets["cautious"] = presets["defensive"]
    risk = RiskOverlaysConfig(directive_presets=presets)
    result = train_mappo(make_planted_episode(20, 3, 0), risk, TINY)
    for record in result.history:
        # Flat under a defensive overlay: only level 0 of 5 is allowed, so nothing is ever bought.
        assert record["masked_share"] == pytest.approx(1.0 - 1.0 / len(DEFAULT_ACTION_LEVELS))
        assert record["episode_cost"] == 0.0
        assert record["episode_return"] == 0.0
        # The masked distribution puts all its mass on the one allowed level.
        assert record["symbol_entropy"] == pytest.approx(0.0, abs=1e-6)


def test_train_when_feature_predicts_next_return_then_greedy_policy_beats_untrained_and_flat(
    make_planted_episode, risk
) -> None:
    train, held_out = make_planted_episode(120, 4, 1), make_planted_episode(120, 4, 2)
    cfg = MAPPOConfig(seed=7, iterations=15, hidden=32, actor_lr=3e-3, critic_lr=3e-3, train_master=False)
    result: MAPPOResult = train_mappo(train, risk, cfg)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        untrained = PolicyNet(SYMBOL_OBS_DIM, len(DEFAULT_ACTION_LEVELS), cfg.hidden).eval()

    def flat(observations: np.ndarray) -> np.ndarray:
        return np.zeros(len(observations), dtype=np.int64)

    def oracle(observations: np.ndarray) -> np.ndarray:
        # Reads the planted feature directly: fully long before an up bar, flat before a down bar.
        return np.where(observations[:, 0] > 0, len(DEFAULT_ACTION_LEVELS) - 1, 0).astype(np.int64)

    normal = constant_master("normal")

    def total_return(policy) -> float:
        return run_backtest(held_out, risk, policy, normal).final_net_equity / 1_000_000.0 - 1.0

    trained_return = total_return(result.symbol_policy)
    assert trained_return > total_return(untrained)
    assert trained_return > total_return(flat) == 0.0
    assert trained_return > 0.5 * total_return(oracle)
