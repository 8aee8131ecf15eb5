"""Features on a volatility proxy: the spec names it, serving applies the same one (parity), old specs keep their hash."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from contracts.config import MarketDataConfig, VolatilityProxyConfig, load_rl_config
from contracts.features import DEFAULT_VOLATILITY_SOURCE, FeatureSpec
from features.errors import FeatureError, MissingDataError
from features.master_features import compute_feature_tables
from features.observation import ObservationBuilder, observation_checksum
from features.service import FeatureService, feature_warmup_bars
from features.spec import fit_feature_spec
from market_data.replay import ReplayClock, bars_at
from market_data.source import load_market
from market_data.synthetic import SyntheticConfig, generate_synthetic_market
from market_data.volatility import apply_volatility_proxy, market_input_symbols, proxy_from_spec
from marlops.candidates import check_bars, fit_spec

SYMBOLS = tuple(f"SYM{i:02d}" for i in range(6))
REALIZED = VolatilityProxyConfig(source="realized", symbol="SPY", window=21)
ETF = VolatilityProxyConfig(source="etf", symbol="VIXY")
CONFIG = load_rl_config()


def _with_proxy(proxy: VolatilityProxyConfig):  # type: ignore[no-untyped-def]
    serving = CONFIG.serving.model_copy(update={"market_data": MarketDataConfig(volatility_proxy=proxy)})
    return CONFIG.model_copy(update={"serving": serving})


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=6, n_days=170, seed=3, preset="planted-alpha")).bars


@pytest.fixture(scope="module")
def no_vix(market) -> pd.DataFrame:
    return market[market["symbol"] != "VIX"].reset_index(drop=True)


@pytest.fixture(scope="module")
def with_vixy(market) -> pd.DataFrame:
    """The synthetic VIX traded as an ETF named VIXY (and no VIX series)."""
    out = market.assign(symbol=market["symbol"].replace({"VIX": "VIXY"}))
    out.loc[out["symbol"] == "VIXY", "volume"] = 1e6
    return out.sort_values(["timestamp", "symbol"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def stamps(market) -> np.ndarray:
    return np.sort(market["timestamp"].unique())


@pytest.fixture(scope="module")
def realized_spec(no_vix, stamps) -> FeatureSpec:
    return fit_feature_spec(no_vix[no_vix["timestamp"] <= stamps[99]], volatility_proxy=REALIZED)


@pytest.fixture(scope="module")
def etf_spec(with_vixy, stamps) -> FeatureSpec:
    return fit_feature_spec(with_vixy[with_vixy["timestamp"] <= stamps[99]], volatility_proxy=ETF)


def _assert_service_matches_batch(spec: FeatureSpec, raw: pd.DataFrame, stamps: np.ndarray, first: int) -> int:
    tensors = ObservationBuilder(spec).training_tensors(raw)
    market, master = compute_feature_tables(apply_volatility_proxy(raw, proxy_from_spec(spec)))
    service = FeatureService(spec, SYMBOLS, history=raw[raw["timestamp"] < stamps[first]])
    levels = np.linspace(0.0, 1.0, len(SYMBOLS))
    steps = 0
    for ts in ReplayClock(stamps[first:]):
        snapshot = service.on_bars(bars_at(raw, ts))
        k = tensors.timestamps.get_loc(snapshot.timestamp)
        pd.testing.assert_frame_equal(snapshot.market_rows, market.xs(ts, level="timestamp").loc[list(SYMBOLS)],
                                      check_exact=True)
        pd.testing.assert_series_equal(snapshot.master_row, master.loc[ts], check_exact=True)
        per_step = service.symbol_observations(snapshot, levels, 0.3)
        bulk = np.concatenate([tensors.symbol_market[k], service.builder.symbol_portfolio_matrix(levels, 0.3)], axis=1)
        assert observation_checksum(per_step) == observation_checksum(bulk)
        master_step = service.master_observation(snapshot, drawdown=0.02, gross_exposure=0.3)
        master_bulk = np.concatenate([tensors.master_market[k : k + 1],
                                      service.builder.master_portfolio_vector(0.02, 0.3)], axis=1)
        assert observation_checksum(master_step) == observation_checksum(master_bulk)
        steps += 1
    return steps


def test_fit_spec_when_realized_proxy_then_spec_names_it_and_hash_covers_it(realized_spec) -> None:
    assert realized_spec.volatility_source == "realized:SPY:21"
    assert '"volatility_source":"realized:SPY:21"' in realized_spec.canonical_json()
    as_index = realized_spec.model_copy(update={"volatility_source": DEFAULT_VOLATILITY_SOURCE})
    assert as_index.spec_hash() != realized_spec.spec_hash()
    assert FeatureSpec.model_validate_json(realized_spec.canonical_json()) == realized_spec


def test_service_when_realized_proxy_spec_then_every_step_equals_batch(realized_spec, no_vix, stamps) -> None:
    steps = _assert_service_matches_batch(realized_spec, no_vix, stamps, first=110)
    assert steps == len(stamps) - 110


def test_service_when_etf_proxy_spec_then_every_step_equals_batch(etf_spec, with_vixy, stamps) -> None:
    assert etf_spec.volatility_source == "etf:VIXY"
    assert _assert_service_matches_batch(etf_spec, with_vixy, stamps, first=150) == len(stamps) - 150


def test_service_when_started_cold_with_realized_proxy_then_warm_up_covers_the_proxy(realized_spec, no_vix,
                                                                                     stamps) -> None:
    warmup = feature_warmup_bars(REALIZED)
    assert warmup == 21 + 1 + 5  # 21 returns for the first value, then vix_change_5 needs 5 more bars
    with pytest.raises(FeatureError, match=r"shorter than the feature warm-up of 27 bars \(volatility proxy"):
        FeatureService(realized_spec, SYMBOLS, window=warmup - 1)
    service = FeatureService(realized_spec, SYMBOLS, window=warmup)
    for ts in stamps[: warmup - 1]:
        with pytest.raises(MissingDataError, match=f"history too short: .* {warmup} needed"):
            service.on_bars(bars_at(no_vix, ts))
    snapshot = service.on_bars(bars_at(no_vix, stamps[warmup - 1]))
    _, master = compute_feature_tables(apply_volatility_proxy(no_vix, REALIZED))
    assert master.index[0] == stamps[warmup - 1]
    pd.testing.assert_series_equal(snapshot.master_row, master.loc[stamps[warmup - 1]], check_exact=True)


def test_service_when_bars_lack_the_etf_proxy_then_refused_naming_it(etf_spec, with_vixy, stamps) -> None:
    service = FeatureService(etf_spec, SYMBOLS, history=with_vixy[with_vixy["timestamp"] < stamps[120]])
    assert service.market_inputs == market_input_symbols(proxy_from_spec(etf_spec)) == ("SPY", "VIXY")
    rows = bars_at(with_vixy, stamps[120])
    with pytest.raises(MissingDataError, match=r"lack symbols \['VIXY'\] .*volatility proxy etf:VIXY"):
        service.on_bars(rows[rows["symbol"] != "VIXY"])
    # A VIX series does not stand in for the ETF the spec was fitted on.
    vix_instead = rows.assign(symbol=rows["symbol"].replace({"VIXY": "VIX"}))
    with pytest.raises(MissingDataError, match=r"lack symbols \['VIXY'\]"):
        service.on_bars(vix_instead)


def test_service_when_index_spec_gets_bars_without_vix_then_refused(no_vix, market, stamps) -> None:
    spec = fit_feature_spec(market[market["timestamp"] <= stamps[99]])
    assert spec.volatility_source == DEFAULT_VOLATILITY_SOURCE
    with pytest.raises(MissingDataError, match=r"history lacks \['VIX'\].*index:VIX"):
        FeatureService(spec, SYMBOLS, history=no_vix[no_vix["timestamp"] < stamps[60]])
    service = FeatureService(spec, SYMBOLS, history=market[market["timestamp"] < stamps[60]])
    with pytest.raises(MissingDataError, match=r"lack symbols \['VIX'\] .*index:VIX"):
        service.on_bars(bars_at(no_vix, stamps[60]))


def test_service_when_etf_proxy_listed_as_tradable_then_error(etf_spec) -> None:
    with pytest.raises(FeatureError, match=r"\['VIXY'\] are market inputs.*etf:VIXY"):
        FeatureService(etf_spec, (*SYMBOLS, "VIXY"))


def test_fit_feature_spec_when_index_proxy_and_no_vix_then_error_names_config_key(no_vix) -> None:
    with pytest.raises(MissingDataError, match=r"no VIX rows.*market_data\.volatility_proxy"):
        fit_feature_spec(no_vix)


def test_old_spec_json_when_loaded_without_the_field_then_index_default_and_same_hash(market, stamps) -> None:
    spec = fit_feature_spec(market[market["timestamp"] <= stamps[99]])
    old = spec.model_dump(mode="json")
    del old["volatility_source"]
    old_json = json.dumps(old, sort_keys=True, separators=(",", ":"))  # the canonical form before the field existed
    loaded = FeatureSpec.model_validate_json(old_json)
    assert loaded.volatility_source == DEFAULT_VOLATILITY_SOURCE
    assert loaded.canonical_json() == old_json == spec.canonical_json()
    assert loaded.spec_hash() == hashlib.sha256(old_json.encode()).hexdigest() == spec.spec_hash()
    assert proxy_from_spec(loaded).name == "index:VIX"


def test_spec_when_volatility_source_malformed_then_refused(market, stamps) -> None:
    spec = fit_feature_spec(market[market["timestamp"] <= stamps[99]])
    data = json.loads(spec.canonical_json())
    for bad in ("vix", "index:VIXY", "realized:SPY", "etf:"):
        with pytest.raises(ValueError):
            FeatureSpec.model_validate({**data, "volatility_source": bad})


def test_bar_file_when_it_has_no_vix_then_loads_checks_and_fits_with_the_realized_proxy(no_vix, tmp_path) -> None:
    path = tmp_path / "bars.csv"
    no_vix.assign(timestamp=no_vix["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(path, index=False)
    bars = load_market(str(path))
    assert "VIX" not in set(bars["symbol"])
    check_bars(bars)  # the default (auto) proxy demands no VIX
    check_bars(bars, REALIZED)
    spec = fit_spec(bars, _with_proxy(REALIZED), seed=1)
    assert spec.volatility_source == "realized:SPY:21"
    auto = fit_spec(bars, CONFIG, seed=1)  # the shipped config: auto falls back to the same proxy
    assert auto.spec_hash() == spec.spec_hash()
    tensors = ObservationBuilder(spec).training_tensors(bars)
    assert tensors.symbols == SYMBOLS and len(tensors.timestamps) > 100
