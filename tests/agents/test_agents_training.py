from collections.abc import Callable

import numpy as np
import pydantic
import pytest
import torch

from contracts.config import RiskOverlaysConfig

from agents.environment import SymbolTradingEnv
from agents.errors import InputShapeError
from agents.evaluation import evaluate_master_policy, evaluate_symbol_policy
from agents.inputs import SYMBOL_MARKET_DIM
from agents.training import TrainingConfig, progress_disabled, train_master_agent, train_symbol_agent

PlantedFactory = Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]
SMALL = TrainingConfig(iterations=4, hidden=16)


def random_policy_total_reward(market: np.ndarray, returns: np.ndarray, risk: RiskOverlaysConfig, seed: int) -> float:
    rng = np.random.default_rng(seed)
    env = SymbolTradingEnv(market, returns, risk=risk)
    env.reset()
    total, done = 0.0, False
    while not done:
        _, rewards, done, _ = env.step(rng.integers(0, env.n_actions, env.n_symbols))
        total += float(rewards.sum())
    return total


def test_train_symbol_agent_when_same_seed_then_identical_weights_metrics_and_history(
    risk: RiskOverlaysConfig, make_planted: PlantedFactory
) -> None:
    market, returns = make_planted(40, 6, 0)
    first = train_symbol_agent(market, returns, risk, SMALL)
    second = train_symbol_agent(market, returns, risk, SMALL)
    for (name, a), (_, b) in zip(first.module.state_dict().items(), second.module.state_dict().items()):
        assert torch.equal(a, b), name
    assert first.metrics == second.metrics
    assert first.history == second.history


def test_train_symbol_agent_when_seed_changes_then_weights_differ(
    risk: RiskOverlaysConfig, make_planted: PlantedFactory
) -> None:
    market, returns = make_planted(40, 6, 0)
    first = train_symbol_agent(market, returns, risk, SMALL)
    other = train_symbol_agent(market, returns, risk, SMALL.model_copy(update={"seed": 8}))
    assert not torch.equal(first.module.body[0].weight, other.module.body[0].weight)


def test_train_symbol_agent_when_signal_planted_then_greedy_policy_beats_random_out_of_sample(
    risk: RiskOverlaysConfig, make_planted: PlantedFactory
) -> None:
    market, returns = make_planted(250, 20, 1)
    result = train_symbol_agent(market, returns, risk, TrainingConfig())
    test_market, test_returns = make_planted(250, 20, 2)
    trained = evaluate_symbol_policy(result.module, test_market, test_returns, risk)
    random_rewards = [random_policy_total_reward(test_market, test_returns, risk, seed) for seed in range(3)]
    assert trained["total_reward"] > 0.5
    assert trained["total_reward"] > max(random_rewards) + 0.5
    assert trained["sharpe"] > 1.0
    # The policy has learned to read feature 0: fully long when it is positive, flat when negative.
    obs = np.concatenate([test_market[0], np.zeros((20, 2), dtype=np.float32)], axis=1)
    _, actions = result.module(torch.from_numpy(obs))
    positive = test_market[0, :, 0] > 0
    assert actions[torch.from_numpy(positive)].float().mean() > actions[torch.from_numpy(~positive)].float().mean()
    assert result.history[-1]["sampled_total_reward"] > result.history[0]["sampled_total_reward"]


def test_train_symbol_agent_when_callback_given_then_called_once_per_iteration_with_losses(
    risk: RiskOverlaysConfig, make_planted: PlantedFactory
) -> None:
    market, returns = make_planted(20, 3, 0)
    calls: list[tuple[int, dict[str, float]]] = []
    result = train_symbol_agent(market, returns, risk, SMALL, on_iteration=lambda i, m: calls.append((i, m)))
    assert [i for i, _ in calls] == list(range(SMALL.iterations))
    assert {"sampled_total_reward", "policy_loss", "value_loss", "entropy", "approx_kl"} <= set(calls[0][1])
    assert [m for _, m in calls] == result.history
    assert {"sharpe", "max_drawdown", "total_return", "turnover", "n_trades"} <= set(result.metrics)


def test_train_symbol_agent_when_done_then_global_torch_settings_are_restored(
    risk: RiskOverlaysConfig, make_planted: PlantedFactory
) -> None:
    market, returns = make_planted(10, 2, 0)
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    train_symbol_agent(market, returns, risk, TrainingConfig(iterations=1, hidden=8))
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before


def test_train_symbol_agent_when_shapes_mismatch_then_input_error(risk: RiskOverlaysConfig) -> None:
    with pytest.raises(InputShapeError, match="forward_returns: axis T has size 9, expected 10"):
        train_symbol_agent(np.zeros((10, 2, SYMBOL_MARKET_DIM)), np.zeros((9, 2)), risk, SMALL)


def test_training_config_when_invalid_value_then_validation_error_names_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="iterations"):
        TrainingConfig(iterations=0)
    with pytest.raises(pydantic.ValidationError, match="action_levels"):
        TrainingConfig(action_levels=(0.0, 3.0))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        SMALL.seed = 1  # type: ignore[misc]


def test_progress_disabled_when_env_var_set_then_true(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARLOPS_NO_PROGRESS", "1")
    assert progress_disabled()


def always_full(observations: np.ndarray) -> np.ndarray:
    return np.full(observations.shape[0], 4, dtype=np.int64)


def crash_regime_data(steps: int, symbols: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symbols lose 2% on bars where master feature 0 > 0 and gain 1% otherwise."""
    rng = np.random.default_rng(seed)
    master = rng.standard_normal((steps, 9)).astype(np.float32)
    returns = np.where(master[:, :1] > 0, -0.02, 0.01) + 0.002 * rng.standard_normal((steps, symbols))
    return master, np.zeros((steps, symbols, SYMBOL_MARKET_DIM), dtype=np.float32), returns


def test_train_master_agent_when_crashes_follow_a_master_feature_then_beats_every_fixed_directive(
    risk: RiskOverlaysConfig,
) -> None:
    master, market, returns = crash_regime_data(120, 5, 1)
    cfg = TrainingConfig(iterations=20)
    result = train_master_agent(master, market, returns, always_full, risk, cfg)
    for mode in range(3):
        fixed = evaluate_master_policy(
            lambda obs, mode=mode: np.full(obs.shape[0], mode, dtype=np.int64), always_full, master, market, returns, risk
        )
        assert result.metrics["total_reward"] > fixed["total_reward"] + 0.05
    assert 0.0 < result.metrics["share_defensive"] < 1.0


def test_train_master_agent_when_same_seed_then_identical_weights_and_metrics(risk: RiskOverlaysConfig) -> None:
    master, market, returns = crash_regime_data(30, 3, 0)
    cfg = TrainingConfig(iterations=3, hidden=16, master_episodes=2)
    first = train_master_agent(master, market, returns, always_full, risk, cfg)
    second = train_master_agent(master, market, returns, always_full, risk, cfg)
    for a, b in zip(first.module.parameters(), second.module.parameters()):
        assert torch.equal(a, b)
    assert first.metrics == second.metrics
