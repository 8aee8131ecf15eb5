"""The bars suite demands the volatility series the configured proxy reads, and no other."""

import pandas as pd
import pytest

from contracts.config import VolatilityProxyConfig
from data_checks.bars_suite import required_symbols, validate_bars
from market_data.synthetic import SyntheticConfig, generate_synthetic_market


@pytest.fixture(scope="module")
def no_vix() -> pd.DataFrame:
    bars = generate_synthetic_market(SyntheticConfig(n_symbols=3, n_days=30, seed=2)).bars
    return bars[bars["symbol"] != "VIX"].reset_index(drop=True)


def test_check_when_no_vix_and_realized_or_auto_proxy_then_passes(no_vix) -> None:
    assert validate_bars(no_vix, volatility_proxy=VolatilityProxyConfig(source="realized")).success
    assert validate_bars(no_vix, volatility_proxy=VolatilityProxyConfig()).success


def test_check_when_no_vix_and_index_proxy_then_fails_naming_vix(no_vix) -> None:
    result = validate_bars(no_vix)
    assert not result.success
    failure = next(f for f in result.errors if f.check == "index_symbols_present")
    assert "VIX" in failure.detail


def test_check_when_etf_proxy_rows_absent_then_fails_naming_the_etf(no_vix) -> None:
    result = validate_bars(no_vix, volatility_proxy=VolatilityProxyConfig(source="etf", symbol="VIXY"))
    failure = next(f for f in result.errors if f.check == "index_symbols_present")
    assert "['VIXY']" in failure.detail and "etf" in failure.detail


def test_required_symbols_when_each_proxy_then_benchmark_plus_its_input() -> None:
    assert required_symbols(None) == ("SPY", "VIX")
    assert required_symbols(VolatilityProxyConfig(source="realized")) == ("SPY",)
    assert required_symbols(VolatilityProxyConfig(source="realized", symbol="QQQ")) == ("SPY", "QQQ")
    assert required_symbols(VolatilityProxyConfig(source="etf", symbol="VIXY")) == ("SPY", "VIXY")
    assert required_symbols(VolatilityProxyConfig()) == ("SPY",)
