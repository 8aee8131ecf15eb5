"""Grafana dashboards as code (monitoring/grafana/dashboards.py) and the provisioning files.

The committed JSON under monitoring/grafana/dashboards/ must be what the code generates; every PromQL expression
(panel targets and template-variable queries) reads metrics the code exports (the helpers of the alert-rule test).
"""

import json
import re
from pathlib import Path

import yaml
from test_monitoring_rules import _defined_metrics, _exported_as, _metric_names

from monitoring.grafana import dashboards as grafana

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "monitoring" / "grafana"
PROVISIONING = GRAFANA / "provisioning"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
EXPECTED_UIDS = {"marlops-latency", "marlops-performance", "marlops-risk", "marlops-data-quality",
                 "marlops-lifecycle"}


def _generated() -> dict[str, dict]:
    return {name: json.loads(text) for name, text in grafana.rendered().items()}


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p.get("type") != "row"]


def _expressions(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in _panels(dashboard) for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_committed_json_when_compared_then_equals_what_the_code_generates() -> None:
    rendered = grafana.rendered()
    committed = {p.name: p.read_text() for p in sorted((GRAFANA / "dashboards").glob("*.json"))}
    assert set(committed) == set(rendered), "run: python -m monitoring.grafana.dashboards"
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} is stale: run python -m monitoring.grafana.dashboards"
    assert rendered == grafana.rendered()  # deterministic


def test_main_when_writing_then_one_json_per_dashboard(tmp_path: Path) -> None:
    assert grafana.main(["--out", str(tmp_path / "out")]) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {f"{uid}.json" for uid in EXPECTED_UIDS}


def test_dashboards_when_built_then_unique_uids_titles_and_panel_ids_with_expressions() -> None:
    boards = list(_generated().values())
    assert {d["uid"] for d in boards} == EXPECTED_UIDS
    assert len({d["title"] for d in boards}) == len(boards)
    for board in boards:
        assert board["id"] is None  # provisioned by uid
        panels = _panels(board)
        assert panels, board["uid"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), board["uid"]
        for panel in panels:
            assert panel["title"] and panel["targets"], panel
            assert panel["datasource"] == DATASOURCE_REF, panel["title"]
            for target in panel["targets"]:
                assert target["expr"].strip() and target["refId"], panel["title"]
                assert target["datasource"] == DATASOURCE_REF, panel["title"]
            assert all("value" in s and "color" in s for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"


def test_dashboards_when_read_then_they_carry_the_requested_thresholds_and_variables() -> None:
    boards = {d["uid"]: d for d in _generated().values()}

    def steps(uid: str, title_part: str) -> set[float]:
        (panel,) = [p for p in _panels(boards[uid]) if title_part in p["title"]]
        return {s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]} - {None}

    assert steps("marlops-latency", "Inference") == {0.25, 0.4}
    assert steps("marlops-latency", "Decision latency") == {0.25, 0.4}
    assert steps("marlops-performance", "Cost / gross profit") == {0.4}
    assert steps("marlops-risk", "Drawdown") == {0.15, 0.30}
    assert steps("marlops-data-quality", "Drift score") == {0.8}
    assert steps("marlops-data-quality", "SL parity") == {1e-4}
    feature = {v["name"]: v for v in boards["marlops-data-quality"]["templating"]["list"]}["feature"]
    assert feature["query"] == "label_values(marlops_feature_drift_score, feature)"
    assert feature["datasource"] == DATASOURCE_REF
    exprs = " ".join(_expressions(boards["marlops-data-quality"]))
    assert exprs.count('feature=~"$feature"') == 3
    latency = " ".join(_expressions(boards["marlops-latency"]))
    assert ("histogram_quantile(0.99, sum by (le, model) (rate(marlops_trading_inference_seconds_bucket[5m])))"
            in latency)


def test_dashboards_when_reading_metrics_then_the_code_exports_them() -> None:
    exported = _exported_as(_defined_metrics())
    exprs = [e for board in _generated().values() for e in _expressions(board)]
    read = {name for e in exprs for name in _metric_names(e)} - {"feature"}  # label_values(metric, feature)
    assert read and all(name.startswith("marlops_") for name in read), read
    assert read - exported == set(), f"dashboards read metrics nothing exports: {sorted(read - exported)}"
    tokens = {t for e in exprs for t in re.findall(r"marlops_[a-z0-9_]+", e)}
    assert tokens <= read


def test_provisioning_when_parsed_then_datasource_and_dashboard_provider_have_the_expected_keys() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "marlops-prometheus"
    assert source["url"] == "http://127.0.0.1:9090" and source["access"] == "proxy" and source["name"]

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "marlops.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["name"] and provider["folder"]
    path = Path(provider["options"]["path"])
    assert (REPO / path).resolve() == (GRAFANA / "dashboards").resolve()  # relative to a Grafana run from the repo
