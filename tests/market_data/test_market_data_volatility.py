"""The volatility proxy: realized volatility is causal and hand-checkable, an ETF relabels, auto falls back."""

import logging
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from contracts.config import VolatilityProxyConfig, load_serving
from contracts.features import DEFAULT_VOLATILITY_SOURCE
from market_data.errors import MarketDataError
from market_data.synthetic import SyntheticConfig, generate_synthetic_market
from market_data.volatility import (
    CONFIG_KEY,
    apply_volatility_proxy,
    market_input_symbols,
    non_tradable_symbols,
    proxy_warmup_bars,
    realized_volatility,
    resolve_volatility_proxy,
)

REALIZED = VolatilityProxyConfig(source="realized", symbol="SPY", window=5)
ETF = VolatilityProxyConfig(source="etf", symbol="VIXY")


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=3, n_days=60, seed=5)).bars


def _without_vix(bars: pd.DataFrame) -> pd.DataFrame:
    return bars[bars["symbol"] != "VIX"].reset_index(drop=True)


def _vix(frame: pd.DataFrame) -> pd.Series:
    return frame[frame["symbol"] == "VIX"].set_index("timestamp")["close"]


def _small_frame(closes: list[float]) -> pd.DataFrame:
    stamps = pd.date_range("2024-01-02 21:00", periods=len(closes), freq="D", tz="UTC")
    spy = pd.DataFrame({"symbol": "SPY", "timestamp": stamps, "open": closes, "high": closes, "low": closes,
                        "close": closes, "volume": 1e6})
    other = spy.assign(symbol="AAA", volume=1e3)
    return pd.concat([spy, other], ignore_index=True).sort_values(["timestamp", "symbol"]).reset_index(drop=True)


def test_realized_proxy_when_small_frame_then_matches_hand_computation() -> None:
    closes = [100.0, 101.0, 99.5, 102.0, 101.0, 103.5, 104.0, 102.5]
    out = apply_volatility_proxy(_small_frame(closes), REALIZED)
    vix = _vix(out)
    assert len(vix) == len(closes)
    assert vix.iloc[:5].isna().all()  # 5 returns need 6 closes: rows 0..4 are the proxy's warm-up
    for t in range(5, len(closes)):
        returns = [math.log(closes[i] / closes[i - 1]) for i in range(t - 4, t + 1)]
        mean = sum(returns) / 5
        expected = math.sqrt(sum((r - mean) ** 2 for r in returns) / 4) * 100 * math.sqrt(252)
        assert vix.iloc[t] == pytest.approx(expected, rel=1e-12)
    rows = out[out["symbol"] == "VIX"].iloc[5]
    assert rows["open"] == rows["high"] == rows["low"] == rows["close"] and rows["volume"] == 0.0
    assert proxy_warmup_bars(REALIZED) == 6


def test_realized_proxy_when_future_bars_change_then_past_values_identical(bars: pd.DataFrame) -> None:
    raw = _without_vix(bars)
    stamps = np.sort(raw["timestamp"].unique())
    changed = raw.copy()
    future = changed["timestamp"] >= stamps[40]
    changed.loc[future, ["open", "high", "low", "close"]] *= np.linspace(0.7, 1.4, int(future.sum()))[:, None]
    a = _vix(apply_volatility_proxy(raw, REALIZED))
    b = _vix(apply_volatility_proxy(changed, REALIZED))
    np.testing.assert_array_equal(a.loc[: stamps[39]].to_numpy(), b.loc[: stamps[39]].to_numpy())
    assert not np.array_equal(a.loc[stamps[40]:].to_numpy(), b.loc[stamps[40]:].to_numpy())
    # A trailing slice reproduces the full-history values bit for bit once its own warm-up is over.
    tail = _vix(apply_volatility_proxy(raw[raw["timestamp"] >= stamps[30]], REALIZED))
    np.testing.assert_array_equal(tail.loc[stamps[35]:].to_numpy(), a.loc[stamps[35]:].to_numpy())
    # Deterministic.
    pd.testing.assert_frame_equal(apply_volatility_proxy(raw, REALIZED), apply_volatility_proxy(raw, REALIZED))


def test_realized_proxy_when_benchmark_bar_missing_then_windows_touching_it_are_undefined() -> None:
    closes = [100.0 + i for i in range(12)]
    frame = _small_frame(closes)
    frame = frame[~((frame["symbol"] == "SPY") & (frame["timestamp"] == frame["timestamp"].unique()[7]))]
    vix = _vix(apply_volatility_proxy(frame, REALIZED))
    assert np.isfinite(vix.iloc[5:7]).all()
    assert vix.iloc[7:].isna().all()  # rows 7..11 each hold the gap's return (r_7 or r_8) in their window


def test_realized_proxy_when_bars_hold_vix_then_it_is_replaced(bars: pd.DataFrame) -> None:
    out = apply_volatility_proxy(bars, REALIZED)
    expected = _vix(apply_volatility_proxy(_without_vix(bars), REALIZED))
    pd.testing.assert_series_equal(_vix(out), expected)
    assert (out["symbol"] == "VIX").sum() == bars["timestamp"].nunique()


def test_etf_proxy_when_applied_then_etf_rows_become_vix_and_leave_the_universe(bars: pd.DataFrame) -> None:
    raw = bars.assign(symbol=bars["symbol"].replace({"VIX": "VIXY"}))
    raw.loc[raw["symbol"] == "VIXY", "volume"] = 5e5
    out = apply_volatility_proxy(raw, ETF)
    assert "VIXY" not in set(out["symbol"])
    vixy = raw[raw["symbol"] == "VIXY"].set_index("timestamp")[["open", "high", "low", "close", "volume"]]
    vix = out[out["symbol"] == "VIX"].set_index("timestamp")[["open", "high", "low", "close", "volume"]]
    pd.testing.assert_frame_equal(vix, vixy)
    pd.testing.assert_frame_equal(out[out["symbol"] != "VIX"].reset_index(drop=True),
                                  raw[raw["symbol"] != "VIXY"].reset_index(drop=True))
    assert "VIXY" in non_tradable_symbols(ETF)
    assert market_input_symbols(ETF) == ("SPY", "VIXY")


def test_etf_proxy_when_etf_rows_absent_then_error_names_proxy_and_config_key(bars: pd.DataFrame) -> None:
    with pytest.raises(MarketDataError, match=r"no VIXY rows, which the volatility proxy etf:VIXY needs.*market_data"):
        apply_volatility_proxy(bars, ETF)


def test_index_proxy_when_vix_rows_absent_then_error_names_config_key(bars: pd.DataFrame) -> None:
    with pytest.raises(MarketDataError) as caught:
        apply_volatility_proxy(_without_vix(bars), VolatilityProxyConfig(source="index"))
    assert CONFIG_KEY in str(caught.value) and "index:VIX" in str(caught.value)


def test_index_proxy_when_vix_present_then_bars_returned_untouched(bars: pd.DataFrame) -> None:
    assert apply_volatility_proxy(bars, VolatilityProxyConfig(source="index")) is bars


def test_auto_proxy_when_vix_absent_then_realized_from_benchmark_with_warning(bars: pd.DataFrame, caplog) -> None:
    auto = VolatilityProxyConfig(window=5)
    assert auto.source == "auto" and auto.symbol == "SPY"
    with caplog.at_level(logging.WARNING, logger="market_data.volatility"):
        resolved = resolve_volatility_proxy(auto, _without_vix(bars))
    assert resolved.name == "realized:SPY:5"
    assert "realized:SPY:5" in caplog.text
    assert resolve_volatility_proxy(auto, bars).name == DEFAULT_VOLATILITY_SOURCE
    pd.testing.assert_frame_equal(apply_volatility_proxy(_without_vix(bars), auto),
                                  apply_volatility_proxy(_without_vix(bars), REALIZED))


def test_proxy_config_when_named_then_round_trips_and_bad_values_are_refused() -> None:
    for proxy in (REALIZED, ETF, VolatilityProxyConfig(source="index")):
        assert VolatilityProxyConfig.from_name(proxy.name) == proxy
    for bad in ({"source": "etf"}, {"source": "etf", "symbol": "VIX"}, {"source": "index", "symbol": "VIXY"},
                {"source": "realized", "symbol": "SPY", "window": 1}, {"source": "realized", "symbol": "spy"}):
        with pytest.raises(ValidationError):
            VolatilityProxyConfig.model_validate(bad)
    with pytest.raises(ValueError, match="not index:VIX"):
        VolatilityProxyConfig.from_name("garch:SPY")
    with pytest.raises(ValueError, match="auto proxy has no name"):
        _ = VolatilityProxyConfig().name


def test_serving_config_when_loaded_then_market_data_proxy_is_auto_from_spy() -> None:
    proxy = load_serving().market_data.volatility_proxy
    assert (proxy.source, proxy.symbol, proxy.window) == ("auto", "SPY", 21)


def test_realized_volatility_when_series_shorter_than_window_then_all_undefined() -> None:
    assert np.isnan(realized_volatility(np.array([100.0, 101.0, 102.0]), 5)).all()
