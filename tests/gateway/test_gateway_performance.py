"""Performance, cost and risk gauges: the pure figures (gateway.domain.performance) on known series, and one
engine run over the in-process paper broker (no HTTP) whose gauges are read back from the metrics registry."""

import math
import statistics
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from gateway_builders import T0, batch, directive

from contracts.config import MarketHoursRule, RiskOverlaysConfig
from contracts.orders import OrderSide
from gateway.audit.store import AuditStore
from gateway.domain.performance import (
    PerformanceWindow,
    average_turnover,
    bar_returns,
    benchmark_divergence,
    closing_gross_pnl,
    cost_to_gross_profit,
    drawdown,
    herfindahl,
    position_values,
    profit_factor,
    sector_exposure,
    sharpe_ratio,
    win_rate,
)
from gateway.engine.execution import realized_cost
from gateway.metrics import GatewayMetrics
from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from paper_exchange.inprocess import InProcessBroker

# ---- pure figures -----------------------------------------------------------------------------------


def test_sharpe_when_known_series_then_mean_over_sample_stdev_annualised_by_bars_per_year() -> None:
    returns = [0.01, -0.005, 0.02, 0.0, 0.004]
    expected = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(252)
    assert sharpe_ratio(returns, 252) == pytest.approx(expected)
    assert sharpe_ratio(returns, 12) == pytest.approx(statistics.mean(returns) / statistics.stdev(returns)
                                                      * math.sqrt(12))
    assert bar_returns([100.0, 110.0, 99.0]) == pytest.approx([0.10, -0.10])


def test_sharpe_when_too_few_returns_or_no_variance_then_nan() -> None:
    assert math.isnan(sharpe_ratio([0.01]))
    assert math.isnan(sharpe_ratio([0.01, 0.01, 0.01]))


def test_win_rate_when_bars_mixed_then_winning_bars_over_bars_that_moved() -> None:
    assert win_rate([1.0, -1.0, 2.0, 0.0, 3.0]) == pytest.approx(3 / 4)  # the flat bar counts neither way
    assert math.isnan(win_rate([0.0, 0.0]))


def test_profit_factor_when_no_losses_then_inf_and_when_nothing_then_nan() -> None:
    assert profit_factor([3.0, -1.0, -2.0, 0.0]) == pytest.approx(1.0)
    assert profit_factor([3.0, 1.0]) == math.inf
    assert math.isnan(profit_factor([0.0]))
    assert profit_factor([-1.0]) == 0.0


def test_herfindahl_when_equal_weights_then_one_over_n_and_shorts_count_by_size() -> None:
    assert herfindahl([25.0, 25.0, 25.0, 25.0]) == pytest.approx(0.25)
    assert herfindahl([50.0, -50.0]) == pytest.approx(0.5)
    assert herfindahl([10.0]) == pytest.approx(1.0)
    assert herfindahl([]) == 0.0


def test_sector_exposure_when_mixed_book_then_gross_per_sector_over_equity_unmapped_unclassified() -> None:
    values = position_values({"AAPL": 10, "MSFT": -20, "XOM": 5, "ZZZ": 1, "NOMARK": 3},
                             {"AAPL": 100.0, "MSFT": 50.0, "XOM": 40.0, "ZZZ": 300.0})
    assert values == {"AAPL": 1000.0, "MSFT": -1000.0, "XOM": 200.0, "ZZZ": 300.0}
    exposure = sector_exposure(values, {"AAPL": "tech", "MSFT": "tech", "XOM": "energy"}, equity=10_000.0)
    assert exposure == pytest.approx({"tech": 0.2, "energy": 0.02, "unclassified": 0.03})
    assert sector_exposure(values, {}, equity=0.0) == {"unclassified": 0.0}


def test_realized_cost_when_fill_favourable_then_negative_cost() -> None:
    # Bought 100 at 99 on a decision at 100, 1 bp commission: -100 + 0.99.
    assert realized_cost(OrderSide.BUY, 100, 99.0, 100.0, 1.0) == pytest.approx(-100 + 0.99)
    assert realized_cost(OrderSide.SELL, 100, 101.0, 100.0, 0.0) == pytest.approx(-100.0)
    assert realized_cost(OrderSide.SELL, 100, 99.0, 100.0, 0.0) == pytest.approx(100.0)


def test_cost_ratio_when_a_favourable_fill_joins_the_window_then_the_ratio_falls() -> None:
    adverse = [10.0, 5.0]
    gross = [None, 100.0]  # an opening fill realizes nothing; a closing one 100
    assert cost_to_gross_profit(adverse, gross) == pytest.approx(0.15)
    with_favourable = cost_to_gross_profit([*adverse, -8.0], [*gross, None])
    assert with_favourable == pytest.approx(0.07)  # included, signed: the old counter dropped it
    assert cost_to_gross_profit([5.0, 1.0], [None, -20.0]) == math.inf  # a loss is no gross profit
    assert math.isnan(cost_to_gross_profit([5.0], [None]))  # nothing closed yet (e.g. just after a start)
    assert math.isnan(cost_to_gross_profit([], []))


def test_closing_gross_pnl_when_fill_closes_then_closed_qty_from_entry_to_decision_price() -> None:
    assert closing_gross_pnl(100, 90.0, False, 40, 100.0) == pytest.approx(400.0)  # sell 40 of a long
    assert closing_gross_pnl(-50, 100.0, True, 80, 90.0) == pytest.approx(500.0)  # buy through a short: 50 closed
    assert closing_gross_pnl(100, 90.0, True, 40, 100.0) is None  # adding closes nothing
    assert closing_gross_pnl(0, 0.0, False, 40, 100.0) is None


def test_drawdown_turnover_and_benchmark_divergence() -> None:
    assert drawdown(90.0, 100.0) == pytest.approx(0.10)
    assert drawdown(110.0, 100.0) == 0.0 and drawdown(50.0, 0.0) == 0.0
    assert average_turnover([50.0, 0.0, 100.0], [100.0, 100.0, 200.0]) == pytest.approx((0.5 + 0 + 0.5) / 3)
    # Book +10% from the first to the last bar with a benchmark price; the benchmark +4%.
    assert benchmark_divergence([100.0, 105.0, 110.0, 111.0], [None, 400.0, None, 416.0]) == pytest.approx(
        (111 / 105 - 1) - 0.04)
    assert math.isnan(benchmark_divergence([100.0, 101.0], [400.0, None]))


def test_window_when_bars_exceed_n_then_only_the_trailing_n_returns_and_fills_count() -> None:
    window = PerformanceWindow(window_bars=2, cost_window_fills=2)
    for day, equity in enumerate([100.0, 50.0, 110.0, 121.0]):
        window.record_fill(notional=equity, signed_cost=1.0, gross_pnl=None)
        window.record_bar(T0 + timedelta(days=day), equity)
    # The same bar sent again (another service's symbols): one bar, the later equity, notional summed.
    window.record_fill(notional=121.0, signed_cost=-4.0, gross_pnl=10.0)
    window.record_bar(T0 + timedelta(days=3), 121.0)
    snap = window.snapshot()
    returns = [110 / 50 - 1, 121 / 110 - 1]  # the 100 -> 50 bar left the window
    assert snap.sharpe == pytest.approx(statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(252))
    assert snap.win_rate == 1.0 and snap.profit_factor == math.inf
    assert snap.turnover == pytest.approx((110 / 110 + 242 / 121) / 2)
    assert snap.cost_to_gross_profit == pytest.approx((1.0 - 4.0) / 10.0)  # the last 2 fills only
    assert snap.realized_cost_signed == pytest.approx(4 * 1.0 - 4.0)  # the running sum keeps every fill
    assert math.isnan(snap.benchmark_divergence)


# ---- the engine ---------------------------------------------------------------------------------------

OPEN = RiskOverlaysConfig(market_hours=MarketHoursRule(source="off"))


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    yield store
    store.close()


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


def test_engine_when_timesteps_settle_then_performance_cost_and_risk_gauges_are_exported(
        audit: AuditStore) -> None:
    broker = InProcessBroker(initial_cash=1_000_000.0)
    settings = GatewaySettings(risk=OPEN, broker_base_url="inprocess://", fill_wait_s=0.0, reconcile_interval_s=0,
                               sectors={"AAPL": "tech", "MSFT": "tech"}, performance_window_bars=10)
    service = GatewayService(settings, broker=broker, audit=audit)
    metrics = service.metrics
    assert math.isnan(sample(metrics, "marlops_gateway_cost_to_gross_profit_ratio"))  # undefined, not 0
    assert math.isnan(sample(metrics, "marlops_gateway_rolling_sharpe"))
    broker.set_prices({"AAPL": 99.0, "NVDA": 40.0})  # AAPL fills 1 below its decision price: a favourable buy
    service.start()
    service.receive_directive(directive("normal", max_position_size=1.0))
    bars = [  # (AAPL level, AAPL price, NVDA price, SPY)
        ({"AAPL": (1.0, 100.0), "NVDA": (1.0, 40.0)}, {"AAPL": 99.0, "NVDA": 40.0}, 400.0),
        ({"AAPL": (1.0, 110.0), "NVDA": (1.0, 44.0)}, {"AAPL": 110.0, "NVDA": 44.0}, 404.0),
        ({"AAPL": (0.0, 120.0), "NVDA": (1.0, 40.0)}, {"AAPL": 120.0, "NVDA": 40.0}, 408.0),  # AAPL closed
        ({"NVDA": (1.0, 36.0)}, {"NVDA": 36.0}, 400.0),
    ]
    equities: list[float] = []
    for i, (levels, prices, spy) in enumerate(bars):
        broker.set_prices(prices)
        decisions = batch(levels, bar_index=i).model_copy(update={"benchmark_price": spy})
        service.handle_timestep(decisions)
        equities.append(sample(metrics, "marlops_gateway_equity"))
    service.stop()

    fills = [e["payload"] for e in audit.list(kind="fill", limit=100)]
    costs = [f["realized_cost"] for f in fills]
    assert min(costs) < 0  # the favourable AAPL buy
    assert sample(metrics, "marlops_gateway_realized_cost_signed_dollars") == pytest.approx(sum(costs))
    assert sample(metrics, "marlops_gateway_realized_cost_total") == pytest.approx(sum(c for c in costs if c > 0))
    ratio = sample(metrics, "marlops_gateway_cost_to_gross_profit_ratio")
    assert math.isfinite(ratio) and ratio < 0  # net favourable costs over the profit of closing AAPL

    pnls = [b - a for a, b in zip(equities, equities[1:], strict=False)]
    assert sample(metrics, "marlops_gateway_rolling_sharpe") == pytest.approx(sharpe_ratio(bar_returns(equities)))
    assert sample(metrics, "marlops_gateway_win_rate_ratio") == pytest.approx(win_rate(pnls))
    assert sample(metrics, "marlops_gateway_profit_factor") == pytest.approx(profit_factor(pnls))
    assert sample(metrics, "marlops_gateway_turnover_ratio") > 0
    assert sample(metrics, "marlops_gateway_benchmark_divergence_ratio") == pytest.approx(
        equities[-1] / equities[0] - 1.0 - 0.0)  # SPY 400 -> 400

    peak = service.kill_switch.status()["peak_equity"]
    assert sample(metrics, "marlops_gateway_drawdown_from_peak_ratio") == pytest.approx(1 - equities[-1] / peak)
    assert sample(metrics, "marlops_gateway_drawdown_from_peak_ratio") > 0
    assert sample(metrics, "marlops_gateway_drawdown_intraday_ratio") == 0.0  # one bar per session: at its peak
    nvda = broker.get_positions()[0]
    assert nvda.symbol == "NVDA"
    assert sample(metrics, "marlops_gateway_sector_exposure_ratio", sector="unclassified") == pytest.approx(
        abs(nvda.qty) * 36.0 / equities[-1])
    assert sample(metrics, "marlops_gateway_sector_exposure_ratio", sector="tech") == 0.0  # held, then closed
    assert sample(metrics, "marlops_gateway_herfindahl_ratio") == pytest.approx(1.0)


def test_engine_when_no_benchmark_price_sent_then_the_benchmark_symbols_decision_price_is_used(
        audit: AuditStore) -> None:
    broker = InProcessBroker(initial_cash=1_000_000.0)
    settings = GatewaySettings(risk=OPEN, broker_base_url="inprocess://", fill_wait_s=0.0, reconcile_interval_s=0)
    service = GatewayService(settings, broker=broker, audit=audit)
    broker.set_prices({"AAPL": 100.0, "SPY": 400.0})
    service.start()
    service.receive_directive(directive("normal", max_position_size=1.0))
    equities = []
    for i, (aapl, spy) in enumerate([(100.0, 400.0), (105.0, 420.0)]):
        broker.set_prices({"AAPL": aapl, "SPY": spy})
        service.handle_timestep(batch({"AAPL": (1.0, aapl), "SPY": (0.0, spy)}, bar_index=i))  # SPY not held
        equities.append(sample(service.metrics, "marlops_gateway_equity"))
    service.stop()
    assert sample(service.metrics, "marlops_gateway_benchmark_divergence_ratio") == pytest.approx(
        (equities[1] / equities[0] - 1.0) - 0.05)
