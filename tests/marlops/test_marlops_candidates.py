"""Split, walk-forward SL and training see nothing after the held-out start; the SL signal is served as trained."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agents.mappo import MAPPOConfig, train_mappo
from contracts.config import load_rl_config
from features.observation import ObservationBuilder
from features.service import FeatureService
from features.sl_signal import predict_sl
from market_data.source import load_market, trading_symbols
from marlops import cli, pipeline
from marlops.candidates import env_settings, holdout_start, training_episode

CONFIG = load_rl_config()


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_market("synthetic:planted-alpha", seed=3, n_symbols=4, n_days=220)


def _shuffle_after(bars: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """Permute the held-out bars' values across their timestamps, per symbol: a different future, same past."""
    out = bars.copy()
    rng = np.random.default_rng(0)
    for _, rows in out[out["timestamp"] >= start].groupby("symbol").groups.items():
        rows = np.asarray(rows)
        values = out.loc[rows, ["open", "high", "low", "close", "volume"]].to_numpy()
        out.loc[rows, ["open", "high", "low", "close", "volume"]] = values[rng.permutation(len(rows))]
    return out


def test_train_when_future_after_split_shuffled_then_everything_before_it_is_identical(bars: pd.DataFrame) -> None:
    start = holdout_start(bars, CONFIG.evaluation.walk_forward.holdout_fraction)
    shuffled = _shuffle_after(bars, start)
    assert not shuffled["close"].equals(bars["close"])
    spec_a = pipeline.fit_spec(bars, CONFIG, seed=1)
    spec_b = pipeline.fit_spec(shuffled, CONFIG, seed=1)
    assert spec_a.spec_hash() == spec_b.spec_hash()
    ep_a, ep_b = training_episode(bars, spec_a, CONFIG), training_episode(shuffled, spec_b, CONFIG)
    assert ep_a.timestamps.max() < start
    np.testing.assert_array_equal(ep_a.symbol_market, ep_b.symbol_market)
    np.testing.assert_array_equal(ep_a.closes, ep_b.closes)
    cfg = MAPPOConfig(iterations=2, hidden=8, seed=1)
    pol_a = train_mappo(ep_a, CONFIG.risk, cfg, settings=env_settings(CONFIG)).symbol_policy.state_dict()
    pol_b = train_mappo(ep_b, CONFIG.risk, cfg, settings=env_settings(CONFIG)).symbol_policy.state_dict()
    assert all(torch.equal(pol_a[k], pol_b[k]) for k in pol_a)


def test_holdout_start_when_too_few_bars_then_error_names_the_fraction(bars: pd.DataFrame) -> None:
    short = bars[bars["timestamp"] <= np.sort(bars["timestamp"].unique())[21]]
    with pytest.raises(pipeline.PipelineError, match="holdout_fraction"):
        holdout_start(short, 0.3)


def test_sl_prediction_when_served_step_by_step_then_equals_training_batch(bars: pd.DataFrame) -> None:
    spec = pipeline.fit_spec(bars, CONFIG, seed=1)
    start = holdout_start(bars, CONFIG.evaluation.walk_forward.holdout_fraction)
    tensors = ObservationBuilder(spec).training_tensors(bars)
    sl_column = spec.symbol.names.index("sl_prob_up")
    service = FeatureService(spec, trading_symbols(bars), history=bars[bars["timestamp"] < start])
    held = [ts for ts in tensors.timestamps if ts >= start]
    for ts in held:
        snap = service.on_bars(bars[bars["timestamp"] == ts])
        served = predict_sl(spec.sl_model, snap.market_rows.loc[list(tensors.symbols)])
        batch_row = tensors.symbol_market[list(tensors.timestamps).index(ts), :, sl_column]
        served_obs = ObservationBuilder(spec).symbol_market_matrix(snap.market_rows.loc[list(tensors.symbols)])
        np.testing.assert_array_equal(served_obs[:, sl_column], batch_row)
        assert np.isfinite(served).all()
    assert len(held) > 20


def test_cli_when_trained_then_versions_printed_and_evaluate_writes_verdict_per_threshold(
    bars: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MARLOPS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MARLOPS_NO_PROGRESS", "1")
    data = tmp_path / "bars.csv"
    bars.to_csv(data, index=False)
    assert cli.main(["train", "--data", str(data), "--seed", "1", "--iterations", "2", "--hidden", "8"]) == 0
    printed = capsys.readouterr().out
    for agent in ("symbol_agent", "master_agent", "sl_fallback"):
        assert f"{agent}" in printed and "version 1" in printed
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--policy", "candidate", "--data", str(data), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["versions"] == {"symbol_agent": "1", "master_agent": "1", "sl_fallback": "1"}
    names = {check["name"] for check in report["verdict"]["checks"]}
    assert {"min_sharpe", "max_drawdown", "min_profit_factor"} <= names
    assert {"policy", "sl_fallback", "buy_and_hold_benchmark"} <= set(report["metrics"])
    assert pd.Timestamp(report["held_out_start"]) >= pd.Timestamp(report["holdout_start"])


def test_cli_when_files_have_a_suspected_split_then_exit_2_naming_the_check(
    bars: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MARLOPS_HOME", str(tmp_path / "state"))
    split = bars.copy()
    rows = (split["symbol"] == "SYM00") & (split["timestamp"] >= np.sort(split["timestamp"].unique())[100])
    split.loc[rows, ["open", "high", "low", "close"]] /= 2.0
    data = tmp_path / "bars.csv"
    split.to_csv(data, index=False)
    assert cli.main(["train", "--data", str(data), "--iterations", "1"]) == 2
    assert "suspected_split" in caplog.text
