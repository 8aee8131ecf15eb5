"""Results of a data-check suite: plain values naming the failing rows."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from contracts.base import Frozen

Severity = Literal["error", "warning"]
MAX_SUMMARY_EXAMPLES = 5


class CheckFailure(Frozen):
    """One failed check. `rows` are positional row numbers (0-based) of the checked frame; `examples`
    describe the first few of them (symbol, timestamp, values) for humans."""

    check: str
    column: str | None
    rows: tuple[int, ...] = ()
    examples: tuple[str, ...] = ()
    severity: Severity = "error"
    detail: str = ""


class AcknowledgedRow(Frozen):
    """A flagged row let through by a reviewed acknowledgement (data_checks/acknowledgements.py): kept in the result
    so it is reported and logged, never silently dropped."""

    symbol: str
    date: date
    check: str
    reason: str
    reviewer: str
    row: int
    severity: Severity


class DataCheckResult(Frozen):
    suite: str
    success: bool  # no error-severity failure; warnings do not fail a suite
    failures: tuple[CheckFailure, ...] = ()
    n_rows: int = Field(ge=0)
    acknowledged: tuple[AcknowledgedRow, ...] = ()

    @property
    def errors(self) -> tuple[CheckFailure, ...]:
        return tuple(f for f in self.failures if f.severity == "error")

    @property
    def warnings(self) -> tuple[CheckFailure, ...]:
        return tuple(f for f in self.failures if f.severity == "warning")

    def failed_checks(self) -> set[str]:
        return {f.check for f in self.failures}

    def rows_for(self, check: str) -> set[int]:
        return {row for f in self.failures if f.check == check for row in f.rows}

    def summary(self) -> str:
        status = "passed" if self.success else "FAILED"
        head = f"{self.suite}: {status} on {self.n_rows} rows ({len(self.errors)} errors, {len(self.warnings)} warnings)"
        lines = [head]
        for failure in self.failures:
            column = f" [{failure.column}]" if failure.column else ""
            detail = f": {failure.detail}" if failure.detail else ""
            lines.append(f"- {failure.severity.upper()} {failure.check}{column}, {len(failure.rows)} row(s){detail}")
            for example in failure.examples[:MAX_SUMMARY_EXAMPLES]:
                lines.append(f"    {example}")
            if len(failure.examples) > MAX_SUMMARY_EXAMPLES:
                lines.append(f"    ... {len(failure.examples) - MAX_SUMMARY_EXAMPLES} more")
        if self.acknowledged:
            lines.append(f"- acknowledged {len(self.acknowledged)} flagged row(s):")
            for ack in self.acknowledged[:MAX_SUMMARY_EXAMPLES]:
                lines.append(f"    row {ack.row}: {ack.symbol} {ack.date} {ack.check} ({ack.severity}) by "
                             f"{ack.reviewer}: {ack.reason}")
            if len(self.acknowledged) > MAX_SUMMARY_EXAMPLES:
                lines.append(f"    ... {len(self.acknowledged) - MAX_SUMMARY_EXAMPLES} more")
        return "\n".join(lines)


def result_from_failures(suite: str, failures: list[CheckFailure], n_rows: int,
                         acknowledged: tuple[AcknowledgedRow, ...] = ()) -> DataCheckResult:
    return DataCheckResult(
        suite=suite,
        success=not any(f.severity == "error" for f in failures),
        failures=tuple(failures),
        n_rows=n_rows,
        acknowledged=acknowledged,
    )
