import numpy as np
import pytest

from contracts.config import DirectivePreset, LoopConfig, RiskOverlaysConfig
from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES

from agents.environment import (
    GLOBAL_STATE_DIM,
    MASTER_OBS_DIM,
    SYMBOL_OBS_DIM,
    EnvSettings,
    HierarchicalTradingEnv,
    MarketEpisode,
)
from agents.errors import EnvironmentStateError, InputShapeError, InvalidActionError
from agents.inputs import MASTER_MARKET_DIM, SYMBOL_MARKET_DIM

NORMAL, CAUTIOUS, DEFENSIVE = (DIRECTIVE_MODES.index(m) for m in ("normal", "cautious", "defensive"))
FLAT, QUARTER, HALF, THREE_QUARTERS, FULL = range(5)  # indices of DEFAULT_ACTION_LEVELS
RATE = (1.0 + 2.0 / 2 + 1.0) * 1e-4  # commission + half spread + slippage of `priced_risk`
CASH = 1_000_000.0


@pytest.fixture
def priced_risk() -> RiskOverlaysConfig:
    """Normal: 10% per symbol at level 1.0; defensive fallback when no directive is live; 3 bp per traded notional."""
    return RiskOverlaysConfig(commission_bps=1.0, spread_bps=2.0, slippage_bps=1.0)


@pytest.fixture
def wide_defensive_risk() -> RiskOverlaysConfig:
    """A defensive preset as wide as normal (10% at level 1.0), so its reduce-only mask cuts between levels."""
    presets = dict(RiskOverlaysConfig().directive_presets)
    presets["defensive"] = DirectivePreset(max_position_size=0.10, risk_scale=1.0, defensive=True)
    return RiskOverlaysConfig(directive_presets=presets)


def _env(episode: MarketEpisode, risk: RiskOverlaysConfig, **settings: object) -> HierarchicalTradingEnv:
    env = HierarchicalTradingEnv(episode, risk, EnvSettings(**settings))  # type: ignore[arg-type]
    env.reset()
    return env


def _actions(*indices: int) -> np.ndarray:
    return np.array(indices, dtype=np.int64)


def test_levels_when_default_then_match_the_index_names_used_here() -> None:
    assert DEFAULT_ACTION_LEVELS == (0.0, 0.25, 0.5, 0.75, 1.0)


# ---- rewards -------------------------------------------------------------------------------------------------


def test_step_when_two_bars_two_symbols_then_portfolio_return_is_net_equity_change_by_hand(
    make_episode, priced_risk
) -> None:
    env = _env(make_episode([[100.0, 50.0], [110.0, 45.0]]), priced_risk, drawdown_penalty=0.0)
    env.issue_directive(NORMAL)
    first = env.step(_actions(FULL, HALF))

    # Bar 0: 10% of 1,000,000 at 100 -> 1000 S0; 5% at 50 -> 1000 S1. Costs 3 bp of 150,000 = 45.
    # To bar 1: S0 earns 1000 x 10, S1 loses 1000 x 5. Net equity 1,000,000 -> 1,004,955.
    np.testing.assert_array_equal(first.book.qty_after, [1000.0, 1000.0])
    assert first.book.costs.sum() == pytest.approx(150_000 * RATE, rel=1e-12)
    assert first.portfolio_return == pytest.approx((1_004_955.0 - CASH) / CASH, rel=1e-12)
    assert first.info["net_equity"] == pytest.approx(1_004_955.0, rel=1e-12)
    np.testing.assert_allclose(first.symbol_rewards, [(10_000 - 30) / CASH, (-5_000 - 15) / CASH], rtol=1e-12)
    assert not first.done

    last = env.step(_actions(FULL, HALF))
    # Bar 1 (last): equity 1,005,000. S0 target 100,500 / 110 -> 913 (sell 87), S1 50,250 / 45 -> 1116 (buy 116).
    # The last bar earns nothing inside the episode; it pays its costs.
    np.testing.assert_array_equal(last.book.qty_after, [913.0, 1116.0])
    cost = (87 * 110.0 + 116 * 45.0) * RATE
    assert last.portfolio_return == pytest.approx(-cost / 1_004_955.0, rel=1e-12)
    assert last.done and env.done


def test_step_when_shaping_off_then_symbol_rewards_sum_to_portfolio_return(make_episode, priced_risk) -> None:
    rng = np.random.default_rng(3)
    closes = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.02, size=(12, 3)), axis=0)
    env = _env(make_episode(closes), priced_risk, drawdown_penalty=0.0, cost_penalty=0.0, master_every_bars=4)
    while not env.done:
        if env.master_due():
            env.issue_directive(int(rng.integers(0, len(DIRECTIVE_MODES))))
        step = env.step(rng.integers(0, env.n_actions, size=env.n_symbols))
        assert step.symbol_rewards.sum() == pytest.approx(step.portfolio_return, abs=1e-12)
        assert step.master_reward == pytest.approx(step.portfolio_return, abs=1e-12)


def test_step_when_shaped_then_symbol_rewards_sum_to_master_reward(make_episode, priced_risk) -> None:
    rng = np.random.default_rng(4)
    closes = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.03, size=(12, 3)), axis=0)
    env = _env(make_episode(closes), priced_risk, drawdown_penalty=2.0, cost_penalty=1.5)
    env.issue_directive(NORMAL)
    while not env.done:
        step = env.step(rng.integers(0, env.n_actions, size=env.n_symbols))
        assert step.symbol_rewards.sum() == pytest.approx(step.master_reward, abs=1e-12)


def test_step_when_loss_deepens_drawdown_then_penalty_is_shared_by_hand(make_episode, priced_risk) -> None:
    env = _env(make_episode([[100.0, 50.0], [90.0, 50.0]]), priced_risk, drawdown_penalty=0.5, cost_penalty=2.0)
    env.issue_directive(NORMAL)
    step = env.step(_actions(FULL, FLAT))

    # 1000 S0 at 100 (cost 30), then -10 per share: net 1,000,000 -> 989,970, a new drawdown of 1.003%.
    ret = -10_030.0 / CASH
    cost_share = 30.0 / CASH
    penalty = 0.5 * (10_030.0 / CASH)
    assert step.portfolio_return == pytest.approx(ret, rel=1e-12)
    assert step.master_reward == pytest.approx(ret - 2.0 * cost_share - penalty, rel=1e-12)
    np.testing.assert_allclose(
        step.symbol_rewards, [ret - 2.0 * cost_share - penalty / 2, -penalty / 2], rtol=1e-12
    )
    assert step.info["drawdown"] == pytest.approx(10_030.0 / CASH, rel=1e-12)


# ---- master schedule ----------------------------------------------------------------------------------------


def _due_bars(env: HierarchicalTradingEnv) -> list[int]:
    due = []
    while not env.done:
        if env.master_due():
            due.append(env.t)
        env.step(np.zeros(env.n_symbols, dtype=np.int64))
    return due


def test_master_due_when_every_k_bars_and_regime_shift_then_due_at_both(make_episode, risk) -> None:
    regime = [[0, 0]] * 4 + [[1, 0]] * 4  # high-vol flag switches on at bar 4
    env = _env(make_episode(np.full((8, 2), 100.0), regime=regime), risk, master_every_bars=3)
    assert _due_bars(env) == [0, 3, 4, 6]


def test_master_due_when_flags_set_from_bar_zero_then_no_shift_until_they_change(make_episode, risk) -> None:
    episode = make_episode(np.full((4, 2), 100.0), regime=[[1, 1], [1, 1], [1, 0], [1, 0]])
    np.testing.assert_array_equal(episode.regime_shifts(), [False, False, True, False])
    env = _env(episode, risk, master_every_bars=10)
    assert _due_bars(env) == [0, 2]


# ---- observations -------------------------------------------------------------------------------------------


def _numbered_market(steps: int, n: int) -> np.ndarray:
    """Every cell different (bar x 100 + symbol x 20 + column), so a misplaced slice shows."""
    t, i, j = np.meshgrid(np.arange(steps), np.arange(n), np.arange(SYMBOL_MARKET_DIM), indexing="ij")
    return (t * 100 + i * 20 + j).astype(np.float32) / 100.0


def test_symbol_observation_when_stepped_then_market_held_level_and_previous_gross(make_episode, priced_risk) -> None:
    market = _numbered_market(3, 2)
    env = _env(make_episode([[100.0, 50.0], [110.0, 45.0], [110.0, 45.0]], symbol_market=market), priced_risk)
    env.issue_directive(NORMAL)

    first = env.symbol_observation()
    assert first.shape == (2, SYMBOL_OBS_DIM) and first.dtype == np.float32
    np.testing.assert_array_equal(first, np.column_stack([market[0], np.zeros((2, 2))]))

    env.step(_actions(FULL, HALF))
    second = env.symbol_observation()
    np.testing.assert_array_equal(second[:, :SYMBOL_MARKET_DIM], market[1])
    np.testing.assert_array_equal(second[:, SYMBOL_MARKET_DIM], [1.0, 0.5])
    # Gross exposure as the book reported it after bar 0's fills (150,000 / 1,000,000), not at bar 1's closes.
    np.testing.assert_allclose(second[:, SYMBOL_MARKET_DIM + 1], [0.15, 0.15], rtol=1e-6)


def test_master_observation_when_stepped_then_market_drawdown_and_previous_gross(make_episode, priced_risk) -> None:
    master = np.tile(np.arange(MASTER_MARKET_DIM, dtype=np.float32) / 10.0, (3, 1))
    env = _env(make_episode([[100.0, 50.0], [110.0, 45.0], [110.0, 45.0]], master_market=master), priced_risk)
    env.issue_directive(NORMAL)
    env.step(_actions(FULL, HALF))
    obs = env.master_observation()
    assert obs.shape == (1, MASTER_OBS_DIM) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[0], [*(np.arange(MASTER_MARKET_DIM) / 10.0), 0.0, 0.15], rtol=1e-6)


def test_observations_when_portfolio_features_exceed_clip_then_clipped(make_episode, priced_risk) -> None:
    env = _env(make_episode([[100.0, 50.0], [100.0, 50.0], [100.0, 50.0]], clip=0.1), priced_risk)
    env.issue_directive(NORMAL)
    env.step(_actions(FULL, FULL))  # held 1.0, gross 0.2: both above the clip 0.1
    np.testing.assert_allclose(env.symbol_observation()[:, SYMBOL_MARKET_DIM:], np.full((2, 2), 0.1), rtol=1e-6)
    assert env.master_observation()[0, -1] == pytest.approx(0.1)


def test_global_state_when_directive_issued_then_one_hot_of_its_mode(make_episode, priced_risk) -> None:
    env = _env(make_episode(np.full((3, 2), 100.0)), priced_risk)
    mode_slice = slice(MASTER_OBS_DIM, MASTER_OBS_DIM + len(DIRECTIVE_MODES))
    assert env.global_state().shape == (GLOBAL_STATE_DIM,)
    np.testing.assert_array_equal(env.global_state()[mode_slice], [0.0, 0.0, 0.0])
    env.issue_directive(CAUTIOUS)
    np.testing.assert_array_equal(env.global_state()[mode_slice], [0.0, 1.0, 0.0])


# ---- masks and the missing directive ------------------------------------------------------------------------


def test_action_mask_when_normal_directive_then_every_level_allowed(make_episode, priced_risk) -> None:
    env = _env(make_episode(np.full((3, 2), 100.0)), priced_risk)
    env.issue_directive(NORMAL)
    mask = env.action_mask()
    assert mask.shape == (2, len(DEFAULT_ACTION_LEVELS)) and mask.dtype == bool
    assert mask.all()


def test_action_mask_when_defensive_and_flat_then_only_flat_allowed(make_episode, priced_risk) -> None:
    env = _env(make_episode(np.full((3, 2), 100.0)), priced_risk)
    env.issue_directive(DEFENSIVE)
    np.testing.assert_array_equal(env.action_mask(), [[True, False, False, False, False]] * 2)


def test_action_mask_when_defensive_then_only_levels_not_above_current_weight(
    make_episode, wide_defensive_risk
) -> None:
    env = _env(make_episode(np.full((3, 2), 50.0)), wide_defensive_risk)
    env.issue_directive(NORMAL)
    env.step(_actions(HALF, FLAT))  # S0: 5% (1000 shares at 50); S1 flat
    env.issue_directive(DEFENSIVE)

    # Defensive level x 10%: 0, 2.5%, 5% fit under S0's 5%; 7.5% and 10% would grow it. S1 may only stay flat.
    mask = env.action_mask()
    np.testing.assert_array_equal(mask, [[True, True, True, False, False], [True, False, False, False, False]])

    allowed = env.step(_actions(QUARTER, FLAT))
    assert allowed.book.denied == 0
    np.testing.assert_array_equal(allowed.book.qty_after, [500.0, 0.0])  # 2.5% of 1,000,000 at 50


def test_action_mask_when_masked_level_is_sent_anyway_then_book_denies_it(make_episode, wide_defensive_risk) -> None:
    env = _env(make_episode(np.full((3, 2), 50.0)), wide_defensive_risk)
    env.issue_directive(NORMAL)
    env.step(_actions(HALF, FLAT))
    env.issue_directive(DEFENSIVE)
    assert not env.action_mask()[0, FULL]
    step = env.step(_actions(FULL, FLAT))
    assert step.book.denied == 1
    assert step.book.intents == ()
    np.testing.assert_array_equal(step.book.qty_after, [1000.0, 0.0])


def test_step_when_no_directive_then_defensive_fallback_buys_nothing(make_episode, priced_risk) -> None:
    env = _env(make_episode([[100.0, 50.0], [120.0, 60.0]]), priced_risk)
    assert env.directive is None
    np.testing.assert_array_equal(env.action_mask(), [[True, False, False, False, False]] * 2)
    step = env.step(_actions(FULL, FULL))
    assert step.book.overlay.fallback and step.book.overlay.mode == "defensive"
    assert step.book.intents == ()
    assert step.portfolio_return == 0.0


def test_step_when_no_directive_and_fallback_normal_then_normal_sizing_applies(make_episode) -> None:
    risk = RiskOverlaysConfig(missing_directive_fallback="normal")
    env = _env(make_episode([[100.0, 50.0], [120.0, 60.0]]), risk)
    assert env.action_mask().all()
    step = env.step(_actions(FULL, FLAT))
    assert step.book.overlay.fallback and step.book.overlay.mode == "normal"
    np.testing.assert_array_equal(step.book.qty_after, [1000.0, 0.0])


def test_step_when_directive_outlives_ttl_then_fallback_applies(make_episode, priced_risk) -> None:
    env = _env(make_episode(np.full((3, 1), 100.0)), priced_risk, directive_ttl_seconds=1.5 * 86400)
    env.issue_directive(NORMAL)  # bar 0; daily bars, so it is 2 days old at bar 2
    assert env.step(_actions(FLAT)).book.overlay.mode == "normal"
    assert not env.step(_actions(FLAT)).book.overlay.fallback  # 1 day old: live
    assert env.action_mask().tolist() == [[True, False, False, False, False]]
    last = env.step(_actions(FULL))
    assert last.book.overlay.fallback and last.book.overlay.defensive
    assert last.book.intents == ()


# ---- errors and lifecycle -----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [3, -1, 1.0, "normal"])
def test_issue_directive_when_action_not_a_mode_index_then_invalid_action_error(make_episode, risk, action) -> None:
    env = _env(make_episode(np.full((2, 2), 100.0)), risk)
    with pytest.raises(InvalidActionError, match=r"master action .* out of range 0\.\.2"):
        env.issue_directive(action)
    assert env.directive is None


def test_step_when_actions_wrong_shape_then_input_shape_error(make_episode, risk) -> None:
    env = _env(make_episode(np.full((2, 2), 100.0)), risk)
    with pytest.raises(InputShapeError, match=r"expected shape \(2,\) \(one per symbol\), got \(3,\)"):
        env.step(_actions(0, 0, 0))
    with pytest.raises(InputShapeError, match=r"got \(1, 2\)"):
        env.step(np.zeros((1, 2), dtype=np.int64))
    assert env.t == 0


def test_step_when_actions_are_floats_then_invalid_action_error(make_episode, risk) -> None:
    env = _env(make_episode(np.full((2, 2), 100.0)), risk)
    with pytest.raises(InvalidActionError, match="integer action indices, got dtype float64"):
        env.step(np.array([0.0, 1.0]))


def test_step_when_action_index_out_of_range_then_error_names_symbol(make_episode, risk) -> None:
    env = _env(make_episode(np.full((2, 2), 100.0), symbols=["AAA", "BBB"]), risk)
    with pytest.raises(InvalidActionError, match=r"index 5 for symbol BBB out of range 0\.\.4"):
        env.step(_actions(0, 5))


def test_step_when_episode_done_then_environment_state_error(make_episode, risk) -> None:
    env = _env(make_episode(np.full((2, 2), 100.0)), risk)
    env.step(_actions(0, 0))
    env.step(_actions(0, 0))
    assert env.done
    with pytest.raises(EnvironmentStateError, match="episode ended after 2 steps"):
        env.step(_actions(0, 0))
    with pytest.raises(EnvironmentStateError, match="episode ended"):
        env.symbol_observation()


def test_step_when_not_reset_then_environment_state_error(make_episode, risk) -> None:
    env = HierarchicalTradingEnv(make_episode(np.full((2, 2), 100.0)), risk)
    with pytest.raises(EnvironmentStateError, match=r"call reset\(\) first"):
        env.step(_actions(0, 0))


def test_reset_when_episode_played_then_starts_flat_again(make_episode, priced_risk) -> None:
    env = _env(make_episode([[100.0, 50.0], [110.0, 45.0]]), priced_risk)
    env.issue_directive(NORMAL)
    env.step(_actions(FULL, FULL))
    env.step(_actions(FULL, FULL))
    env.reset()
    assert env.t == 0 and not env.done and env.directive is None
    np.testing.assert_array_equal(env.held_levels, [0.0, 0.0])
    assert env.book.net_equity == CASH and env.book.quantities().tolist() == [0.0, 0.0]


# ---- inputs -------------------------------------------------------------------------------------------------


def test_episode_when_one_bar_then_input_shape_error(make_episode) -> None:
    with pytest.raises(InputShapeError, match="at least 2 bars, got 1"):
        make_episode([[100.0, 50.0]])


def test_episode_when_close_not_positive_then_error_names_index(make_episode) -> None:
    with pytest.raises(InputShapeError, match=r"closes: non-positive price at index \(1, 0\)"):
        make_episode([[100.0, 50.0], [0.0, 50.0]])


def test_episode_when_market_features_wrong_width_then_error_names_array(make_episode) -> None:
    with pytest.raises(InputShapeError, match="symbol_market: axis Dm has size 3"):
        make_episode(np.full((2, 2), 100.0), symbol_market=np.zeros((2, 2, 3), dtype=np.float32))


def test_window_when_sliced_then_keeps_symbols_and_rows(make_episode) -> None:
    episode = make_episode([[1.0], [2.0], [3.0], [4.0]], regime=[[0, 0], [1, 0], [1, 0], [1, 1]])
    window = episode.window(1, 3)
    assert window.n_steps == 2 and window.symbols == episode.symbols
    np.testing.assert_array_equal(window.closes, [[2.0], [3.0]])
    assert list(window.timestamps) == list(episode.timestamps[1:3])


def test_settings_when_master_every_zero_then_input_shape_error() -> None:
    with pytest.raises(InputShapeError, match="master_every_bars must be >= 1, got 0"):
        EnvSettings(master_every_bars=0)


def test_settings_from_loop_when_hourly_bars_then_ttl_in_seconds() -> None:
    settings = EnvSettings.from_loop(LoopConfig(master_every_bars=3, directive_ttl_bars=2, bar_seconds=3600.0))
    assert settings.master_every_bars == 3
    assert settings.directive_ttl_seconds == 7200.0
