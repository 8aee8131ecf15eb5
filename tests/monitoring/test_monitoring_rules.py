import re
from pathlib import Path

import yaml

from gateway.metrics import GatewayMetrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus" / "alert_rules.yml"


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_when_loaded_then_every_alert_has_expr_severity_and_summary() -> None:
    rules = _rules()
    assert rules
    for rule in rules:
        assert rule["alert"] and rule["expr"], rule
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule  # type: ignore[index]
        assert rule["annotations"]["summary"], rule  # type: ignore[index]


def test_rules_when_referencing_gateway_metrics_then_gateway_exports_them() -> None:
    exported = GatewayMetrics().render().decode()
    referenced = {m for rule in _rules() for m in re.findall(r"marlops_gateway_[a-z_]+", str(rule["expr"]))}
    assert referenced
    for metric in referenced:
        base = re.sub(r"_(bucket|total|count|sum)$", "", metric)
        assert base in exported, f"{metric} is not exported by the gateway"

