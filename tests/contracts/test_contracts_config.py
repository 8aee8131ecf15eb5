from pathlib import Path

import pytest

from contracts.config import load_risk, load_rl_config, load_serving
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
