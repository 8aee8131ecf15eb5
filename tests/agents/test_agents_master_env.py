from collections.abc import Callable

import numpy as np
import pytest

from contracts.config import RiskOverlaysConfig
from contracts.features import MASTER_FEATURES
from contracts.policy import DIRECTIVE_MODES

from agents.environment import MASTER_OBS_DIM, MasterEnv
from agents.errors import InputShapeError, InvalidActionError
from agents.inputs import SYMBOL_MARKET_DIM

NORMAL, CAUTIOUS, DEFENSIVE = (DIRECTIVE_MODES.index(mode) for mode in ("normal", "cautious", "defensive"))
DRAWDOWN = MASTER_FEATURES.index("drawdown")
GROSS_EXPOSURE = MASTER_FEATURES.index("gross_exposure")


def always_full(observations: np.ndarray) -> np.ndarray:
    return np.full(observations.shape[0], 4, dtype=np.int64)


def master_env(
    risk: RiskOverlaysConfig,
    returns: np.ndarray,
    make_master_features: Callable[[int, int], np.ndarray],
    drawdown_penalty: float = 0.5,
) -> MasterEnv:
    steps, symbols = returns.shape
    market = np.zeros((steps, symbols, SYMBOL_MARKET_DIM), dtype=np.float32)
    return MasterEnv(
        make_master_features(steps, 3),
        market,
        returns,
        always_full,
        risk=risk,
        drawdown_penalty=drawdown_penalty,
    )


def test_step_when_master_turns_defensive_then_gross_exposure_falls_and_never_rises(
    risk: RiskOverlaysConfig, make_master_features: Callable[[int, int], np.ndarray]
) -> None:
    env = master_env(risk, np.full((6, 5), 0.001), make_master_features)
    env.reset()
    obs, _, _, _ = env.step(NORMAL)
    normal_exposure = float(obs[GROSS_EXPOSURE])
    assert normal_exposure == pytest.approx(0.5)  # 5 symbols x 0.10
    exposures = []
    for _ in range(4):
        obs, _, _, info = env.step(DEFENSIVE)
        exposures.append(info["gross_exposure"])
    assert exposures[0] == pytest.approx(5 * 0.02 * 0.25)
    assert all(later <= earlier for earlier, later in zip(exposures, exposures[1:]))
    assert max(exposures) < normal_exposure


def test_step_when_cautious_then_exposure_between_defensive_and_normal(
    risk: RiskOverlaysConfig, make_master_features: Callable[[int, int], np.ndarray]
) -> None:
    exposures = {}
    for mode in (NORMAL, CAUTIOUS):
        env = master_env(risk, np.zeros((2, 4)), make_master_features)
        env.reset()
        _, _, _, info = env.step(mode)
        exposures[mode] = info["gross_exposure"]
    assert exposures[CAUTIOUS] == pytest.approx(4 * 0.05 * 0.6)
    assert exposures[CAUTIOUS] < exposures[NORMAL]


def test_step_when_drawdown_deepens_then_reward_subtracts_penalty(
    make_master_features: Callable[[int, int], np.ndarray],
) -> None:
    risk = RiskOverlaysConfig(commission_bps=0.0, spread_bps=0.0, slippage_bps=0.0)
    env = master_env(risk, np.array([[0.1], [-0.1], [0.05]]), make_master_features, drawdown_penalty=2.0)
    env.reset()
    _, gain, _, _ = env.step(NORMAL)
    assert gain == pytest.approx(0.01)
    obs, loss, _, info = env.step(NORMAL)
    drawdown = 1.0 - (1.01 * 0.99) / 1.01
    assert info["drawdown"] == pytest.approx(drawdown)
    assert loss == pytest.approx(-0.01 - 2.0 * drawdown)
    assert obs[DRAWDOWN] == pytest.approx(drawdown)
    _, recovery, done, _ = env.step(NORMAL)
    assert recovery == pytest.approx(0.005)  # drawdown shrank: no penalty
    assert done


def test_reset_when_started_then_master_observation_has_market_then_portfolio(
    risk: RiskOverlaysConfig, make_master_features: Callable[[int, int], np.ndarray]
) -> None:
    env = master_env(risk, np.zeros((3, 2)), make_master_features)
    obs = env.reset()
    assert obs.shape == (MASTER_OBS_DIM,) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[:DRAWDOWN], make_master_features(3, 3)[0])
    assert obs[DRAWDOWN] == 0.0 and obs[GROSS_EXPOSURE] == 0.0


def test_step_when_master_action_out_of_range_then_error_lists_modes(
    risk: RiskOverlaysConfig, make_master_features: Callable[[int, int], np.ndarray]
) -> None:
    env = master_env(risk, np.zeros((3, 2)), make_master_features)
    env.reset()
    with pytest.raises(InvalidActionError, match="master action 3 out of range"):
        env.step(3)
    with pytest.raises(InvalidActionError, match="one integer index"):
        env.step(1.5)  # type: ignore[arg-type]


def test_construct_when_master_market_length_differs_then_error_names_axis(risk: RiskOverlaysConfig) -> None:
    with pytest.raises(InputShapeError, match="master_market: axis T has size 4, expected 3"):
        MasterEnv(
            np.zeros((4, 9)),
            np.zeros((3, 2, SYMBOL_MARKET_DIM)),
            np.zeros((3, 2)),
            always_full,
            risk=risk,
        )
