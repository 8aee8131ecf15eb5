import shutil
from pathlib import Path

import pytest

from contracts.config import (
    EvaluationConfig,
    SLFallbackConfig,
    load_evaluation,
    load_risk,
    load_rl_config,
    load_serving,
)
from contracts.errors import ConfigError
from contracts.features import FeatureBlock, FeatureSpec, SLModelParams, SYMBOL_FEATURES

REPO = Path(__file__).resolve().parents[2]


def test_load_when_shipped_config_then_validated_defaults() -> None:
    config = load_rl_config(REPO / "config" / "rl")
    assert config.risk.per_symbol_cap == pytest.approx(0.10)
    assert config.risk.max_gross_leverage == pytest.approx(1.5)
    assert config.serving.directive_bus.channel == "master-directives"
    assert config.drift.for_feature("vix_level").ks_pvalue_min == pytest.approx(0.001)
    assert config.drift.for_feature("ret_1") == config.drift.default
    assert config.evaluation.go_no_go.min_sharpe == pytest.approx(0.8)


def test_load_when_value_out_of_range_then_error_names_file_key_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "risk_overlays.yaml"
    bad.write_text("per_symbol_cap: 2.5\n")
    with pytest.raises(ConfigError) as err:
        load_risk(bad)
    message = str(err.value)
    assert str(bad) in message and "per_symbol_cap" in message and "less than or equal to 1" in message


def test_load_when_unknown_key_then_refused(tmp_path: Path) -> None:
    bad = tmp_path / "serving.yaml"
    bad.write_text("triton:\n  http_prot: 8000\n")
    with pytest.raises(ConfigError, match=r"triton\.http_prot"):
        load_serving(bad)


def test_load_when_yaml_broken_then_error_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "serving.yaml"
    bad.write_text("triton: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid yaml"):
        load_serving(bad)


def test_load_when_file_missing_then_error_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_rl_config(tmp_path)


def test_load_when_fallback_preset_unknown_then_refused(tmp_path: Path) -> None:
    bad = tmp_path / "risk_overlays.yaml"
    bad.write_text("missing_directive_fallback: panic\n")
    with pytest.raises(ConfigError, match="missing_directive_fallback"):
        load_risk(bad)


def _spec(mean: float) -> FeatureSpec:
    n = len(SYMBOL_FEATURES)
    block = FeatureBlock(names=SYMBOL_FEATURES, means=(mean,) * n, stds=(1.0,) * n)
    sl = SLModelParams(feature_names=("ret_1",), means=(0.0,), stds=(1.0,), coef=(0.5,), intercept=0.0)
    return FeatureSpec(symbol=block, master=block, sl_model=sl)


def test_spec_hash_when_a_normalisation_constant_changes_then_hash_changes() -> None:
    assert _spec(0.0).spec_hash() == _spec(0.0).spec_hash()
    assert _spec(0.0).spec_hash() != _spec(0.001).spec_hash()


def test_feature_block_when_lengths_differ_then_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        FeatureBlock(names=("a", "b"), means=(0.0,), stds=(1.0, 1.0))


def test_spec_hash_when_a_feature_definition_changes_then_hash_changes() -> None:
    base = _spec(0.0)
    wider = base.model_copy(update={"definitions": {"vol_window": 21.0}})
    narrower = base.model_copy(update={"definitions": {"vol_window": 20.0}})
    assert wider.spec_hash() != narrower.spec_hash()


def test_load_evaluation_when_shipped_then_values_of_the_gate() -> None:
    config = load_evaluation(REPO / "config" / "rl" / "evaluation.yaml")
    assert isinstance(config, EvaluationConfig)
    assert (config.go_no_go.min_sharpe, config.go_no_go.max_drawdown, config.go_no_go.min_profit_factor) == (
        pytest.approx(0.8), pytest.approx(0.30), pytest.approx(1.1))
    assert config.go_no_go.min_holdout_bars == 60
    assert config.walk_forward.n_folds == 3 and config.walk_forward.holdout_fraction == pytest.approx(0.3)
    assert config.sl_fallback.sell_threshold < config.sl_fallback.buy_threshold
    assert config.periods_per_year == 252


def _shipped_evaluation_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (REPO / "config" / "rl" / "evaluation.yaml").read_text()
    assert old in text
    bad = tmp_path / "evaluation.yaml"
    bad.write_text(text.replace(old, new))
    return bad


def test_load_evaluation_when_sell_threshold_not_below_buy_then_error_names_file_and_key(tmp_path: Path) -> None:
    bad = _shipped_evaluation_with(tmp_path, "sell_threshold: 0.45", "sell_threshold: 0.60")
    with pytest.raises(ConfigError) as err:
        load_evaluation(bad)
    message = str(err.value)
    assert str(bad) in message and "sl_fallback" in message and "sell_threshold" in message


def test_load_evaluation_when_holdout_fraction_zero_then_error_names_file_and_key(tmp_path: Path) -> None:
    bad = _shipped_evaluation_with(tmp_path, "holdout_fraction: 0.3", "holdout_fraction: 0")
    with pytest.raises(ConfigError) as err:
        load_evaluation(bad)
    assert str(bad) in str(err.value) and "walk_forward.holdout_fraction" in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("holdout_fraction: 0.3", "holdout_fraction: 0.95", "walk_forward.holdout_fraction"),
        ("n_folds: 3", "n_folds: 0", "walk_forward.n_folds"),
        ("max_drawdown: 0.30", "max_drawdown: 1.5", "go_no_go.max_drawdown"),
        ("min_probabilistic_sharpe: 0.90", "min_probabilistic_sharpe: 1.2", "go_no_go.min_probabilistic_sharpe"),
        ("buy_level: 1.0", "buy_level: 0", "sl_fallback.buy_level"),
        ("sl_min_train_bars: 60", "sl_min_train_bars: 5", "walk_forward.sl_min_train_bars"),
    ],
)
def test_load_evaluation_when_value_out_of_range_then_error_names_key(tmp_path: Path, old: str, new: str,
                                                                      key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_evaluation(_shipped_evaluation_with(tmp_path, old, new))


def test_load_rl_config_when_evaluation_yaml_missing_then_error_names_it(tmp_path: Path) -> None:
    for name in ("serving.yaml", "risk_overlays.yaml", "feature_drift_thresholds.json"):
        shutil.copy(REPO / "config" / "rl" / name, tmp_path / name)
    with pytest.raises(ConfigError, match=r"evaluation\.yaml: file not found"):
        load_rl_config(tmp_path)


def test_sl_fallback_when_buy_level_not_an_action_level_then_refused() -> None:
    SLFallbackConfig(buy_level=0.75).check_buy_level((0.0, 0.25, 0.5, 0.75, 1.0))
    with pytest.raises(ConfigError, match="buy_level 0.6"):
        SLFallbackConfig(buy_level=0.6).check_buy_level((0.0, 0.25, 0.5, 0.75, 1.0))
