from data_checks.results import CheckFailure, result_from_failures


def test_result_when_only_warnings_then_success_and_summary_lists_them():
    warning = CheckFailure(check="zero_volume", column="volume", rows=(4,), examples=("row 4: ABC @ t",), severity="warning")
    result = result_from_failures("bars", [warning], n_rows=10)
    assert result.success and result.warnings == (warning,) and result.errors == ()
    assert "bars: passed on 10 rows (0 errors, 1 warnings)" in result.summary()
    assert "row 4: ABC @ t" in result.summary()


def test_result_when_error_present_then_failed_and_rows_collected():
    failures = [
        CheckFailure(check="not_null", column="close", rows=(1, 2)),
        CheckFailure(check="not_null", column="open", rows=(2, 5)),
    ]
    result = result_from_failures("bars", failures, n_rows=10)
    assert not result.success
    assert result.rows_for("not_null") == {1, 2, 5}
    assert result.failed_checks() == {"not_null"}
