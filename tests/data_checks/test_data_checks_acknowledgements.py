"""Reviewed acknowledgements: a named flagged row passes, nothing else does, unused entries are reported, bad files
are refused naming the entry, and the entries are part of the dataset id."""

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_checks.acknowledgements import (
    DEFAULT_ACKNOWLEDGEMENTS,
    Acknowledgements,
    how_to_acknowledge,
    load_acknowledgements,
    resolve_acknowledgements,
)
from data_checks.bars_suite import validate_bars
from data_checks.errors import AcknowledgementError
from market_data.source import dataset_id
from market_data.synthetic import SyntheticConfig, generate_synthetic_market

REPO = Path(__file__).resolve().parents[2]
# dataset_id of SyntheticConfig(n_symbols=6, n_days=60, seed=2) computed by the code before acknowledgements existed.
PINNED_ID = "bars-d0b7f8519319"


def _split(bars: pd.DataFrame, symbol: str, day: int) -> int:
    """An unadjusted 2:1 split of `symbol` on the `day`-th session (close/previous close 0.5, volume doubles); its row."""
    stamps = np.sort(bars["timestamp"].unique())
    mine = bars["symbol"] == symbol
    after = mine & (bars["timestamp"] >= stamps[day])
    (row,) = bars.index[mine & (bars["timestamp"] == stamps[day])]
    (before,) = bars.index[mine & (bars["timestamp"] == stamps[day - 1])]
    bars.loc[after, ["open", "high", "low", "close"]] *= 0.5 / (bars.loc[row, "close"] / bars.loc[before, "close"])
    bars.loc[after, "volume"] *= 2.0
    return int(row)


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_synthetic_market(SyntheticConfig(n_symbols=6, n_days=60, seed=2)).bars


@pytest.fixture(scope="module")
def split_bars(clean) -> tuple[pd.DataFrame, dict[str, int]]:
    bars = clean.copy()
    rows = {"SYM01": _split(bars, "SYM01", 40), "SYM03": _split(bars, "SYM03", 36)}
    return bars, rows


def _session(bars: pd.DataFrame, row: int) -> str:
    return str(pd.Timestamp(bars.loc[row, "timestamp"]).tz_convert("UTC").date())


def _write_yaml(path: Path, entries: list[dict[str, str]]) -> Path:
    lines = ["acknowledgements:"]
    for entry in entries:
        lines.append("  - " + "\n    ".join(f"{k}: {v!r}" if k != "date" else f"{k}: {v}" for k, v in entry.items()))
    path.write_text("\n".join(lines) + "\n")
    return path


def _entry(symbol: str, day: str, check: str = "suspected_split", reason: str = "2:1 split on 2023-02-28, checked "
           "against the exchange notice", reviewer: str = "jane.doe") -> dict[str, str]:
    return {"symbol": symbol, "date": day, "check": check, "reason": reason, "reviewer": reviewer}


def test_validate_when_split_acknowledged_in_file_then_passes_and_records_who_and_why(split_bars, tmp_path):
    bars, rows = split_bars
    path = _write_yaml(tmp_path / "acks.yaml", [_entry("SYM01", _session(bars, rows["SYM01"])),
                                                _entry("SYM03", _session(bars, rows["SYM03"]))])
    acks = load_acknowledgements(path)
    assert not validate_bars(bars).success
    result = validate_bars(bars, acknowledgements=acks)
    assert result.success, result.summary()
    assert "suspected_split" not in result.failed_checks()
    assert {(a.symbol, a.row, a.check, a.reviewer) for a in result.acknowledged} == {
        ("SYM01", rows["SYM01"], "suspected_split", "jane.doe"), ("SYM03", rows["SYM03"], "suspected_split", "jane.doe")}
    assert "acknowledged 2 flagged row(s)" in result.summary() and "jane.doe" in result.summary()


def test_validate_when_one_of_two_split_rows_acknowledged_then_the_other_still_fails(split_bars, tmp_path):
    bars, rows = split_bars
    acks = load_acknowledgements(_write_yaml(tmp_path / "a.yaml", [_entry("SYM01", _session(bars, rows["SYM01"]))]))
    result = validate_bars(bars, acknowledgements=acks)
    assert not result.success
    (failure,) = [f for f in result.errors if f.check == "suspected_split"]
    assert failure.rows == (rows["SYM03"],)
    assert all(not e.startswith(f"row {rows['SYM01']}:") for e in failure.examples)
    assert "1 acknowledged row(s) not counted" in failure.detail


def test_validate_when_acknowledgement_names_another_check_on_the_split_row_then_split_still_fails(split_bars, tmp_path):
    bars, rows = split_bars
    day = _session(bars, rows["SYM01"])
    acks = load_acknowledgements(_write_yaml(tmp_path / "other.yaml", [_entry("SYM01", day, check="large_move"),
                                                                       _entry("SYM01", day, check="zero_volume")]))
    result = validate_bars(bars, acknowledgements=acks)
    assert not result.success
    assert rows["SYM01"] in result.rows_for("suspected_split")
    assert result.acknowledged == ()
    (unused,) = [f for f in result.failures if f.check == "unused_acknowledgement"]
    assert unused.severity == "warning" and len(unused.examples) == 2


def test_validate_when_acknowledgement_matches_no_flagged_row_then_unused_acknowledgement_warning(clean, tmp_path):
    acks = load_acknowledgements(_write_yaml(tmp_path / "stale.yaml", [_entry("SYM02", "2023-02-01")]))
    result = validate_bars(clean, acknowledgements=acks)
    assert result.success  # a warning, not an error...
    (unused,) = result.warnings
    assert unused.check == "unused_acknowledgement"  # ...but never silent
    assert "SYM02 2023-02-01 suspected_split" in unused.examples[0] and str(tmp_path / "stale.yaml") in unused.detail


def test_dataset_id_when_acknowledgements_in_use_then_differs_and_without_them_is_todays_id(clean, split_bars,
                                                                                         tmp_path):
    assert dataset_id(clean) == PINNED_ID
    assert dataset_id(clean, acknowledgements=None) == PINNED_ID
    assert dataset_id(clean, acknowledgements=Acknowledgements()) == PINNED_ID
    bars, rows = split_bars
    entries = [_entry("SYM01", _session(bars, rows["SYM01"])), _entry("SYM03", _session(bars, rows["SYM03"]))]
    acks = load_acknowledgements(_write_yaml(tmp_path / "acks.yaml", entries))
    assert dataset_id(bars, acknowledgements=acks) != dataset_id(bars)
    other_reviewer = load_acknowledgements(_write_yaml(tmp_path / "b.yaml", [entries[0], {**entries[1],
                                                                                            "reviewer": "joe"}]))
    assert dataset_id(bars, acknowledgements=other_reviewer) != dataset_id(bars, acknowledgements=acks)
    # Same decisions in another order or as CSV: same id (the canonical entries are hashed, not the file's bytes).
    csv = tmp_path / "acks.csv"
    pd.DataFrame(entries[::-1]).to_csv(csv, index=False)
    as_csv = load_acknowledgements(csv)
    assert as_csv.entries != acks.entries and as_csv.file_sha256 != acks.file_sha256
    assert dataset_id(bars, acknowledgements=as_csv) == dataset_id(bars, acknowledgements=acks)


@pytest.mark.parametrize(("body", "expected"), [
    ("acknowledgements:\n  - {symbol: SYM01, date: 2023-02-28, check: suspected_split, reason: '', reviewer: jo}\n",
     ["entry 1 (SYM01 2023-02-28 suspected_split)", "reason: must not be empty"]),
    ("acknowledgements:\n  - {symbol: A, date: 2023-02-28, check: suspected_split, reason: ok, reviewer: jo}\n"
     "  - {symbol: B, date: 2023-02-28, check: suspected_split, reason: real split}\n",
     ["entry 2 (B 2023-02-28 suspected_split)", "reviewer: Field required"]),
    ("acknowledgements:\n  - {symbol: A, date: 2023-02-28, check: split, reason: r, reviewer: jo}\n",
     ["entry 1 (A 2023-02-28 split)", "unknown check 'split'", "suspected_split"]),
    ("acknowledgements:\n  - {symbol: A, date: 2023-02-28, check: not_null, reason: r, reviewer: jo}\n",
     ["entry 1", "check 'not_null' cannot be acknowledged"]),
    ("acknowledgements:\n  - {symbol: A, date: 28/02/2023, check: large_move, reason: r, reviewer: jo}\n",
     ["entry 1 (A 28/02/2023 large_move)", "date: must be a date YYYY-MM-DD"]),
    ("acknowledgements:\n  - {symbol: A, date: 2023-02-30, check: large_move, reason: r, reviewer: jo}\n",
     ["entry 1", "date"]),
    ("acknowledgements:\n  - {symbol: [A, B], date: 2023-02-28, check: large_move, reason: r, reviewer: jo}\n",
     ["entry 1", "symbol: must be text, got ['A', 'B']"]),
    ("acknowledgements:\n  - {symbol: A, date: 2023-02-28, check: large_move, reason: r, reviewer: jo}\n"
     "  - {symbol: A, date: 2023-02-28, check: large_move, reason: again, reviewer: jo}\n",
     ["entry 2", "duplicates entry 1"]),
    ("- {symbol: A, date: 2023-02-28, check: large_move, reason: r, reviewer: jo}\n",
     ["expected one top-level key `acknowledgements:`"]),
    ("acknowledgements: [\n", ["not valid YAML"]),
])
def test_load_when_file_malformed_then_error_names_the_entry_and_field(tmp_path, body, expected):
    path = tmp_path / "acks.yaml"
    path.write_text(body)
    with pytest.raises(AcknowledgementError) as raised:
        load_acknowledgements(path)
    message = str(raised.value)
    assert str(path) in message
    for part in expected:
        assert part in message, message


def test_load_when_yaml_reads_symbol_as_bool_or_number_then_kept_as_written(tmp_path):
    path = tmp_path / "acks.yaml"
    path.write_text("acknowledgements:\n  - {symbol: ON, date: 2023-02-28, check: large_move, reason: 1.5, "
                    "reviewer: yes}\n  - {symbol: 1234, date: 2023-03-01, check: large_move, reason: r, reviewer: jo}\n")
    first, second = load_acknowledgements(path).entries
    assert (first.symbol, first.reason, first.reviewer, second.symbol) == ("ON", "1.5", "yes", "1234")


def test_load_when_csv_has_wrong_header_or_empty_reason_then_error_names_line(tmp_path):
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("symbol,date,check,why,reviewer\nA,2023-02-28,large_move,r,jo\n")
    with pytest.raises(AcknowledgementError, match="CSV header must be exactly"):
        load_acknowledgements(bad_header)
    empty_reason = tmp_path / "r.csv"
    empty_reason.write_text("symbol,date,check,reason,reviewer\nA,2023-02-28,large_move,r,jo\nB,2023-03-01,large_move,"
                            " ,jo\n")
    with pytest.raises(AcknowledgementError, match=r"entry 2, CSV line 3 \(B 2023-03-01 large_move\): reason: must"):
        load_acknowledgements(empty_reason)


def test_load_when_shipped_example_then_valid_with_no_entries_and_default_file_absent():
    example = load_acknowledgements(REPO / "config" / "data" / "acknowledgements.example.yaml")
    assert example.entries == () and example.fingerprint() == ""
    assert "acknowledgements.yaml" not in {p.name for p in (REPO / "config" / "data").iterdir()
                                           if p.name in _tracked_files()}


def _tracked_files() -> set[str]:
    import subprocess

    listed = subprocess.run(["git", "ls-files", "config/data"], cwd=REPO, capture_output=True, text=True, check=True)
    return {Path(line).name for line in listed.stdout.splitlines()}


def test_resolve_when_no_path_then_default_location_if_it_exists_else_none(tmp_path):
    assert resolve_acknowledgements(None, tmp_path) is None
    default = tmp_path / DEFAULT_ACKNOWLEDGEMENTS
    default.parent.mkdir(parents=True)
    _write_yaml(default, [_entry("SYM01", "2023-02-28")])
    found = resolve_acknowledgements(None, tmp_path)
    assert found is not None and found.entries[0].date == date(2023, 2, 28) and found.source == str(default)
    with pytest.raises(AcknowledgementError, match="does not exist"):
        resolve_acknowledgements(tmp_path / "missing.yaml", tmp_path)


def test_how_to_acknowledge_when_split_fails_then_hint_has_ready_entry_and_path(split_bars):
    bars, rows = split_bars
    result = validate_bars(bars)
    hint = how_to_acknowledge(result, bars, "config/data/acknowledgements.yaml")
    assert "config/data/acknowledgements.yaml" in hint and "reviewer" in hint
    assert f"{{symbol: SYM01, date: {_session(bars, rows['SYM01'])}, check: suspected_split" in hint
