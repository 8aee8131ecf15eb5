"""Data checks for a feature table: every named column present, not null, finite."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from data_checks import gx_runtime
from data_checks.bars_suite import describe_rows
from data_checks.errors import DataCheckError
from data_checks.results import CheckFailure, DataCheckResult, result_from_failures

logger = logging.getLogger(__name__)

SUITE_NAME = "feature_table"
FINITE_BOUND = float(np.finfo(np.float64).max)  # +-inf fall outside; NaN is left to not_null


def _expectations(columns: tuple[str, ...]) -> list[Any]:
    import great_expectations.expectations as gxe

    items: list[Any] = []
    for column in columns:
        meta = {"column": column}
        items.append(gxe.ExpectColumnToExist(column=column, meta={**meta, "check": "present"}))
        items.append(gxe.ExpectColumnValuesToNotBeNull(column=column, meta={**meta, "check": "not_null"}))
        items.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=-FINITE_BOUND, max_value=FINITE_BOUND, meta={**meta, "check": "finite"}
            )
        )
    return items


def validate_feature_table(df: pd.DataFrame, columns: Sequence[str]) -> DataCheckResult:
    """Rows are positions in `df`; examples show its index labels (e.g. timestamp, symbol)."""
    wanted = tuple(dict.fromkeys(columns))
    if not wanted:
        raise DataCheckError("validate_feature_table needs at least one column to check")
    index_names = [n for n in df.index.names if n is not None]
    frame = df.reset_index(drop=not index_names)
    clashes = [n for n in index_names if n in df.columns]
    if clashes:
        raise DataCheckError(f"index level names {clashes} are also column names; rename one")
    validation = gx_runtime.validation_for((SUITE_NAME, wanted), SUITE_NAME, lambda: _expectations(wanted))
    outcome = gx_runtime.run_validation(validation, frame)
    failures: list[CheckFailure] = []
    for result in outcome.results:
        if result.success:
            continue
        info = result.expectation_config.meta or {}
        check, column = str(info.get("check")), str(info.get("column"))
        if check == "present":
            failures.append(CheckFailure(check=check, column=column, detail=f"column '{column}' is missing"))
            continue
        if column not in frame.columns:
            continue
        if (result.exception_info or {}).get("raised_exception", False):
            message = str(result.exception_info.get("exception_message", "")).splitlines()[0][:300]
            failures.append(CheckFailure(check=check, column=column, detail=f"could not evaluate: {message}"))
            continue
        rows = tuple(sorted(int(r) for r in result.result.get("unexpected_index_list") or []))
        failures.append(
            CheckFailure(
                check=check,
                column=column,
                rows=rows,
                examples=_examples(frame, index_names, rows, column),
                detail=f"{len(rows)} row(s) {'null' if check == 'not_null' else 'infinite or out of range'}",
            )
        )
    result = result_from_failures(SUITE_NAME, failures, len(frame))
    if not result.success:
        logger.warning("feature table check failed: %s", "; ".join(f"{f.check}[{f.column}]" for f in result.failures))
    return result


def _examples(frame: pd.DataFrame, index_names: list[str], rows: tuple[int, ...], column: str) -> tuple[str, ...]:
    if {"symbol", "timestamp"} <= set(frame.columns):
        return describe_rows(frame, rows, [column])
    labels = index_names or []
    return tuple(
        f"row {r}: " + " ".join(f"{n}={frame.iloc[r][n]}" for n in labels) + f" {column}={frame.iloc[r][column]}"
        for r in rows[:20]
    )
