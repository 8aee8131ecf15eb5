"""`marlops train` on bars with an unadjusted split: refused with the way forward, then trained with a reviewed
acknowledgement file that enters the dataset id and the MLflow run (a real sqlite MLflow store)."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from data_checks.acknowledgements import load_acknowledgements
from market_data.source import dataset_id, load_market
from marlops import cli
from marlops.candidates import check_bars
from marlops.errors import DataQualityError
from marlops.paths import StatePaths

SPLIT_SYMBOL, SPLIT_DAY = "SYM00", 115


@pytest.fixture(scope="module")
def split_bars() -> tuple[pd.DataFrame, str]:
    """The tiny market of the CLI train test with an unadjusted 2:1 split of SYM00 (close/previous close 0.5, share
    volume doubled from that day on); the split's session date."""
    bars = load_market("synthetic:planted-alpha", seed=3, n_symbols=4, n_days=220)
    stamps = np.sort(bars["timestamp"].unique())
    mine = bars["symbol"] == SPLIT_SYMBOL
    after = mine & (bars["timestamp"] >= stamps[SPLIT_DAY])
    (row,) = bars.index[mine & (bars["timestamp"] == stamps[SPLIT_DAY])]
    (before,) = bars.index[mine & (bars["timestamp"] == stamps[SPLIT_DAY - 1])]
    bars.loc[after, ["open", "high", "low", "close"]] *= 0.5 / (bars.loc[row, "close"] / bars.loc[before, "close"])
    bars.loc[after, "volume"] *= 2.0
    return bars, str(pd.Timestamp(stamps[SPLIT_DAY]).tz_convert("UTC").date())


def _ack_file(path: Path, symbol: str, day: str, check: str = "suspected_split") -> Path:
    path.write_text(f"acknowledgements:\n  - symbol: {symbol}\n    date: {day}\n    check: {check}\n"
                    "    reason: 2-for-1 split per the exchange notice; unadjusted series kept on purpose\n"
                    "    reviewer: jane.doe\n")
    return path


def test_check_bars_when_split_unacknowledged_then_error_says_how_to_acknowledge(split_bars) -> None:
    bars, day = split_bars
    with pytest.raises(DataQualityError) as raised:
        check_bars(bars)
    message = str(raised.value)
    assert "suspected_split" in message and "config/data/acknowledgements.yaml" in message
    assert f"{{symbol: {SPLIT_SYMBOL}, date: {day}, check: suspected_split, reason:" in message
    assert "reviewer" in message and "--acknowledgements" in message


def test_check_bars_when_acknowledgement_names_another_check_then_still_refused_naming_that_file(
        split_bars, tmp_path: Path) -> None:
    bars, day = split_bars
    acks = load_acknowledgements(_ack_file(tmp_path / "acks.yaml", SPLIT_SYMBOL, day, check="large_move"))
    with pytest.raises(DataQualityError) as raised:
        check_bars(bars, acknowledgements=acks)
    assert "suspected_split" in str(raised.value) and "unused_acknowledgement" in str(raised.value)
    assert str(tmp_path / "acks.yaml") in str(raised.value)


def test_train_when_acknowledgements_given_then_trains_and_run_logs_file_and_dataset_id_includes_them(
        split_bars, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MARLOPS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("MARLOPS_NO_PROGRESS", "1")
    bars, day = split_bars
    data = tmp_path / "bars.csv"
    bars.to_csv(data, index=False)
    tiny = ["--data", str(data), "--seed", "1", "--iterations", "2", "--hidden", "8", "--skip-validation"]
    assert cli.main(["train", *tiny]) == 2
    assert "suspected_split" in caplog.text

    acks_path = _ack_file(tmp_path / "acks.yaml", SPLIT_SYMBOL, day)
    assert cli.main(["train", *tiny, "--acknowledgements", str(acks_path)]) == 0

    loaded = load_market(str(data))
    acks = load_acknowledgements(acks_path)
    expected_id = dataset_id(loaded, acknowledgements=acks)
    assert expected_id != dataset_id(loaded)
    client = MlflowClient(tracking_uri=StatePaths.from_env().mlflow_uri)
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
              if r.info.run_name == "train-policies"]
    sha = hashlib.sha256(acks_path.read_bytes()).hexdigest()
    assert run.data.params["dataset_id"] == expected_id
    assert run.data.params["data_acknowledgements_count"] == "1"
    assert run.data.params["data_acknowledgements_sha256"] == sha
    assert run.data.tags["data_acknowledgements_sha256"] == sha
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "data_acknowledgements")}
    assert logged == {"data_acknowledgements/acks.yaml", "data_acknowledgements/canonical_entries.json"}
    copy = Path(client.download_artifacts(run.info.run_id, "data_acknowledgements/acks.yaml", str(tmp_path / "dl")))
    assert copy.read_bytes() == acks_path.read_bytes()
    version = client.get_model_version("symbol_agent", "1")
    assert version.tags["dataset_id"] == expected_id
