"""The environment and MAPPO take their widths from the episode's observation version, not v1's constants."""

import numpy as np
import pandas as pd
import pytest

from agents.environment import SYMBOL_OBS_DIM, EnvSettings, HierarchicalTradingEnv, MarketEpisode
from agents.errors import InputShapeError
from agents.export import policy_signature, script_policy, symbol_action_labels
from agents.mappo import MAPPOConfig, train_mappo
from contracts.config import load_rl_config
from contracts.features import master_feature_names, symbol_feature_names
from contracts.policy import DEFAULT_ACTION_LEVELS

STEPS, N = 12, 3


def _episode(version: int) -> MarketEpisode:
    rng = np.random.default_rng(1)
    sym_dim, master_dim = len(symbol_feature_names(version)) - 2, len(master_feature_names(version)) - 2
    closes = 100.0 * np.cumprod(1.0 + rng.normal(0, 0.01, size=(STEPS, N)), axis=0)
    return MarketEpisode(timestamps=pd.date_range("2024-01-02", periods=STEPS, freq="D", tz="UTC"),
                         symbols=tuple(f"S{i}" for i in range(N)),
                         symbol_market=rng.normal(size=(STEPS, N, sym_dim)).astype(np.float32),
                         master_market=np.zeros((STEPS, master_dim), dtype=np.float32), closes=closes,
                         observation_version=version)


def test_env_when_v2_episode_then_observations_have_v2_widths() -> None:
    episode = _episode(2)
    env = HierarchicalTradingEnv(episode, load_rl_config().risk)
    env.reset()
    assert env.symbol_observation().shape == (N, len(symbol_feature_names(2))) != (N, SYMBOL_OBS_DIM)
    assert env.master_observation().shape == (1, len(master_feature_names(2)))
    assert env.global_state().shape == (episode.global_state_dim,)


def test_episode_when_v1_width_declared_as_v2_then_refused() -> None:
    v1 = _episode(1)
    with pytest.raises(InputShapeError, match="symbol_market: axis Dm has size 13"):
        MarketEpisode(timestamps=v1.timestamps, symbols=v1.symbols, symbol_market=v1.symbol_market,
                      master_market=v1.master_market, closes=v1.closes, observation_version=2)


def test_mappo_when_v2_episode_then_policies_take_v2_observations_and_export() -> None:
    result = train_mappo(_episode(2), load_rl_config().risk, MAPPOConfig(iterations=1, hidden=8, seed=3),
                         settings=EnvSettings())
    assert result.symbol_policy.obs_dim == len(symbol_feature_names(2))
    assert result.master_policy.obs_dim == len(master_feature_names(2))
    scripted = script_policy(result.symbol_policy)
    probabilities, _ = scripted(__import__("torch").zeros(4, len(symbol_feature_names(2))))
    assert probabilities.shape == (4, len(DEFAULT_ACTION_LEVELS))
    signature = policy_signature("symbol_agent", result.symbol_policy.obs_dim, len(DEFAULT_ACTION_LEVELS), "c" * 64,
                                 symbol_action_labels())
    assert signature.inputs[0].dims == (len(symbol_feature_names(2)),)
