"""`marlops train` / `evaluate` on a bar file without a VIX series: the configured proxy fills the volatility input."""

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from market_data.source import load_market
from marlops import cli


@pytest.fixture(scope="module")
def no_vix() -> pd.DataFrame:
    bars = load_market("synthetic:planted-alpha", seed=3, n_symbols=4, n_days=220)
    return bars[bars["symbol"] != "VIX"].reset_index(drop=True)


def test_cli_when_file_has_no_vix_then_trains_on_realized_proxy_named_in_the_manifest(
    no_vix: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MARLOPS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MARLOPS_NO_PROGRESS", "1")
    caplog.set_level(logging.INFO)
    data = tmp_path / "bars.csv"
    no_vix.to_csv(data, index=False)
    assert cli.main(["train", "--data", str(data), "--seed", "1", "--iterations", "2", "--hidden", "8",
                     "--skip-validation"]) == 0
    assert "version 1" in capsys.readouterr().out
    assert "falls back to the proxy realized:SPY:21" in caplog.text
    assert "volatility input realized:SPY:21" in caplog.text
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--policy", "candidate", "--data", str(data), "--json", str(out)]) == 0
    # evaluate rebuilds the features with the spec signed into the manifest: an index:VIX spec would refuse these bars.
    assert json.loads(out.read_text())["versions"]["symbol_agent"] == "1"
