"""The console's monitoring panels (performance and risk figures, latency, sector exposure, Alertmanager's firing
alerts, the routing table) in headless Chromium, against a real gateway over the paper exchange, a real
Alertmanager (/usr/bin/prometheus-alertmanager, `scripts/install_monitoring.sh`) and a routing table written by
marlops' own RoutingStore; and the routes behind them, without the browser, when a source is down or absent.
"""

import asyncio
import math
import subprocess
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from gateway_builders import batch, directive
from playwright.sync_api import Page, expect
from polling import wait_for
from test_gateway_console import TOKENS, WAIT_MS, auth, browser, connect, page  # noqa: F401 (fixtures)

from contracts.config import MarketHoursRule, RiskOverlaysConfig
from gateway.api.monitoring_routes import performance_figures, read_alertmanager, routing_rows
from gateway.app import create_app
from gateway.directives import InProcessDirectiveSource
from gateway.metrics import GatewayMetrics
from gateway.serve import ServerHandle, free_port, serve_app_in_thread
from gateway.settings import ApiToken, GatewaySettings
from gateway.tokens import hash_token
from marlops.routing import PolicyRef, RoutingChange
from marlops.routing_store import RoutingStore
from monitoring.alertmanager_launcher import alertmanager_command, find_alertmanager

SECTORS = {"AAPL": "technology", "MSFT": "technology", "XOM": "energy"}
# Three bars: open the book, a winning bar, a losing bar that also closes half of AAPL (a realized profit).
BARS = [
    ({"AAPL": (1.0, 100.0), "MSFT": (-0.5, 200.0), "XOM": (0.5, 50.0)}, 400.0),
    ({"AAPL": (1.0, 110.0), "MSFT": (-0.5, 190.0), "XOM": (0.5, 52.0)}, 404.0),
    ({"AAPL": (0.5, 105.0), "MSFT": (-0.5, 195.0), "XOM": (0.5, 51.0)}, 402.0),
]
FIRING = {"labels": {"alertname": "CostRatioHigh", "severity": "ticket", "service": "gateway"},
          "annotations": {"summary": "Costs eat more than 40% of gross profit", "value": "0.52"}}


def settings_for(tmp_path: Path, broker_url: str, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(**{
        "risk": RiskOverlaysConfig(market_hours=MarketHoursRule(source="off")),
        "audit_url": f"sqlite:///{tmp_path / 'gateway' / 'audit.db'}",
        "broker_base_url": broker_url,
        "fill_wait_s": 0.2,
        "reconcile_interval_s": 0,
        "api_tokens": tuple(ApiToken(principal=name, role=role, token_sha256=hash_token(token))
                            for name, (token, role) in TOKENS.items()),
        "sectors": SECTORS,
        **overrides,
    })


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager on a free port (one receiver that sends nothing); its base URL."""
    binary = find_alertmanager()
    if binary is None:
        pytest.skip("alertmanager not installed: scripts/install_monitoring.sh installs prometheus-alertmanager")
    config = tmp_path / "am" / "alertmanager.yml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"route": {"receiver": "nobody", "group_wait": "0s"},
                                      "receivers": [{"name": "nobody"}]}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(alertmanager_command(binary, config, tmp_path / "am" / "data", f"127.0.0.1:{port}"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return process.poll() is not None  # exited: fail below with its code, not a timeout

        wait_for(ready, "alertmanager ready")
        assert process.poll() is None, f"alertmanager exited with {process.returncode}"
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    """A marlops state store whose routing table marlops' RoutingStore wrote: production v3 everywhere, AAPL on
    the candidate v4 with production in shadow."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = RoutingStore(url)
    store.apply(RoutingChange(policies={"production": PolicyRef("symbol_agent", 3),
                                        "master": PolicyRef("master_agent", 2)},
                              routes={"*": ("production", None)}), principal="rita", reason="first production")
    store.apply(RoutingChange(policies={"candidate": PolicyRef("symbol_agent", 4)},
                              routes={"AAPL": ("candidate", "production")}), principal="carl", reason="canary AAPL")
    store.close()
    return url


@pytest.fixture
def traded_gateway(tmp_path: Path, paper_exchange: ServerHandle, exchange_http: httpx.Client, alertmanager: str,
                   state_url: str) -> Iterator[ServerHandle]:
    """A gateway configured with the Alertmanager and the state store, after three settled bars of fills."""
    bus = InProcessDirectiveSource()
    handle = serve_app_in_thread(create_app(
        settings_for(tmp_path, paper_exchange.url, alertmanager_url=alertmanager, state_url=state_url),
        directive_source=bus))
    bus.publish(directive("normal"))
    for index, (levels, spy) in enumerate(BARS):
        exchange_http.post("/_sim/prices", json={"prices": {s: p for s, (_, p) in levels.items()}}).raise_for_status()
        decisions = batch(levels, bar_index=index).model_copy(update={"benchmark_price": spy})
        response = httpx.post(handle.url + "/v1/decisions", params={"wait": "settled"},
                              content=decisions.model_dump_json(),
                              headers={"content-type": "application/json", **auth("tess")}, timeout=30.0)
        assert response.status_code == 200, response.text
    httpx.post(f"{alertmanager}/api/v2/alerts", json=[FIRING], timeout=5).raise_for_status()
    yield handle
    if handle.running:
        handle.stop()


def get(handle: ServerHandle, path: str, principal: str = "vic") -> Any:
    response = httpx.get(handle.url + path, headers=auth(principal), timeout=10.0)
    assert response.status_code == 200, response.text
    return response.json()


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on a thread of its own (Playwright's sync API keeps a loop running on this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=30)


def shown(figure: dict[str, Any], key: str) -> str:
    """What the console shows for one figure of GET /v1/performance (console.js figureText)."""
    value = figure["value"]
    if value == "+Inf":
        return "\u221e"
    if value == "-Inf":
        return "-\u221e"
    if value is None:
        return "\u2014"
    unit = figure["unit"]
    if unit == "fraction":
        return f"{value * 100:.2f}%"
    if unit == "multiple":
        return f"{value:.2f}\u00d7"
    if unit == "currency":
        return f"{value:,.2f}"
    return f"{value:.{3 if key == 'herfindahl' else 2}f}"


# ---- in the browser ------------------------------------------------------------------------------------------
def test_console_when_trading_with_alertmanager_and_routing_then_panels_match_the_routes(
    traded_gateway: ServerHandle, page: Page, alertmanager: str  # noqa: F811
) -> None:
    requested: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    performance = get(traded_gateway, "/v1/performance")
    figures = performance["figures"]
    # Three bars with a winning and a losing one, and a closing fill: every figure has a number.
    assert performance["timesteps"] == 3 and performance["fills"] > 3
    assert {k for k, f in figures.items() if f["value"] is None} == set(), figures
    assert figures["win_rate"]["value"] == pytest.approx(0.5)
    assert 0 < figures["herfindahl"]["value"] < 1 and figures["turnover"]["value"] > 0

    connect(page, traded_gateway, token=TOKENS["vic"][0], principal="vic")

    tiles = page.get_by_test_id("performance")
    expect(tiles).to_have_attribute("data-source", "api", timeout=WAIT_MS)
    for key, figure in figures.items():
        tile = tiles.get_by_test_id(f"figure-{key}")
        expect(tile.get_by_test_id("figure-value")).to_have_text(shown(figure, key))
        expect(tile).to_have_attribute("data-state", "ok")
    expect(tiles.get_by_test_id("figure-benchmark_divergence")).to_contain_text("Divergence from SPY")

    latency = get(traded_gateway, "/v1/latency")
    table = page.get_by_test_id("latency")
    for kind in ("decision", "order_to_fill", "timestep_settle"):
        row = table.locator(f'tr[data-key="{kind}"]')
        expect(row).to_contain_text(f"{latency[kind]['p50']:.1f}")
        expect(row).to_contain_text(f"{latency[kind]['p99']:.1f}")
        expect(row.locator("svg.bars rect")).to_have_count(2)
    expect(table.locator('tr[data-key="directive"]')).to_contain_text("no samples yet")

    sectors = page.get_by_test_id("sector-bars")
    for sector, value in performance["sector_exposure"].items():
        expect(sectors.locator(f'tr[data-key="{sector}"]')).to_contain_text(f"{value * 100:.2f}%")
    assert set(performance["sector_exposure"]) == {"technology", "energy"}

    am_alerts = get(traded_gateway, "/v1/alerts/active")
    assert [a["name"] for a in am_alerts["alerts"]] == ["CostRatioHigh"]
    expect(page.get_by_test_id("am-status")).to_have_text(f"1 firing in Alertmanager at {alertmanager}")
    row = page.get_by_test_id("am-alerts").locator('tr[data-key="CostRatioHigh"]')
    for part in ("ticket", "active", "0.52", "Costs eat more than 40% of gross profit", "service=gateway"):
        expect(row).to_contain_text(part)
    expect(page.get_by_test_id("alerts")).to_have_attribute("data-source", "api")  # the gateway's own book too

    expect(page.get_by_test_id("routing-status")).to_contain_text("revision 2")
    expect(page.get_by_test_id("routing-status")).to_contain_text("by carl: canary AAPL")
    policies = page.get_by_test_id("routing-policies")
    expect(policies.locator('tr[data-key="candidate"]')).to_contain_text("symbol_agent4")
    expect(policies.locator('tr[data-key="master"]')).to_contain_text("master_agent2")
    routes = page.get_by_test_id("routing-routes")
    expect(routes.locator('tr[data-key="AAPL"]')).to_have_text("AAPLcandidatesymbol_agent/4productionsymbol_agent/3")
    expect(routes.locator('tr[data-key="*"]')).to_contain_text("* (every other symbol)productionsymbol_agent/3")

    expect(page.get_by_test_id("status-line")).to_have_text("connected")
    expect(page.get_by_test_id("missing-endpoints")).to_be_hidden()
    # From the second poll on, each figure has a sparkline of this page's polls (inline SVG).
    expect(tiles.get_by_test_id("figure-rolling_sharpe").locator("svg.spark polyline")).to_have_count(1)
    page.screenshot(path="/tmp/console-panels.png", full_page=True)
    assert requested and all(url.startswith(traded_gateway.url + "/") for url in requested), requested
    assert errors == []


def test_console_when_nothing_configured_and_no_fill_then_panels_say_why(
    tmp_path: Path, paper_exchange: ServerHandle, page: Page  # noqa: F811
) -> None:
    handle = serve_app_in_thread(create_app(settings_for(tmp_path, paper_exchange.url)))
    try:
        connect(page, handle, token=TOKENS["vic"][0], principal="vic")
        tiles = page.get_by_test_id("performance")
        expect(tiles).to_have_attribute("data-source", "api", timeout=WAIT_MS)
        for key in ("drawdown_intraday", "rolling_sharpe", "herfindahl", "realized_cost_signed"):
            tile = tiles.get_by_test_id(f"figure-{key}")
            expect(tile.get_by_test_id("figure-value")).to_have_text("\u2014")  # not 0
            expect(tile).to_have_attribute("data-state", "unavailable")
        expect(tiles.get_by_test_id("figure-drawdown_intraday").get_by_test_id("figure-why")).to_have_text(
            "no timestep since the gateway started")
        expect(tiles.get_by_test_id("figure-realized_cost_signed").get_by_test_id("figure-why")).to_have_text(
            "no fill since the gateway started")
        expect(page.get_by_test_id("sector-bars")).to_contain_text("no timestep since the gateway started")
        expect(page.get_by_test_id("am-status")).to_have_attribute("data-state", "not-configured")
        expect(page.get_by_test_id("am-status")).to_contain_text(
            "Alertmanager not configured: no Alertmanager configured (MARLOPS_GATEWAY_ALERTMANAGER_URL)")
        expect(page.get_by_test_id("routing-status")).to_have_attribute("data-state", "not-configured")
        expect(page.get_by_test_id("routing-status")).to_contain_text("MARLOPS_GATEWAY_STATE_URL")
        expect(page.get_by_test_id("routing-routes")).to_contain_text("not configured")
        expect(page.get_by_test_id("status-line")).to_have_text("connected")
    finally:
        handle.stop()


# ---- the routes, without the browser ---------------------------------------------------------------------------
def test_routes_when_alertmanager_down_and_state_store_absent_then_200_with_the_reason(
    tmp_path: Path, paper_exchange: ServerHandle
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    missing = tmp_path / "no" / "state.db"
    handle = serve_app_in_thread(create_app(settings_for(
        tmp_path, paper_exchange.url, alertmanager_url=dead, alertmanager_timeout_s=0.5,
        state_url=f"sqlite:///{missing}")))
    try:
        alerts = get(handle, "/v1/alerts/active")
        routing = get(handle, "/v1/routing")
        performance = get(handle, "/v1/performance")
        unauthenticated = httpx.get(handle.url + "/v1/routing", timeout=10.0)
    finally:
        handle.stop()
    assert alerts["configured"] is True and "alerts" not in alerts
    assert alerts["error"].startswith(f"Alertmanager at {dead} unreachable: ConnectError")
    assert routing == {"configured": True, "source": f"sqlite:///{missing}",
                       "error": f"no state store at sqlite:///{missing}"}
    assert not missing.exists()  # reading never creates the store
    assert performance["figures"]["rolling_sharpe"] == {
        "value": None, "unit": "ratio", "metric": "marlops_gateway_rolling_sharpe",
        "why": "needs 2 bar returns (3 settled bars) that are not all equal"}
    assert unauthenticated.status_code == 401


def test_read_alertmanager_when_url_is_not_alertmanager_then_error_names_the_answer(
    paper_exchange: ServerHandle
) -> None:
    # A real HTTP server that is no Alertmanager (the paper exchange wants its keys on every path).
    answer = run_async(read_alertmanager(paper_exchange.url, 2.0))
    assert answer["configured"] is True and "alerts" not in answer
    assert answer["error"].startswith(f"Alertmanager at {paper_exchange.url} answered HTTP 401: ")
    assert "not authorized" in answer["error"]


def test_read_alertmanager_when_url_has_password_then_masked_in_the_answer() -> None:
    answer = run_async(read_alertmanager(f"http://ops:s3cret@127.0.0.1:{free_port()}", 0.5))
    assert "s3cret" not in str(answer) and answer["source"].startswith("http://ops:***@127.0.0.1:")


def test_performance_figures_when_gauges_nan_inf_or_unset_then_json_safe_with_reasons() -> None:
    metrics = GatewayMetrics()
    settings = GatewaySettings(risk=RiskOverlaysConfig(), broker_base_url="http://127.0.0.1:1")
    before = performance_figures(metrics, settings)["figures"]
    assert before["drawdown_from_peak"] == {"value": None, "unit": "fraction",
                                            "metric": "marlops_gateway_drawdown_from_peak_ratio",
                                            "why": "no timestep since the gateway started"}
    metrics.timesteps.inc()
    metrics.profit_factor.set(math.inf)
    metrics.cost_to_gross_profit.set(-math.inf)
    metrics.rolling_sharpe.set(1.25)
    metrics.set_drawdowns(from_peak=0.0, intraday=0.0)
    after = performance_figures(metrics, settings)["figures"]
    assert after["profit_factor"]["value"] == "+Inf" and after["profit_factor"]["why"].startswith("profit and no")
    assert after["cost_to_gross_profit"]["value"] == "-Inf"
    assert after["rolling_sharpe"]["value"] == 1.25 and after["rolling_sharpe"]["why"] is None
    assert after["drawdown_from_peak"]["value"] == 0.0  # a real 0 once a timestep has set it
    assert after["win_rate"]["value"] is None and after["win_rate"]["why"] == "no bar has moved equity yet"


def test_routing_rows_when_no_default_row_or_slot_unset_then_implicit_production_and_none() -> None:
    policies = {"production": {"model": "symbol_agent", "version": 3, "ref": "symbol_agent/3"}}
    rows = routing_rows(policies, {"MSFT": {"variant": "sl_fallback", "shadow": None},
                                   "AAPL": {"variant": "production", "shadow": "candidate"}})
    assert [(r["symbol"], r["policy"], r["shadow_policy"], r["implicit"]) for r in rows] == [
        ("AAPL", "symbol_agent/3", None, False), ("MSFT", None, None, False), ("*", "symbol_agent/3", None, True)]
