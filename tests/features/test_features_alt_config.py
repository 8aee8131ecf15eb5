"""config/rl/features.yaml: observation version 1 by default, v2 opt-in, bad values named."""

import shutil
from pathlib import Path

import pytest

from contracts.config import load_rl_config
from contracts.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_config_when_shipped_then_observation_version_1_and_documented_thresholds() -> None:
    features = load_rl_config(REPO / "config" / "rl").features
    assert features.observation_version == 1
    assert (features.alt_data.sentiment_max_age_hours, features.alt_data.macro_max_age_hours) == (6.0, 72.0)
    assert features.alt_data.sentiment_source == features.alt_data.macro_source == "synthetic"


def test_config_when_file_absent_then_defaults_apply(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config" / "rl", tmp_path / "rl")
    (tmp_path / "rl" / "features.yaml").unlink()
    assert load_rl_config(tmp_path / "rl").features.observation_version == 1


def test_config_when_version_unknown_then_error_names_key(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config" / "rl", tmp_path / "rl")
    (tmp_path / "rl" / "features.yaml").write_text("observation_version: 3\n")
    with pytest.raises(ConfigError, match="features.yaml: key 'observation_version'"):
        load_rl_config(tmp_path / "rl")
