import numpy as np
import pytest

from contracts.config import RiskOverlaysConfig
from contracts.features import SYMBOL_FEATURES

from agents.environment import SYMBOL_OBS_DIM, SymbolTradingEnv
from agents.errors import AgentError, EnvironmentStateError, InputShapeError, InvalidActionError
from agents.inputs import SYMBOL_MARKET_DIM

COST_RATE = 3e-4  # default risk: 1 bps commission + 2/2 bps spread + 1 bps slippage
POSITION_LEVEL = SYMBOL_FEATURES.index("position_level")
GROSS_EXPOSURE = SYMBOL_FEATURES.index("gross_exposure")


def tiny_env(risk: RiskOverlaysConfig, returns: list[list[float]], **kwargs: object) -> SymbolTradingEnv:
    forward = np.array(returns)
    market = np.arange(forward.size * SYMBOL_MARKET_DIM, dtype=np.float32).reshape(*forward.shape, SYMBOL_MARKET_DIM)
    return SymbolTradingEnv(market, forward, risk=risk, **kwargs)  # type: ignore[arg-type]


def test_reset_when_new_episode_then_observation_is_market_features_and_flat_portfolio(
    risk: RiskOverlaysConfig,
) -> None:
    env = tiny_env(risk, [[0.01, -0.02], [0.03, 0.0]])
    obs = env.reset()
    assert obs.shape == (2, SYMBOL_OBS_DIM) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[:, :SYMBOL_MARKET_DIM], np.arange(26, dtype=np.float32).reshape(2, 13))
    np.testing.assert_array_equal(obs[:, POSITION_LEVEL], [0.0, 0.0])
    np.testing.assert_array_equal(obs[:, GROSS_EXPOSURE], [0.0, 0.0])


def test_step_when_levels_chosen_then_weights_costs_and_rewards_match_hand_computation(
    risk: RiskOverlaysConfig,
) -> None:
    env = tiny_env(risk, [[0.01, -0.02], [0.03, 0.0], [0.0, 0.01]])
    env.reset()
    # Levels 1.0 and 0.5 of a 10% cap -> weights 0.10 and 0.05, bought from flat.
    obs, rewards, done, info = env.step(np.array([4, 2]))
    np.testing.assert_allclose(env.weights, [0.10, 0.05])
    np.testing.assert_allclose(rewards, [0.10 * 0.01 - COST_RATE * 0.10, 0.05 * -0.02 - COST_RATE * 0.05])
    assert info["turnover"] == pytest.approx(0.15)
    assert info["cost"] == pytest.approx(COST_RATE * 0.15)
    assert info["portfolio_return"] == pytest.approx(float(rewards.sum()))
    assert info["n_trades"] == 2.0
    assert not done
    np.testing.assert_allclose(obs[:, POSITION_LEVEL], [1.0, 0.5])
    np.testing.assert_allclose(obs[:, GROSS_EXPOSURE], [0.15, 0.15])
    np.testing.assert_array_equal(obs[:, :SYMBOL_MARKET_DIM], np.arange(26, 52, dtype=np.float32).reshape(2, 13))
    assert env.equity == pytest.approx(1.0 + float(rewards.sum()))


def test_step_when_cautious_directive_then_size_is_capped_and_scaled(risk: RiskOverlaysConfig) -> None:
    env = tiny_env(risk, [[0.01, -0.02], [0.03, 0.0], [0.0, 0.01]])
    env.reset()
    env.step(np.array([4, 2]))
    _, rewards, _, info = env.step(np.array([4, 0]), "cautious")
    # cautious: min(0.10 cap, 0.05 max size) * 0.6 risk scale = 0.03 per full level.
    np.testing.assert_allclose(env.weights, [0.03, 0.0])
    np.testing.assert_allclose(rewards, [0.03 * 0.03 - COST_RATE * 0.07, -COST_RATE * 0.05])
    assert info["turnover"] == pytest.approx(0.12)
    assert info["gross_exposure"] == pytest.approx(0.03)


def test_step_when_defensive_directive_then_exposure_only_shrinks(risk: RiskOverlaysConfig) -> None:
    env = tiny_env(risk, [[0.0, 0.0], [0.0, 0.0]])
    env.reset()
    env.step(np.array([4, 0]))
    obs, _, done, _ = env.step(np.array([4, 4]), "defensive")
    # Defensive target 1.0 * 0.02 * 0.25 = 0.005: the held 0.10 shrinks to it; the flat symbol may not open.
    np.testing.assert_allclose(env.weights, [0.005, 0.0])
    np.testing.assert_allclose(obs[:, POSITION_LEVEL], [1.0, 1.0])
    assert done


def test_step_when_defensive_and_target_flips_sign_then_position_goes_flat(risk: RiskOverlaysConfig) -> None:
    env = tiny_env(risk, [[0.0], [0.0]], action_levels=(-1.0, 0.0, 1.0))
    env.reset()
    env.step(np.array([0]))
    np.testing.assert_allclose(env.weights, [-0.10])
    env.step(np.array([2]), "defensive")
    np.testing.assert_allclose(env.weights, [0.0])


def test_step_when_gross_exposure_exceeds_leverage_cap_then_increases_scale_by_one_factor(
    risk: RiskOverlaysConfig,
) -> None:
    env = tiny_env(risk, [[0.0] * 20] * 3)
    env.reset()
    _, _, _, info = env.step(np.full(20, 4))
    # 20 symbols x 0.10 = 2.0 gross > 1.5 cap -> every new position is scaled by 0.75 to 0.075.
    np.testing.assert_allclose(env.weights, np.full(20, 0.075))
    assert info["gross_exposure"] == pytest.approx(1.5)
    # At the cap, asking for more changes nothing: held exposure is kept, the increase is scaled to zero.
    _, _, _, info = env.step(np.full(20, 4))
    np.testing.assert_allclose(env.weights, np.full(20, 0.075))
    assert info["turnover"] == pytest.approx(0.0, abs=1e-12)
    assert info["n_trades"] == 0.0


def test_step_when_some_symbols_reduce_at_the_cap_then_freed_room_goes_to_increases(
    risk: RiskOverlaysConfig,
) -> None:
    env = tiny_env(risk, [[0.0] * 20] * 2)
    env.reset()
    env.step(np.full(20, 4))
    # Symbols 0-1 go flat (frees 0.15); the other 18 ask for +0.025 each (0.45 in all) -> factor 1/3.
    env.step(np.array([0, 0] + [4] * 18))
    np.testing.assert_allclose(env.weights, [0.0, 0.0] + [0.075 + 0.025 / 3] * 18)
    assert env.gross_exposure == pytest.approx(1.5)


def test_step_when_loss_follows_gain_then_drawdown_is_measured_from_peak(risk: RiskOverlaysConfig) -> None:
    zero_cost = risk.model_copy(update={"commission_bps": 0.0, "spread_bps": 0.0, "slippage_bps": 0.0})
    env = tiny_env(zero_cost, [[0.5], [-0.5]])
    env.reset()
    env.step(np.array([4]))
    _, _, _, info = env.step(np.array([4]))
    assert info["equity"] == pytest.approx(1.05 * 0.95)
    assert info["drawdown"] == pytest.approx(0.05)
    assert info["turnover"] == 0.0


def test_step_when_episode_over_then_state_error_names_reset(risk: RiskOverlaysConfig) -> None:
    env = tiny_env(risk, [[0.0, 0.0]])
    env.reset()
    _, _, done, _ = env.step(np.array([0, 0]))
    assert done
    with pytest.raises(EnvironmentStateError, match="reset"):
        env.step(np.array([0, 0]))


def test_step_when_not_reset_then_state_error(risk: RiskOverlaysConfig) -> None:
    env = tiny_env(risk, [[0.0, 0.0]])
    with pytest.raises(EnvironmentStateError, match="reset"):
        env.step(np.array([0, 0]))


@pytest.mark.parametrize(
    ("actions", "error", "message"),
    [
        (np.array([0, 1, 2]), InputShapeError, r"expected shape \(2,\)"),
        (np.array([0, 5]), InvalidActionError, "index 5 for symbol 1 out of range 0..4"),
        (np.array([0.0, 1.0]), InvalidActionError, "integer"),
    ],
)
def test_step_when_actions_invalid_then_error_names_the_problem(
    risk: RiskOverlaysConfig, actions: np.ndarray, error: type[AgentError], message: str
) -> None:
    env = tiny_env(risk, [[0.0, 0.0]])
    env.reset()
    with pytest.raises(error, match=message):
        env.step(actions)


def test_step_when_directive_unknown_then_error_lists_known_modes(risk: RiskOverlaysConfig) -> None:
    env = tiny_env(risk, [[0.0, 0.0]])
    env.reset()
    with pytest.raises(InvalidActionError, match="unknown directive mode 'panic'.*cautious"):
        env.step(np.array([0, 0]), "panic")


def test_construct_when_returns_shape_mismatches_then_error_names_axis(risk: RiskOverlaysConfig) -> None:
    market = np.zeros((5, 3, SYMBOL_MARKET_DIM), dtype=np.float32)
    with pytest.raises(InputShapeError, match="forward_returns: axis N has size 4, expected 3"):
        SymbolTradingEnv(market, np.zeros((5, 4)), risk=risk)


def test_construct_when_feature_count_wrong_then_error_names_dm(risk: RiskOverlaysConfig) -> None:
    with pytest.raises(InputShapeError, match="symbol_market: axis Dm has size 12, expected 13"):
        SymbolTradingEnv(np.zeros((5, 3, 12)), np.zeros((5, 3)), risk=risk)


def test_construct_when_market_has_nan_then_error_names_first_bad_index(risk: RiskOverlaysConfig) -> None:
    market = np.zeros((5, 3, SYMBOL_MARKET_DIM))
    market[2, 1, 4] = np.nan
    with pytest.raises(InputShapeError, match=r"first at index \(2, 1, 4\) \(T=2, N=1, Dm=4\)"):
        SymbolTradingEnv(market, np.zeros((5, 3)), risk=risk)


def test_construct_when_action_levels_outside_unit_range_then_error(risk: RiskOverlaysConfig) -> None:
    with pytest.raises(InputShapeError, match=r"action_levels: every level must lie in \[-1, 1\]"):
        SymbolTradingEnv(np.zeros((2, 1, SYMBOL_MARKET_DIM)), np.zeros((2, 1)), risk=risk, action_levels=(0.0, 2.0))
