"""Reviewed acknowledgements: flagged bar rows a named person looked at and let through.

A file lists entries (symbol, date, check, reason, reviewer), as YAML (a list under `acknowledgements:`) or CSV (those
five columns). `date` is the session date: the UTC calendar date of the row's timestamp (daily bars are stamped at
the close, e.g. 21:00 UTC, so it is the trading day). An entry lets through the rows of that symbol on that date
flagged by that one check, nothing else: a different check on the same row still fails. An entry that matches no
flagged row is reported (`unused_acknowledgement`, a warning), never ignored silently.

The entries are part of the dataset id (market_data.source.dataset_id) and the file is logged with the training run:
what a policy was trained on includes which flagged rows a person let through, and who.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError, field_validator

from contracts.base import Frozen
from data_checks.bars_rules import ACKNOWLEDGEABLE_CHECKS, BARS_CHECKS, UNUSED_ACKNOWLEDGEMENT
from data_checks.errors import AcknowledgementError
from data_checks.results import AcknowledgedRow, CheckFailure, DataCheckResult, result_from_failures

logger = logging.getLogger(__name__)

# Used when present and no other file is given (relative to the project root). The repository ships only
# config/data/acknowledgements.example.yaml: nothing is acknowledged by default.
DEFAULT_ACKNOWLEDGEMENTS = Path("config/data/acknowledgements.yaml")
FIELDS: tuple[str, ...] = ("symbol", "date", "check", "reason", "reviewer")
TOP_KEY = "acknowledgements"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_HINT_ENTRIES = 5


class Acknowledgement(Frozen):
    symbol: str
    date: date
    check: str
    reason: str
    reviewer: str

    @field_validator("symbol", "check", "reason", "reviewer", mode="before")
    @classmethod
    def _non_empty_text(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("must not be empty")
        if not isinstance(value, str):
            raise ValueError(f"must be text, got {value!r}")
        return value.strip()

    @field_validator("date", mode="before")
    @classmethod
    def _session_date(cls, value: Any) -> Any:
        # A datetime would silently drop its time (or its time zone); only a plain session date is meant.
        if isinstance(value, datetime):
            raise ValueError(f"must be a date YYYY-MM-DD (the session's UTC date), not a date and time: {value}")
        if isinstance(value, date):
            return value
        if isinstance(value, str) and _ISO_DATE.match(value.strip()):
            return value.strip()
        raise ValueError(f"must be a date YYYY-MM-DD (the session's UTC date), got {value!r}")

    @field_validator("check")
    @classmethod
    def _known_check(cls, value: str) -> str:
        if value in ACKNOWLEDGEABLE_CHECKS:
            return value
        if value in BARS_CHECKS:
            raise ValueError(f"check {value!r} cannot be acknowledged (it names no row, or its rows would break "
                             f"feature computation: fix or drop them); acknowledgeable: {list(ACKNOWLEDGEABLE_CHECKS)}")
        raise ValueError(f"unknown check {value!r}; the bars suite's acknowledgeable checks: "
                         f"{list(ACKNOWLEDGEABLE_CHECKS)}")

    @property
    def key(self) -> tuple[str, date, str]:
        return (self.symbol, self.date, self.check)

    def canonical(self) -> dict[str, str]:
        return {"symbol": self.symbol, "date": self.date.isoformat(), "check": self.check, "reason": self.reason,
                "reviewer": self.reviewer}

    def describe(self) -> str:
        return f"{self.symbol} {self.date} {self.check} (reviewer {self.reviewer})"


class Acknowledgements(Frozen):
    """The validated entries of one file; `source` and `file_sha256` say which file, for the logs and MLflow."""

    entries: tuple[Acknowledgement, ...] = ()
    source: str = ""
    file_sha256: str = ""

    def __len__(self) -> int:
        return len(self.entries)

    def canonical_json(self) -> str:
        """The entries sorted, in one JSON text: the same decisions give the same text, YAML or CSV, any order."""
        ordered = sorted((e.canonical() for e in self.entries), key=lambda c: (c["symbol"], c["date"], c["check"]))
        return json.dumps(ordered, sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """sha256 of canonical_json(); "" when there are no entries (the dataset id then stays that of the bars)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest() if self.entries else ""


# ------------------------------------------------------------------------------------------- loading


def _entry_label(number: int, record: Any, where: str) -> str:
    if isinstance(record, dict):
        named = " ".join(str(record.get(k)) for k in ("symbol", "date", "check") if record.get(k) not in (None, ""))
        return f"entry {number}{where}" + (f" ({named})" if named else "")
    return f"entry {number}{where}"


def parse_entries(records: list[Any], source: str, *, csv_lines: bool = False) -> tuple[Acknowledgement, ...]:
    """Validate every record; one error lists every bad entry by number (1-based) and field."""
    entries: list[Acknowledgement] = []
    problems: list[str] = []
    first_seen: dict[tuple[str, date, str], int] = {}
    for number, record in enumerate(records, start=1):
        where = f", CSV line {number + 1}" if csv_lines else ""
        label = _entry_label(number, record, where)
        if not isinstance(record, dict):
            problems.append(f"{label}: expected a mapping with {list(FIELDS)}, got {record!r}")
            continue
        try:
            entry = Acknowledgement.model_validate(record)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: "
                               f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
            problems.append(f"{label}: {fields}")
            continue
        if entry.key in first_seen:
            problems.append(f"{label}: duplicates entry {first_seen[entry.key]} (same symbol, date and check)")
            continue
        first_seen[entry.key] = number
        entries.append(entry)
    if problems:
        raise AcknowledgementError(f"acknowledgement file {source}: " + "\n  ".join(["", *problems]).lstrip("\n"))
    return tuple(entries)


class _TextLoader(yaml.SafeLoader):
    """Every field is text: keep scalars as written (YAML 1.1 would read the symbol ON as True, 1234 as a number,
    and raise on an impossible date before the entry could be named)."""


for _tag in ("bool", "int", "float", "timestamp"):
    _TextLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", yaml.SafeLoader.construct_scalar)


def _yaml_records(text: str, source: str) -> list[Any]:
    try:
        document = yaml.load(text, Loader=_TextLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise AcknowledgementError(f"acknowledgement file {source}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or set(document) != {TOP_KEY}:
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise AcknowledgementError(f"acknowledgement file {source}: expected one top-level key `{TOP_KEY}:` holding "
                                   f"a list of entries {list(FIELDS)}, found {found}")
    records = document[TOP_KEY]
    if records is None:
        return []
    if not isinstance(records, list):
        raise AcknowledgementError(f"acknowledgement file {source}: `{TOP_KEY}:` must be a list of entries, "
                                   f"got {type(records).__name__}")
    return records


def _csv_records(text: str, source: str) -> list[Any]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if sorted(header) != sorted(FIELDS):
        raise AcknowledgementError(f"acknowledgement file {source}: CSV header must be exactly {list(FIELDS)} "
                                   f"(any order), got {header}")
    reader.fieldnames = header
    return [dict(row) for row in reader]


def load_acknowledgements(path: str | Path) -> Acknowledgements:
    """Entries of a .yaml/.yml or .csv file, validated; AcknowledgementError names every bad entry."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AcknowledgementError(f"acknowledgement file {path}: cannot read it: {exc}") from exc
    text = raw.decode("utf-8", errors="replace")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        entries = parse_entries(_yaml_records(text, str(path)), str(path))
    elif suffix == ".csv":
        entries = parse_entries(_csv_records(text, str(path)), str(path), csv_lines=True)
    else:
        raise AcknowledgementError(f"acknowledgement file {path}: expected .yaml, .yml or .csv, got {suffix or 'none'}")
    return Acknowledgements(entries=entries, source=str(path), file_sha256=hashlib.sha256(raw).hexdigest())


def resolve_acknowledgements(path: str | Path | None, project_root: str | Path) -> Acknowledgements | None:
    """The file a user named (it must exist), else DEFAULT_ACKNOWLEDGEMENTS under `project_root` when it exists,
    else None (nothing acknowledged). A relative `path` is taken from the working directory, like --data."""
    if path:
        chosen = Path(path)
        if not chosen.is_file():
            raise AcknowledgementError(f"acknowledgement file {chosen} does not exist")
    else:
        chosen = Path(project_root) / DEFAULT_ACKNOWLEDGEMENTS
        if not chosen.is_file():
            return None
    acks = load_acknowledgements(chosen)
    logger.info("acknowledgement file %s: %d entr%s (sha256 %s)", chosen, len(acks), "y" if len(acks) == 1 else "ies",
                acks.file_sha256[:12])
    return acks


def default_location(project_root: str | Path) -> Path:
    return Path(project_root) / DEFAULT_ACKNOWLEDGEMENTS


# ------------------------------------------------------------------------------------------ applying


def _row_key(frame: pd.DataFrame, row: int) -> tuple[str, date] | None:
    """(symbol, UTC session date) of a positional row; None when it has neither (such a row matches no entry)."""
    try:
        symbol, stamp = frame["symbol"].iat[row], frame["timestamp"].iat[row]
        stamp = pd.Timestamp(stamp)
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    if pd.isna(symbol) or pd.isna(stamp):
        return None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return str(symbol), stamp.date()


def _without_rows(failure: CheckFailure, removed: set[int]) -> CheckFailure:
    rows = tuple(r for r in failure.rows if r not in removed)
    # Examples start "row N:" (bars_suite.describe_rows and the cross-row checks); drop those of removed rows.
    examples = tuple(e for e in failure.examples if not any(e.startswith(f"row {r}:") for r in removed))
    detail = f"{failure.detail} ({len(removed)} acknowledged row(s) not counted)"
    return failure.model_copy(update={"rows": rows, "examples": examples, "detail": detail})


def apply_acknowledgements(result: DataCheckResult, frame: pd.DataFrame,
                           acknowledgements: Acknowledgements | None) -> DataCheckResult:
    """`result` (of `frame`, positional rows) with acknowledged rows taken out of the failures of their check.

    A failure whose rows are all acknowledged disappears; one partly acknowledged keeps the rest. What was let
    through is kept in `result.acknowledged`; entries that matched no flagged row become one
    `unused_acknowledgement` warning naming them."""
    if not acknowledgements or not acknowledgements.entries:
        return result
    by_key = {entry.key: entry for entry in acknowledgements.entries}
    used: set[tuple[str, date, str]] = set()
    failures: list[CheckFailure] = []
    acknowledged: list[AcknowledgedRow] = []
    for failure in result.failures:
        if failure.check not in ACKNOWLEDGEABLE_CHECKS or not failure.rows:
            failures.append(failure)
            continue
        removed: set[int] = set()
        for row in failure.rows:
            where = _row_key(frame, row)
            entry = by_key.get((*where, failure.check)) if where is not None else None
            if entry is None:
                continue
            removed.add(row)
            used.add(entry.key)
            acknowledged.append(AcknowledgedRow(symbol=entry.symbol, date=entry.date, check=entry.check,
                                                reason=entry.reason, reviewer=entry.reviewer, row=row,
                                                severity=failure.severity))
        if not removed:
            failures.append(failure)
        elif len(removed) < len(failure.rows):
            failures.append(_without_rows(failure, removed))
    unused = [e for e in acknowledgements.entries if e.key not in used]
    if unused:
        failures.append(CheckFailure(
            check=UNUSED_ACKNOWLEDGEMENT, column=None, severity="warning",
            examples=tuple(f"{e.describe()}: {e.reason}" for e in unused),
            detail=f"{len(unused)} entr{'y' if len(unused) == 1 else 'ies'} of {acknowledgements.source or 'the file'} "
                   "matched no flagged row (data fixed since, or a wrong symbol/date/check): remove or correct them"))
    for ack in acknowledged:
        logger.warning("acknowledged %s on row %d (%s %s) by %s: %s", ack.check, ack.row, ack.symbol, ack.date,
                       ack.reviewer, ack.reason)
    return result_from_failures(result.suite, failures, result.n_rows,
                                acknowledged=result.acknowledged + tuple(acknowledged))


def how_to_acknowledge(result: DataCheckResult, frame: pd.DataFrame, path: str | Path) -> str:
    """The way forward for a failed result: ready-to-edit entries for the first acknowledgeable error rows, and which
    failed checks cannot be acknowledged. `frame` is the checked frame (positional rows)."""
    lines: list[str] = []
    entries: list[str] = []
    seen: set[tuple[str, date, str]] = set()
    for failure in result.errors:
        if failure.check not in ACKNOWLEDGEABLE_CHECKS:
            continue
        for row in failure.rows:
            where = _row_key(frame, row)
            if where is None or (*where, failure.check) in seen:
                continue
            seen.add((*where, failure.check))
            entries.append(f"  - {{symbol: {where[0]}, date: {where[1]}, check: {failure.check}, "
                           f"reason: \"<why this row is real>\", reviewer: \"<your name>\"}}")
    if entries:
        lines.append(f"If you reviewed a flagged row and it is real, acknowledge it: add an entry (symbol, date = the "
                     f"row's UTC date, check, reason, reviewer) to {path} (YAML list under `{TOP_KEY}:`, or a CSV with "
                     f"columns {','.join(FIELDS)}; example: config/data/acknowledgements.example.yaml), e.g.")
        lines.append(f"{TOP_KEY}:")
        lines += entries[:MAX_HINT_ENTRIES]
        if len(entries) > MAX_HINT_ENTRIES:
            lines.append(f"  # ... {len(entries) - MAX_HINT_ENTRIES} more flagged row(s) above")
    fixed_only = sorted({f.check for f in result.errors if f.check not in ACKNOWLEDGEABLE_CHECKS})
    if fixed_only:
        lines.append(f"Failures of {fixed_only} cannot be acknowledged: fix or drop those rows.")
    return "\n".join(lines)
