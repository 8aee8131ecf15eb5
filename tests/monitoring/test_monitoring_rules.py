"""Prometheus config and alert rules (monitoring/prometheus/): promtool checks and unit tests, and the metric
names the rules read against the code that exports them.

promtool is Debian's (`scripts/install_monitoring.sh`, run by `make test`); without it those tests skip.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "monitoring" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "alert_rules.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
# Where marlops metrics are defined: Counter("name", ...), Gauge(...), Histogram(...), Summary(...).
METRIC_SOURCES = ("gateway", "marlops")
# Metrics of other programs the rules may read: Prometheus' own scrape health and Triton's metrics port.
EXTERNAL_METRICS = {"up"}
EXTERNAL_PREFIXES = ("nv_",)
# Metrics named in the rules ahead of their code: none today (the issue 13 gateway metrics
# marlops_gateway_drawdown_intraday_ratio, marlops_gateway_drawdown_from_peak_ratio and
# marlops_gateway_cost_to_gross_profit_ratio are defined in gateway/metrics.py).
PENDING_METRICS: set[str] = set()
SEVERITIES = {"page", "ticket"}


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _promtool() -> str:
    promtool = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if promtool is None:
        pytest.skip("promtool is not installed: run scripts/install_monitoring.sh (as root; `make test` runs it) "
                    "to check the Prometheus config and run the alert-rule unit tests")
    return promtool


def _run(*args: str) -> str:
    done = subprocess.run([_promtool(), *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_when_checking_config_then_valid_with_its_rule_file() -> None:
    output = _run("check", "config", str(CONFIG))
    assert "SUCCESS" in output and "1 rule files found" in output, output


def test_promtool_when_checking_rules_then_valid() -> None:
    output = _run("check", "rules", str(RULES))
    assert f"SUCCESS: {len(_rules())} rules found" in output, output


def test_promtool_when_running_rule_unit_tests_then_every_file_succeeds() -> None:
    assert RULE_TESTS
    output = _run("test", "rules", *map(str, RULE_TESTS))
    assert output.count("SUCCESS") == len(RULE_TESTS), output


def test_rules_when_loaded_then_every_alert_has_severity_summary_description_value_and_runbook() -> None:
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique (Alertmanager inhibit_rules match on them)"
    for rule in rules:
        assert rule["alert"] and rule["expr"], rule
        assert rule["labels"]["severity"] in SEVERITIES, rule
        notes = rule["annotations"]
        assert notes["summary"], rule
        assert "{{ $value" in notes["description"], rule
        assert notes["value"] == "{{ $value }}", rule  # read by monitoring/alert_context.py
        assert notes["runbook_url"] == f"docs/operations.md#{rule['alert'].lower()}", rule


def test_rule_tests_when_read_then_every_rule_has_a_firing_and_a_silent_case() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert names - fires == set(), "rules without a promtool case where they fire"
    assert names - silent == set(), "rules without a promtool case where they do not fire"
    assert fires | silent <= names, "promtool cases for alerts that no rule defines"


def _metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers left once strings, label matchers, ranges, grouping
    clauses, function calls and PromQL keywords are taken out."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\b[a-z_]+\s*\(", "(", bare)  # function names
    keywords = {"and", "or", "unless", "offset", "bool", "inf", "nan"}
    return {t for t in re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", bare) if t not in keywords and not t[0].isdigit()}


def _defined_metrics() -> set[tuple[str, str]]:
    """(kind, name) of every metric the code defines."""
    source = "\n".join(p.read_text() for d in METRIC_SOURCES for p in sorted((REPO / d).rglob("*.py")))
    return set(re.findall(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-z0-9_:]+)\"", source))


def _exported_as(defined: set[tuple[str, str]]) -> set[str]:
    """The series names prometheus_client exports: a Counter `x` or `x_total` is `x_total`; a Gauge `x` is
    `x`; a Histogram `x` is `x_bucket`, `x_count`, `x_sum`; a Summary `x` is `x_count`, `x_sum`."""
    suffixes = {"Gauge": ("",), "Histogram": ("_bucket", "_count", "_sum"), "Summary": ("_count", "_sum")}
    names = set()
    for kind, name in defined:
        if kind == "Counter":
            names.add(f"{name.removesuffix('_total')}_total")
        else:
            names |= {f"{name}{suffix}" for suffix in suffixes[kind]}
    return names


def test_metric_names_when_parsed_then_they_read_the_metrics_named_in_the_expression() -> None:
    expr = ('histogram_quantile(0.99, sum by (job, le) (rate(marlops_a_seconds_bucket{model="m"}[1m]))) > 0.25 '
            'or (up{job=~"x"} unless up offset 5m) or increase(nv_inference_request_failure[5m]) > 1e-4')
    assert _metric_names(expr) == {"marlops_a_seconds_bucket", "up", "nv_inference_request_failure"}


def test_rules_when_reading_metrics_then_the_code_exports_them_or_they_are_external() -> None:
    exported = _exported_as(_defined_metrics())
    assert "marlops_gateway_reconcile_mismatches_total" in exported  # Counter("..._mismatches") gains _total
    assert "marlops_gateway_reconcile_mismatches" not in exported
    assert "marlops_trading_inference_seconds_bucket" in exported
    read = {name for rule in _rules() for name in _metric_names(rule["expr"])}
    assert any(name.startswith("marlops_") for name in read)
    unknown = {
        name for name in read
        if name not in exported and name not in EXTERNAL_METRICS and name not in PENDING_METRICS
        and not name.startswith(EXTERNAL_PREFIXES)
    }
    assert unknown == set(), f"alert rules read metrics nothing exports: {sorted(unknown)}"
    # Every marlops_* token anywhere in an expression is covered by the names above.
    tokens = {t for rule in _rules() for t in re.findall(r"marlops_[a-z0-9_]+", rule["expr"])}
    assert tokens <= read


def test_runbooks_when_docs_read_then_every_alert_has_its_section_and_table_row() -> None:
    """Every rule's runbook_url lands on a section of docs/operations.md (GitHub-style anchor of `### <Alert>`)."""
    operations = (REPO / "docs" / "operations.md").read_text()
    headings = {line[4:].strip().lower() for line in operations.splitlines() if line.startswith("### ")}
    for rule in _rules():
        assert rule["alert"].lower() in headings, f"docs/operations.md lacks '### {rule['alert']}'"
        assert f"| {rule['alert']} |" in operations, f"docs/operations.md's alert table lacks {rule['alert']}"
