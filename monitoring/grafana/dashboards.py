"""marlops' Grafana dashboards, built with grafanalib.

One function per dashboard returns a grafanalib `Dashboard`; `main` writes each as `<uid>.json` (sorted keys,
stable uids, panel ids in order), so the committed JSON under monitoring/grafana/dashboards/ is reproducible:

    python -m monitoring.grafana.dashboards --out monitoring/grafana/dashboards

Every panel and target reads the `$datasource` template variable (a Prometheus data source; the provisioned one is
`monitoring/grafana/provisioning/datasources/prometheus.yml`). The metrics are those listed in docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import attr
from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Dashboard,
    GridPos,
    Stat,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39  # Grafana 10.x; panels use data source references (objects), not names
RATE = "5m"
TAGS = ["marlops"]
PANEL_WIDTH, PANEL_HEIGHT = 12, 8

# Threshold steps (Grafana's fieldConfig thresholds: the first step's value is null).
LATENCY_STEPS = [{"color": "green", "value": None}, {"color": "orange", "value": 0.25}, {"color": "red", "value": 0.4}]
DRAWDOWN_STEPS = [{"color": "green", "value": None}, {"color": "orange", "value": 0.15},
                  {"color": "red", "value": 0.30}]


def _steps(limit: float) -> list[dict]:
    return [{"color": "green", "value": None}, {"color": "red", "value": limit}]


def quantile(q: float, metric: str, by: str = "") -> str:
    """p`q` of histogram `metric` over the last 5 minutes: `histogram_quantile(q, sum by (le[, by]) (rate(..)))`."""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))"


def _targets(queries: Sequence[tuple[str, str]]) -> list[Target]:
    return [Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i), datasource=DATASOURCE)
            for i, (expr, legend) in enumerate(queries)]


def timeseries(title: str, queries: Sequence[tuple[str, str]], unit: str = "", steps: list[dict] | None = None,
               description: str = "") -> TimeSeries:
    """A time series panel of (PromQL, legend) queries; `steps` draws threshold lines."""
    return TimeSeries(
        title=title, description=description, dataSource=DATASOURCE, targets=_targets(queries), unit=unit,
        thresholds=steps or [{"color": "green", "value": None}],
        thresholdsStyleMode="line" if steps else "off", legendDisplayMode="table", legendPlacement="bottom",
        legendCalcs=["lastNotNull", "max"], tooltipMode="multi",
    )


def stat_names(title: str, expr: str, legend: str, description: str = "") -> Stat:
    """A stat panel showing the legend (label values) of the series `expr` returns, e.g. the state that is 1."""
    return Stat(title=title, description=description, dataSource=DATASOURCE, targets=_targets([(expr, legend)]),
                textMode="name", graphMode="none", reduceCalc="lastNotNull", colorMode="value",
                color={"mode": "thresholds"}, noValue="no data", thresholds=[{"color": "green", "value": None}])


def _dashboard(uid: str, title: str, description: str, panels: list,
               extra_templates: Sequence[Template] = ()) -> Dashboard:
    laid_out = [attr.evolve(p, gridPos=GridPos(h=PANEL_HEIGHT, w=PANEL_WIDTH, x=(i % 2) * PANEL_WIDTH,
                                                y=(i // 2) * PANEL_HEIGHT))
                for i, p in enumerate(panels)]
    datasource = Template(name="datasource", label="Data source", type="datasource", query="prometheus")
    return Dashboard(
        uid=uid, title=title, description=description, tags=TAGS, timezone="utc", refresh="30s",
        time=Time("now-6h", "now"), schemaVersion=SCHEMA_VERSION, editable=True, panels=laid_out,
        templating=Templating(list=[datasource, *extra_templates]),
    ).auto_panel_ids()


def _p50_p99(metric: str, name: str, by: str = "") -> list[tuple[str, str]]:
    label = " ".join(part for part in (f"{{{{{by}}}}}" if by else "", name) if part)
    return [(quantile(0.5, metric, by), f"{label} p50"), (quantile(0.99, metric, by), f"{label} p99")]


def latency() -> Dashboard:
    return _dashboard("marlops-latency", "marlops / Latency",
                      "Inference, decision and order latencies (p50/p99 over 5 m); lines at 250 ms and 400 ms.", [
        timeseries("Inference p50/p99 by model", _p50_p99("marlops_trading_inference_seconds", "", "model"), "s",
                   LATENCY_STEPS, "One Triton request (symbol_agent, sl_fallback, master_agent)."),
        timeseries("Decision latency p50/p99",
                   _p50_p99("marlops_trading_decision_latency_seconds", "trading")
                   + _p50_p99("marlops_gateway_decision_seconds", "gateway"), "s", LATENCY_STEPS,
                   "Trading: bar in -> decisions accepted by the gateway. Gateway: bar in -> intents durable."),
        timeseries("Action to order p50/p99", _p50_p99("marlops_gateway_action_to_order_seconds", "action->order"),
                   "s", LATENCY_STEPS, "Decision accepted -> order acknowledged by the broker."),
        timeseries("Order to fill p50/p99", _p50_p99("marlops_gateway_order_to_fill_seconds", "order->fill"), "s",
                   description="Order acknowledged -> completely filled."),
        timeseries("Directive propagation p50/p99",
                   _p50_p99("marlops_gateway_directive_propagation_seconds", "directive"), "s", LATENCY_STEPS,
                   "Master directive issued -> applied by the gateway."),
    ])


def performance() -> Dashboard:
    return _dashboard("marlops-performance", "marlops / Performance",
                      "Book equity and the gateway's trailing-window performance and cost gauges.", [
        timeseries("Equity", [("marlops_gateway_equity", "equity")], "currencyUSD"),
        timeseries("Rolling Sharpe (annualised)", [("marlops_gateway_rolling_sharpe", "sharpe")], "none"),
        timeseries("Win rate (bars)", [("marlops_gateway_win_rate_ratio", "win rate")], "percentunit"),
        timeseries("Profit factor", [("marlops_gateway_profit_factor", "profit factor")], "none"),
        timeseries("Turnover per bar", [("marlops_gateway_turnover_ratio", "turnover")], "percentunit"),
        timeseries("Cost / gross profit", [("marlops_gateway_cost_to_gross_profit_ratio", "cost / gross profit")],
                   "none", _steps(0.4), "CostRatioHigh fires above 0.4."),
        timeseries("Realized cost (signed)", [("marlops_gateway_realized_cost_signed_dollars", "signed cost")],
                   "currencyUSD", description="Favourable fills count negative."),
        timeseries("Divergence from benchmark (SPY)",
                   [("marlops_gateway_benchmark_divergence_ratio", "portfolio - SPY")], "percentunit"),
    ])


def risk() -> Dashboard:
    return _dashboard("marlops-risk", "marlops / Risk",
                      "Trading state, drawdowns, exposure and concentration, guardrail denials, open orders.", [
        stat_names("Trading state", "marlops_gateway_trading_state == 1", "{{state}}"),
        timeseries("Drawdown", [("marlops_gateway_drawdown_intraday_ratio", "intraday"),
                                ("marlops_gateway_drawdown_from_peak_ratio", "from peak")], "percentunit",
                   DRAWDOWN_STEPS, "IntradayDrawdownHigh at 0.15, DrawdownFromPeakHigh at 0.30."),
        timeseries("Gross exposure", [("marlops_gateway_gross_exposure", "gross / equity")], "percentunit"),
        timeseries("Sector exposure", [("marlops_gateway_sector_exposure_ratio", "{{sector}}")], "percentunit"),
        timeseries("Herfindahl (concentration)", [("marlops_gateway_herfindahl_ratio", "herfindahl")], "none"),
        timeseries("Risk denials by reason",
                   [(f"sum by (reason) (rate(marlops_gateway_risk_denials_total[{RATE}]))", "{{reason}}")], "ops"),
        timeseries("Orders in flight", [("marlops_gateway_inflight_orders", "in flight")], "none"),
        timeseries("Gateway alerts active", [("max by (name) (marlops_gateway_alert_active)", "{{name}}")], "none"),
    ])


def data_quality() -> Dashboard:
    feature = Template(name="feature", label="Feature", dataSource=DATASOURCE,
                       query="label_values(marlops_feature_drift_score, feature)", includeAll=True, multi=True,
                       allValue=".*")
    sel = '{feature=~"$feature"}'
    return _dashboard("marlops-data-quality", "marlops / Data quality",
                      "Feature drift, SL parity, feed gaps and flags, provider states, trading alerts.", [
        timeseries("Drift score (max) by spec", [("marlops_feature_drift_score_max", "{{spec}}")], "none",
                   _steps(0.8), "FeatureDriftScoreHigh fires above 0.8."),
        timeseries("Drift sigma by feature", [(f"marlops_feature_drift_sigma{sel}", "{{spec}} {{feature}}")], "none"),
        timeseries("Drift KS distance by feature",
                   [(f"marlops_feature_drift_ks_distance{sel}", "{{spec}} {{feature}}")], "none"),
        timeseries("Drift PSI by feature", [(f"marlops_feature_drift_psi{sel}", "{{spec}} {{feature}}")], "none"),
        timeseries("SL parity (max abs diff)", [("marlops_sl_parity_max_abs_diff", "{{spec}}")], "none",
                   _steps(1e-4), "Served vs recomputed SL probability; SLParityBroken above 1e-4."),
        timeseries("Missing bars by symbol",
                   [(f"sum by (symbol) (increase(marlops_feed_missing_bars_total[{RATE}]))", "{{symbol}}")], "none"),
        timeseries("Flagged bars by reason",
                   [(f"sum by (reason) (increase(marlops_feed_flagged_bars_total[{RATE}]))", "{{reason}}")], "none"),
        stat_names("Feed provider state", "marlops_feed_provider_state == 1", "{{provider}}: {{state}}"),
        timeseries("Trading alerts active", [("max by (name) (marlops_trading_alert_active)", "{{name}}")], "none"),
    ], extra_templates=[feature])


def lifecycle() -> Dashboard:
    shadow = "marlops_trading_shadow_decisions_total"
    agreement = (f'sum by (model, version) (rate({shadow}{{agrees="True"}}[{RATE}])) '
                 f"/ sum by (model, version) (rate({shadow}[{RATE}]))")
    return _dashboard("marlops-lifecycle", "marlops / Lifecycle",
                      "Bars decided/skipped, decisions by policy version, shadow agreement, routing, data triggers.", [
        timeseries("Bars decided / skipped", [
            (f"sum(rate(marlops_trading_bars_decided_total[{RATE}]))", "decided"),
            (f"sum by (reason) (rate(marlops_trading_bars_skipped_total[{RATE}]))", "skipped {{reason}}"),
        ], "ops"),
        timeseries("Decisions by policy version",
                   [(f"sum by (model, version) (rate(marlops_trading_decisions_total[{RATE}]))",
                     "{{model}} {{version}}")], "ops"),
        timeseries("Shadow agreement", [(agreement, "{{model}} {{version}}")], "percentunit",
                   description="Share of shadow decisions equal to the acting policy's (label agrees=True/False)."),
        timeseries("Routing table revision", [("marlops_trading_routing_revision", "revision")], "none"),
        timeseries("Data triggers",
                   [(f"sum by (trigger) (increase(marlops_trading_data_triggers_total[{RATE}]))", "{{trigger}}")],
                   "none"),
    ])


DASHBOARDS: tuple[Callable[[], Dashboard], ...] = (latency, performance, risk, data_quality, lifecycle)


def render(dashboard: Dashboard) -> str:
    """The dashboard's JSON as written to disk: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(dashboard.to_json_data(), sort_keys=True, indent=2, cls=DashboardEncoder) + "\n"


def rendered() -> dict[str, str]:
    """File name (`<uid>.json`) -> JSON of every dashboard."""
    return {f"{d.uid}.json": render(d) for d in (build() for build in DASHBOARDS)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write marlops' Grafana dashboards as JSON.")
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR, help="folder for <uid>.json files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (args.out / name).write_text(text)
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
