import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from contracts.bars import BAR_COLUMNS
from market_data.source import dataset_id
from market_data.synthetic import SECTORS, SyntheticConfig, generate_synthetic_market


@pytest.fixture(scope="module")
def market():
    return generate_synthetic_market(SyntheticConfig(n_symbols=10, n_days=250, seed=11))


def _log_returns(bars: pd.DataFrame) -> pd.DataFrame:
    close = bars.pivot(index="timestamp", columns="symbol", values="close")
    return np.log(close / close.shift(1)).iloc[1:]


def test_generate_when_same_config_then_identical_frame():
    cfg = SyntheticConfig(n_symbols=6, n_days=80, seed=3, preset="planted-alpha")
    first, second = generate_synthetic_market(cfg), generate_synthetic_market(cfg)
    pd.testing.assert_frame_equal(first.bars, second.bars)
    pd.testing.assert_series_equal(first.regimes, second.regimes)
    assert first.sectors == second.sectors
    assert dataset_id(first.bars) == dataset_id(second.bars)


def test_generate_when_seed_differs_then_prices_differ():
    a = generate_synthetic_market(SyntheticConfig(n_symbols=4, n_days=40, seed=1)).bars
    b = generate_synthetic_market(SyntheticConfig(n_symbols=4, n_days=40, seed=2)).bars
    assert dataset_id(a) != dataset_id(b)
    assert not np.allclose(a["close"], b["close"])


def test_generate_when_default_then_frame_follows_bars_contract(market):
    bars = market.bars
    assert tuple(bars.columns) == BAR_COLUMNS
    assert isinstance(bars.index, pd.RangeIndex)
    assert str(bars["timestamp"].dt.tz) == "UTC"
    ordered = bars.sort_values(["timestamp", "symbol"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(bars, ordered)
    assert not bars.duplicated(["timestamp", "symbol"]).any()
    stamps = pd.DatetimeIndex(bars["timestamp"].unique())
    assert len(stamps) == 250
    assert (stamps.hour == 21).all() and (stamps.dayofweek < 5).all()
    assert set(bars["symbol"]) == {f"SYM{i:02d}" for i in range(10)} | {"SPY", "VIX"}


def test_generate_when_default_then_ohlc_consistent_and_volume_positive(market):
    bars = market.bars
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars[["open", "high", "low", "close"]] > 0).all().all()
    traded = bars[bars["symbol"] != "VIX"]
    assert (traded["volume"] > 0).all()
    vix = bars[bars["symbol"] == "VIX"]
    assert (vix["volume"] == 0).all()
    assert (vix["open"] == vix["close"]).all() and (vix["high"] == vix["low"]).all()


def test_generate_when_default_then_sectors_cover_all_trading_symbols(market):
    assert set(market.sectors) == {f"SYM{i:02d}" for i in range(10)}
    assert set(market.sectors.values()) == set(SECTORS)
    assert len(SECTORS) == 5


def test_generate_when_regime_is_stressed_then_volatility_and_vix_are_higher():
    m = generate_synthetic_market(SyntheticConfig(n_symbols=8, n_days=1500, seed=5))
    regimes = m.regimes
    assert set(regimes.unique()) == {"calm", "stressed"}
    returns = _log_returns(m.bars)
    stressed = (regimes.reindex(returns.index) == "stressed").to_numpy()
    traded = [c for c in returns.columns if c.startswith("SYM")]
    calm_vol = returns.loc[~stressed, traded].std().mean()
    stressed_vol = returns.loc[stressed, traded].std().mean()
    assert stressed_vol > 1.5 * calm_vol
    vix = m.bars[m.bars["symbol"] == "VIX"].set_index("timestamp")["close"]
    assert vix[regimes == "stressed"].mean() > vix[regimes == "calm"].mean() + 5


def test_generate_when_preset_differs_then_only_planted_alpha_has_lag_one_sign_predictability():
    def sign_hit_rate(preset: str, regime: str | None = None) -> float:
        market = generate_synthetic_market(SyntheticConfig(n_symbols=20, n_days=400, seed=9, preset=preset))
        returns = _log_returns(market.bars)[[f"SYM{i:02d}" for i in range(20)]]
        same = (np.sign(returns.shift(1)) == np.sign(returns)).iloc[1:]
        if regime is not None:
            same = same[(market.regimes.reindex(same.index) == regime).to_numpy()]
        return float(same.to_numpy().mean())

    # Momentum in calm markets, reversal in stressed ones.
    assert sign_hit_rate("planted-alpha", "calm") > 0.56
    assert sign_hit_rate("planted-alpha", "stressed") < 0.44
    assert abs(sign_hit_rate("no-alpha") - 0.5) < 0.03
    assert abs(sign_hit_rate("default") - 0.5) < 0.03


def test_generate_when_no_alpha_then_simple_returns_have_no_drift():
    bars = generate_synthetic_market(SyntheticConfig(n_symbols=30, n_days=1000, seed=4, preset="no-alpha")).bars
    close = bars[bars["symbol"].str.startswith("SYM")].pivot(index="timestamp", columns="symbol", values="close")
    simple = (close / close.shift(1) - 1).iloc[1:].to_numpy()
    standard_error = simple.std() / np.sqrt(simple.size)
    assert abs(simple.mean()) < 4 * standard_error


def test_config_when_preset_unknown_then_validation_error_names_it():
    with pytest.raises(ValidationError, match="preset"):
        SyntheticConfig(preset="moon")


def test_config_when_start_is_not_a_date_then_validation_error():
    with pytest.raises(ValidationError, match="not a date"):
        SyntheticConfig(start="yesterday-ish")
