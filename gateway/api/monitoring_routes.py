"""Read routes behind the operator console's monitoring panels: what the Grafana dashboards show, for an
operator without Grafana.

  GET /v1/performance     the gateway's own performance, cost and risk figures: the values its Prometheus gauges
                          export (gateway/metrics.py; definitions in gateway/domain/performance.py), read from the
                          app's registry, so the console and the dashboards show the same numbers
  GET /v1/alerts/active   the alerts firing in Alertmanager (API v2, active and neither silenced nor inhibited)
  GET /v1/routing         the routing table (who trades which symbol) from the marlops state store, read-only

Each answers 200 with what it knows: a source that is not configured says `{"configured": false, ...}`, one that
cannot be read says `{"configured": true, "error": "..."}` (URL passwords masked). Never a 500 for a source that is
down: the console shows the reason in the panel.
"""

import logging
import math
from collections.abc import Mapping
from typing import Any

import httpx
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from contracts.routing_table import (
    DEFAULT_ROUTE,
    IMPLICIT_DEFAULT_VARIANT,
    RoutingTableReader,
    RoutingTableUnavailable,
)
from contracts.urls import redact_url
from gateway.api.roles import guarded
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

router = APIRouter()

ALERTMANAGER_ALERTS = "/api/v2/alerts"
ALERTMANAGER_FILTER = {"active": "true", "silenced": "false", "inhibited": "false"}
# Most urgent first on the console (marlops rules use page and ticket; critical/warning/info are common elsewhere).
SEVERITY_ORDER = {"page": 0, "critical": 0, "ticket": 1, "warning": 1, "info": 2}

NO_TIMESTEP = "no timestep since the gateway started"
NO_FILL = "no fill since the gateway started"

# key, metric, unit, why it is undefined (NaN), what "needs a timestep" means for a gauge that starts at 0.
# unit: fraction (shown as %), ratio (a plain number), multiple (x), currency.
FIGURES: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("drawdown_intraday", "marlops_gateway_drawdown_intraday_ratio", "fraction", "", NO_TIMESTEP),
    ("drawdown_from_peak", "marlops_gateway_drawdown_from_peak_ratio", "fraction", "", NO_TIMESTEP),
    ("rolling_sharpe", "marlops_gateway_rolling_sharpe", "ratio",
     "needs 2 bar returns (3 settled bars) that are not all equal", None),
    ("win_rate", "marlops_gateway_win_rate_ratio", "fraction", "no bar has moved equity yet", None),
    ("profit_factor", "marlops_gateway_profit_factor", "multiple", "no bar with a profit or a loss yet", None),
    ("turnover", "marlops_gateway_turnover_ratio", "fraction", "", NO_TIMESTEP),
    ("cost_to_gross_profit", "marlops_gateway_cost_to_gross_profit_ratio", "ratio",
     "no closing fill in the trailing fills yet (nothing realized)", None),
    ("realized_cost_signed", "marlops_gateway_realized_cost_signed_dollars", "currency", "", NO_FILL),
    ("herfindahl", "marlops_gateway_herfindahl_ratio", "ratio", "", NO_TIMESTEP),
    ("benchmark_divergence", "marlops_gateway_benchmark_divergence_ratio", "fraction",
     "needs 2 settled bars with a benchmark price", None),
)
INFINITE_WHY = {
    "profit_factor": "profit and no losing bar in the window",
    "cost_to_gross_profit": "costs, and no realized gross profit in the window",
}


# ---- the sources the app keeps -------------------------------------------------------------------------
class MonitoringSources:
    """What the monitoring routes read besides the gateway itself: the routing table's reader (one engine, kept for
    the app's life). Built by create_app; `close()` on stop."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.routing: RoutingTableReader | None = None
        self.routing_problem: str | None = None
        if settings.state_url is not None:
            try:
                self.routing = RoutingTableReader(settings.state_url)
            except RoutingTableUnavailable as exc:
                self.routing_problem = str(exc)
                logger.error("console routing panel: %s", exc)

    def close(self) -> None:
        if self.routing is not None:
            self.routing.close()


def sources_of(request: Request) -> MonitoringSources:
    sources: MonitoringSources | None = getattr(request.app.state, "monitoring", None)
    if sources is None:  # an app built without create_app
        sources = request.app.state.monitoring = MonitoringSources(request.app.state.settings)
    return sources


# ---- performance --------------------------------------------------------------------------------------
def _number(value: float | None) -> float | str | None:
    """JSON has no NaN or Infinity: NaN/None -> None, +-Inf -> "+Inf" / "-Inf" (Prometheus' spelling)."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def performance_figures(metrics: GatewayMetrics, settings: GatewaySettings) -> dict[str, Any]:
    """The figures the gateway's gauges hold now; each {value, unit, metric, why}: value None with the reason
    (`why`) when the figure is undefined or nothing has set it since the gateway started."""
    registry = metrics.registry
    timesteps = registry.get_sample_value("marlops_gateway_timesteps_total") or 0.0
    fills = registry.get_sample_value("marlops_gateway_orders_filled_total") or 0.0
    figures: dict[str, dict[str, Any]] = {}
    for key, metric, unit, undefined_why, unset_why in FIGURES:
        raw = registry.get_sample_value(metric)
        unset = unset_why is not None and (timesteps if unset_why == NO_TIMESTEP else fills) == 0
        value = None if unset else _number(raw)
        why = unset_why if unset else (undefined_why if value is None else INFINITE_WHY.get(key) if isinstance(
            value, str) else None)
        figures[key] = {"value": value, "unit": unit, "metric": metric, "why": why}
    sectors: dict[str, float] = {}
    for family in metrics.sector_exposure.collect():
        for sample in family.samples:
            if math.isfinite(sample.value):
                sectors[sample.labels["sector"]] = sample.value
    return {
        "figures": figures,
        "sector_exposure": dict(sorted(sectors.items(), key=lambda kv: (-kv[1], kv[0]))),
        "sector_exposure_why": NO_TIMESTEP if timesteps == 0 else None,
        "window": {"bars": settings.performance_window_bars, "bars_per_year": settings.bars_per_year,
                   "cost_window_fills": settings.cost_window_fills, "benchmark_symbol": settings.benchmark_symbol},
        "timesteps": int(timesteps),
        "fills": int(fills),
    }


@guarded(router, "GET", "/v1/performance")
def get_performance(request: Request) -> dict[str, Any]:
    """Drawdowns, rolling Sharpe, win rate, profit factor, turnover, cost / gross profit, signed realized cost,
    Herfindahl, benchmark divergence and sector exposure: the values of the gateway's own gauges."""
    return performance_figures(request.app.state.metrics, request.app.state.settings)


# ---- Alertmanager ---------------------------------------------------------------------------------------
def describe_am_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """One API v2 alert as the console shows it."""
    labels = alert.get("labels") if isinstance(alert.get("labels"), dict) else {}
    annotations = alert.get("annotations") if isinstance(alert.get("annotations"), dict) else {}
    status = alert.get("status") if isinstance(alert.get("status"), dict) else {}
    return {
        "name": labels.get("alertname", "unnamed"),
        "severity": labels.get("severity", "unknown"),
        "state": status.get("state", "unknown"),
        "startsAt": alert.get("startsAt"),
        "summary": annotations.get("summary") or annotations.get("description"),
        # marlops rules carry `value: "{{ $value }}"`: Alertmanager has no $value of its own.
        "value": annotations.get("value"),
        "labels": labels,
        "fingerprint": alert.get("fingerprint"),
    }


async def read_alertmanager(url: str, timeout_s: float) -> dict[str, Any]:
    """Alertmanager's firing alerts (most severe, then oldest first), or why they cannot be read."""
    shown = redact_url(url)
    where = f"Alertmanager at {shown}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            response = await client.get(url.rstrip("/") + ALERTMANAGER_ALERTS, params=ALERTMANAGER_FILTER,
                                        headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        # httpx messages may name the URL: mask it the same way.
        return {"configured": True, "source": shown,
                "error": f"{where} unreachable: {type(exc).__name__}: {redact_url(str(exc)) or 'no detail'}"}
    if response.status_code != 200:
        return {"configured": True, "source": shown,
                "error": f"{where} answered HTTP {response.status_code}: {response.text[:200]}"}
    try:
        body = response.json()
    except ValueError:
        return {"configured": True, "source": shown, "error": f"{where} answered something that is not JSON"}
    if not isinstance(body, list):
        return {"configured": True, "source": shown,
                "error": f"{where} answered a {type(body).__name__}, not the API v2 list of alerts"}
    alerts = [describe_am_alert(a) for a in body if isinstance(a, dict)]
    alerts.sort(key=lambda a: (SEVERITY_ORDER.get(str(a["severity"]), 3), str(a["startsAt"] or ""), a["name"]))
    return {"configured": True, "source": shown, "alerts": alerts, "count": len(alerts)}


@guarded(router, "GET", "/v1/alerts/active")
async def get_active_alerts(request: Request) -> dict[str, Any]:
    """Alerts firing in Alertmanager (active, not silenced, not inhibited): name, severity, state, startsAt,
    summary, the rule's value annotation and labels. The gateway's own alert book is GET /v1/alerts."""
    settings: GatewaySettings = request.app.state.settings
    if settings.alertmanager_url is None:
        return {"configured": False, "detail": "no Alertmanager configured (MARLOPS_GATEWAY_ALERTMANAGER_URL)"}
    return await read_alertmanager(settings.alertmanager_url, settings.alertmanager_timeout_s)


# ---- routing table ---------------------------------------------------------------------------------------
def routing_rows(policies: Mapping[str, Any], routes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per route: symbol, variant -> the policy (model/version) it names, and the shadow's. The default
    row ("*") last; when there is none, the implicit one (unlisted symbols trade on production)."""

    def ref(slot: str | None) -> str | None:
        found = policies.get(slot) if slot else None
        if not isinstance(found, dict):
            return None
        return str(found.get("ref") or f"{found.get('model')}/{found.get('version')}")

    rows = []
    for symbol, route in routes.items():
        route = route if isinstance(route, dict) else {}
        variant, shadow = route.get("variant"), route.get("shadow")
        rows.append({"symbol": symbol, "variant": variant, "policy": ref(variant), "shadow": shadow,
                     "shadow_policy": ref(shadow), "implicit": False})
    rows.sort(key=lambda r: (r["symbol"] == DEFAULT_ROUTE, r["symbol"]))
    if DEFAULT_ROUTE not in routes:
        rows.append({"symbol": DEFAULT_ROUTE, "variant": IMPLICIT_DEFAULT_VARIANT,
                     "policy": ref(IMPLICIT_DEFAULT_VARIANT), "shadow": None, "shadow_policy": None, "implicit": True})
    return rows


@guarded(router, "GET", "/v1/routing")
async def get_routing(request: Request) -> dict[str, Any]:
    """The routing table: policy slots (production, candidate, sl_fallback, master -> model/version), routes
    (symbol -> variant, shadow), revision and who changed it when."""
    sources = sources_of(request)
    if sources.settings.state_url is None:
        return {"configured": False, "detail": "no state store configured (MARLOPS_GATEWAY_STATE_URL)"}
    shown = redact_url(sources.settings.state_url)
    if sources.routing is None:
        return {"configured": True, "source": shown, "error": sources.routing_problem or "routing reader not built"}
    try:
        table = await run_in_threadpool(sources.routing.read)
    except RoutingTableUnavailable as exc:
        return {"configured": True, "source": shown, "error": str(exc)}
    if table is None:
        return {"configured": True, "source": shown,
                "error": f"the routing table in {shown} has no state row yet (no routing written)"}
    return {"configured": True, "source": shown, **table, "rows": routing_rows(table["policies"], table["routes"])}
