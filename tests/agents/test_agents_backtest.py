import itertools

import numpy as np
import pytest

from contracts.config import RiskOverlaysConfig
from contracts.policy import DIRECTIVE_MODES

from agents.backtest import OrderRecord, constant_master, run_backtest
from agents.environment import MASTER_OBS_DIM, EnvSettings, HierarchicalTradingEnv
from agents.errors import AgentError

RATE = (1.0 + 2.0 / 2 + 1.0) * 1e-4  # commission + half spread + slippage of `priced_risk`
CASH = 1_000_000.0
FULL = 4  # index of level 1.0 in DEFAULT_ACTION_LEVELS


@pytest.fixture
def priced_risk() -> RiskOverlaysConfig:
    return RiskOverlaysConfig(commission_bps=1.0, spread_bps=2.0, slippage_bps=1.0)


def _constant(action: int):
    def act(observations: np.ndarray) -> np.ndarray:
        return np.full(len(observations), action, dtype=np.int64)

    return act


def _cycling(n_actions: int):
    """A deterministic symbol "policy" that changes its mind every bar, so the book trades on most bars."""
    counter = itertools.count()

    def act(observations: np.ndarray) -> np.ndarray:
        k = next(counter)
        return ((np.arange(len(observations)) + k * 3) % n_actions).astype(np.int64)

    return act


@pytest.fixture
def random_walk(make_episode):
    rng = np.random.default_rng(11)
    return make_episode(100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.02, size=(15, 3)), axis=0))


# ---- constant_master ----------------------------------------------------------------------------------------


def test_constant_master_when_normal_then_index_zero_for_each_row() -> None:
    actions = constant_master("normal")(np.zeros((3, MASTER_OBS_DIM), dtype=np.float32))
    assert actions.dtype == np.int64
    assert actions.tolist() == [0, 0, 0]


def test_constant_master_when_defensive_then_its_mode_index() -> None:
    actions = constant_master("defensive")(np.zeros((2, MASTER_OBS_DIM), dtype=np.float32))
    assert [DIRECTIVE_MODES[a] for a in actions] == ["defensive", "defensive"]


def test_constant_master_when_unknown_mode_then_agent_error_names_it() -> None:
    with pytest.raises(AgentError, match="unknown directive mode 'aggressive'"):
        constant_master("aggressive")


# ---- run_backtest -------------------------------------------------------------------------------------------


def test_run_backtest_when_fully_long_then_orders_returns_and_weights_by_hand(make_episode, priced_risk) -> None:
    episode = make_episode([[100.0, 50.0], [110.0, 50.0], [110.0, 50.0]])
    result = run_backtest(episode, priced_risk, _constant(FULL), constant_master("normal"))

    # Bar 0: 10% of 1,000,000 -> 1000 S0 at 100, 2000 S1 at 50; costs 3 bp of 200,000 = 60.
    # Bar 1: equity 1,010,000 -> S0 101,000 / 110 = 918.2 -> 918 (sell 82), S1 101,000 / 50 = 2020 (buy 20).
    assert result.orders == (
        OrderRecord(0, "S0", "buy", 1000.0),
        OrderRecord(0, "S1", "buy", 2000.0),
        OrderRecord(1, "S0", "sell", 82.0),
        OrderRecord(1, "S1", "buy", 20.0),
    )
    net_1 = 1_010_000.0 - 60.0
    cost_1 = (82 * 110.0 + 20 * 50.0) * RATE
    np.testing.assert_allclose(result.returns, [(10_000.0 - 60.0) / CASH, -cost_1 / net_1], rtol=1e-12)
    np.testing.assert_allclose(result.costs, [60.0 / CASH, cost_1 / net_1], rtol=1e-12)
    np.testing.assert_allclose(result.turnover, [200_000.0 / CASH, (82 * 110.0 + 20 * 50.0) / net_1], rtol=1e-12)
    np.testing.assert_allclose(result.weights, [[0.1, 0.1], [918 * 110.0 / net_1, 2020 * 50.0 / net_1]], rtol=1e-12)
    assert result.final_net_equity == pytest.approx(net_1 - cost_1, rel=1e-12)
    assert result.final_book_equity == pytest.approx(1_010_000.0, rel=1e-12)  # the book carries no costs
    assert result.directive_modes == ("normal", "normal")
    assert list(result.timestamps) == list(episode.timestamps[1:])


def test_run_backtest_when_any_policy_then_returns_compound_to_final_net_equity(random_walk, priced_risk) -> None:
    result = run_backtest(random_walk, priced_risk, _cycling(5), constant_master("cautious"))
    assert result.returns.shape == (random_walk.n_steps - 1,)
    assert len(result.timestamps) == random_walk.n_steps - 1
    assert len(result.orders) > 0
    assert np.prod(1.0 + result.returns) == pytest.approx(result.final_net_equity / CASH, abs=1e-9)


def test_run_backtest_when_trade_last_bar_then_every_bar_decides_and_pays_its_costs(random_walk, priced_risk) -> None:
    result = run_backtest(random_walk, priced_risk, _cycling(5), constant_master("normal"), trade_last_bar=True)
    steps = random_walk.n_steps
    assert result.returns.shape == (steps,) and result.weights.shape == (steps, 3)
    assert len(result.timestamps) == steps and len(result.directive_modes) == steps
    assert any(o.bar_index == steps - 1 for o in result.orders)
    assert result.returns[-1] == pytest.approx(-result.costs[-1], rel=1e-12)  # no bar left to earn on
    assert np.prod(1.0 + result.returns) == pytest.approx(result.final_net_equity / CASH, abs=1e-9)


def test_run_backtest_when_replayed_by_hand_then_orders_are_the_books_intents(random_walk, priced_risk) -> None:
    result = run_backtest(random_walk, priced_risk, _cycling(5), constant_master("normal"))

    env = HierarchicalTradingEnv(random_walk, priced_risk, EnvSettings())
    env.reset()
    act = _cycling(5)
    intents = []
    for t in range(random_walk.n_steps - 1):
        if env.master_due():
            env.issue_directive(0)
        step = env.step(act(env.symbol_observation()))
        intents.extend((t, i.symbol, i.side.value, i.qty) for i in step.book.intents)

    assert [(o.bar_index, o.symbol, o.side, o.qty) for o in result.orders] == intents
    assert result.final_net_equity == env.book.net_equity


def test_run_backtest_when_flat_policy_then_no_orders_costs_or_returns(random_walk, priced_risk) -> None:
    result = run_backtest(random_walk, priced_risk, _constant(0), constant_master("normal"))
    assert result.orders == ()
    np.testing.assert_array_equal(result.costs, np.zeros(random_walk.n_steps - 1))
    np.testing.assert_array_equal(result.returns, np.zeros(random_walk.n_steps - 1))
    np.testing.assert_array_equal(result.weights, np.zeros((random_walk.n_steps - 1, 3)))
    assert result.final_net_equity == CASH


def test_run_backtest_when_no_master_then_defensive_fallback_and_no_directive_modes(random_walk, priced_risk) -> None:
    result = run_backtest(random_walk, priced_risk, _constant(FULL), None)
    assert result.directive_modes == ("",) * (random_walk.n_steps - 1)
    assert result.orders == ()
    assert result.final_net_equity == CASH


def test_run_backtest_when_master_policy_given_then_consulted_only_when_due(random_walk, priced_risk) -> None:
    issued = itertools.cycle([0, 2, 1])

    def master(observations: np.ndarray) -> np.ndarray:
        return np.array([next(issued)], dtype=np.int64)

    result = run_backtest(random_walk, priced_risk, _constant(0), master, settings=EnvSettings(master_every_bars=2))
    # Bars 0-1 normal, 2-3 defensive, 4-5 cautious, 6-7 normal, ... (no regime flags change).
    expected = tuple(DIRECTIVE_MODES[[0, 2, 1][(t // 2) % 3]] for t in range(random_walk.n_steps - 1))
    assert result.directive_modes == expected


def test_run_backtest_when_symbol_policy_not_callable_then_agent_error(random_walk, priced_risk) -> None:
    with pytest.raises(AgentError, match="policy must be a torch.nn.Module or a callable, got int"):
        run_backtest(random_walk, priced_risk, 3, None)  # type: ignore[arg-type]
