"""The operator console in headless Chromium, against a real gateway (uvicorn) and the real paper exchange.

Chromium is Debian's (`scripts/install_chromium.sh`); Playwright drives it (no downloaded browser).
"""

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_builders import batch, directive
from playwright.sync_api import Browser, Page, expect, sync_playwright

from contracts.config import MarketHoursRule, RiskOverlaysConfig
from gateway.app import create_app
from gateway.directives import InProcessDirectiveSource
from gateway.serve import ServerHandle, serve_app_in_thread
from gateway.settings import ApiToken, GatewaySettings, Role
from gateway.tokens import hash_token

CHROMIUM = Path("/usr/bin/chromium")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 15_000  # the page polls every 2 s; this is how long an expectation keeps polling

TOKENS: dict[str, tuple[str, Role]] = {
    "rita": ("mgw_test-risk-officer-token", "risk_officer"),
    "vic": ("mgw_test-viewer-token", "viewer"),
    "tess": ("mgw_test-trader-token", "trader"),
}
SECTORS = {"AAPL": "technology", "MSFT": "technology", "XOM": "energy"}
PRICES = {"AAPL": 100.0, "MSFT": 200.0, "XOM": 50.0}

def auth(principal: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[principal][0]}"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed: run scripts/install_chromium.sh (as root) to run the "
                    "console browser tests")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def gateway(tmp_path: Path, paper_exchange: ServerHandle, exchange_http: httpx.Client) -> Iterator[ServerHandle]:
    """A gateway with tokens for a risk officer, a viewer and a trader, holding positions in three
    symbols of two sectors after one timestep of decisions."""
    exchange_http.post("/_sim/prices", json={"prices": PRICES}).raise_for_status()
    settings = GatewaySettings(
        # The market-hours rule is not what these tests are about: the decisions' bar is after the close.
        risk=RiskOverlaysConfig(market_hours=MarketHoursRule(source="off")),
        audit_url=f"sqlite:///{tmp_path / 'gateway' / 'audit.db'}",
        broker_base_url=paper_exchange.url,
        fill_wait_s=0.2,
        api_tokens=tuple(ApiToken(principal=name, role=role, token_sha256=hash_token(token))
                         for name, (token, role) in TOKENS.items()),
        sectors=SECTORS,
    )
    bus = InProcessDirectiveSource()
    handle = serve_app_in_thread(create_app(settings, directive_source=bus))
    bus.publish(directive("normal"))
    decisions = batch({"AAPL": (1.0, 100.0), "MSFT": (-0.5, 200.0), "XOM": (0.5, 50.0)})
    response = httpx.post(handle.url + "/v1/decisions", params={"wait": "settled"}, content=decisions.model_dump_json(),
                          headers={"content-type": "application/json", **auth("tess")}, timeout=30.0)
    assert response.status_code == 200, response.text
    assert {o["symbol"]: o["status"] for o in response.json()["orders"]} == {
        "AAPL": "filled", "MSFT": "filled", "XOM": "filled"}
    yield handle
    if handle.running:
        handle.stop()


def gateway_get(handle: ServerHandle, path: str, **params: Any) -> Any:
    response = httpx.get(handle.url + path, params=params, headers=auth("rita"), timeout=10.0)
    response.raise_for_status()
    return response.json()


def trading_state_changes(handle: ServerHandle) -> list[dict[str, Any]]:
    events = gateway_get(handle, "/v1/audit", kind="state_change", limit=50)["events"]
    return [e for e in events if e["payload"].get("event") == "trading_state"]


def connect(page: Page, handle: ServerHandle, *, token: str, principal: str) -> None:
    page.goto(handle.url + "/console")
    page.get_by_test_id("token").fill(token)
    page.get_by_test_id("principal").fill(principal)
    page.get_by_test_id("connect").click()


def press(page: Page, action: str, reason: str) -> None:
    """Press a control, check that it cannot be confirmed without a reason, give one and confirm."""
    expect(page.get_by_test_id(action)).to_be_enabled(timeout=WAIT_MS)
    page.get_by_test_id(action).click()
    expect(page.get_by_test_id("confirm-panel")).to_be_visible()
    expect(page.get_by_test_id("confirm-submit")).to_be_disabled()
    page.get_by_test_id("confirm-reason").fill(reason)
    page.get_by_test_id("confirm-submit").click()
    expect(page.get_by_test_id("confirm-panel")).to_be_hidden()


def whoami_served(handle: ServerHandle, principal: str) -> bool:
    return httpx.get(handle.url + "/v1/whoami", headers=auth(principal), timeout=10.0).status_code == 200


def test_console_when_risk_officer_connects_then_state_positions_sectors_and_orders_shown(
    gateway: ServerHandle, page: Page, tmp_path: Path
) -> None:
    requested: list[str] = []
    page_errors: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    # An optional endpoint this gateway lacks (GET /v1/whoami) is a 404 the page expects; the
    # browser logs it as "Failed to load resource", which is not a page error.
    page.on("console", lambda message: page_errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    connect(page, gateway, token=TOKENS["rita"][0], principal="rita")
    expect(page.get_by_test_id("state-badge")).to_have_text("ACTIVE", timeout=WAIT_MS)
    expect(page.get_by_test_id("status-line")).to_have_text("connected")
    positions = page.get_by_test_id("positions")
    for symbol in ("AAPL", "MSFT", "XOM"):
        expect(positions.locator(f'tr[data-key="{symbol}"]')).to_be_visible()
    expect(positions.locator('tr[data-key="AAPL"]')).to_contain_text("1,000")
    expect(positions.locator('tr[data-key="AAPL"]')).to_contain_text("10.00%")
    expect(positions.locator('tr[data-key="MSFT"]')).to_contain_text("-250")
    sectors = page.get_by_test_id("sectors")
    # technology: AAPL long 10% and MSFT short 5% of equity; energy: XOM long 5%.
    expect(sectors.locator('tr[data-key="technology"]')).to_contain_text("15.00%")
    expect(sectors.locator('tr[data-key="energy"]')).to_contain_text("5.00%")
    orders = page.get_by_test_id("orders")
    for symbol in ("AAPL", "MSFT", "XOM"):
        expect(orders.locator("tr", has_text=symbol).filter(has_text="filled").first).to_be_visible()
    expect(page.get_by_test_id("decisions").locator("tr", has_text="AAPL").first).to_be_visible()
    equity = gateway_get(gateway, "/v1/portfolio")["equity"]
    expect(page.get_by_test_id("equity")).to_have_text(f"{equity:,.2f}")
    expect(page.get_by_test_id("gross-exposure")).to_contain_text("20.00%")  # 100k + 50k + 50k of 1M
    # Every panel got its data from the gateway's own endpoint (no fallback, no "n/a").
    for table in ("positions", "sectors", "alerts", "orders", "decisions"):
        expect(page.get_by_test_id(table)).to_have_attribute("data-source", "api")
    for endpoint in ("/v1/status", "/v1/exposure", "/v1/alerts", "/v1/orders", "/v1/decisions"):
        expect(page.get_by_test_id("missing-endpoints")).not_to_contain_text(endpoint)
    # The token lives in sessionStorage, never in a URL: a reload reconnects by itself, and
    # "Forget token" drops it.
    assert TOKENS["rita"][0] not in page.url
    assert page.evaluate("sessionStorage.getItem('marlops.console.token')") == TOKENS["rita"][0]
    page.reload()
    expect(page.get_by_test_id("status-line")).to_have_text("connected", timeout=WAIT_MS)
    expect(positions.locator('tr[data-key="XOM"]')).to_be_visible()
    assert TOKENS["rita"][0] not in page.url

    shot = tmp_path / "console.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    shutil.copyfile(shot, "/tmp/console.png")

    # Everything came from this gateway (no CDN, no font, no outside call), and no script error or
    # Content-Security-Policy violation was reported.
    assert requested and all(url.startswith(gateway.url + "/") for url in requested), requested
    assert page_errors == []

    page.get_by_test_id("forget").click()
    assert page.evaluate("sessionStorage.getItem('marlops.console.token')") is None
    expect(page.get_by_test_id("kill-switch")).to_be_disabled()


def test_kill_switch_when_risk_officer_confirms_then_halted_audited_and_resume_makes_active(
    gateway: ServerHandle, page: Page
) -> None:
    connect(page, gateway, token=TOKENS["rita"][0], principal="rita")
    expect(page.get_by_test_id("state-badge")).to_have_text("ACTIVE", timeout=WAIT_MS)

    press(page, "kill-switch", "console drill: halt")
    expect(page.get_by_test_id("state-badge")).to_have_text("HALTED", timeout=WAIT_MS)
    expect(page.get_by_test_id("action-status")).to_contain_text("Kill switch done by rita")
    assert gateway_get(gateway, "/v1/state")["trading_state"] == "HALTED"
    halt = trading_state_changes(gateway)[0]
    assert halt["principal"] == "rita"
    assert halt["payload"]["current"] == "HALTED" and halt["payload"]["reason"] == "console drill: halt"

    press(page, "resume", "console drill: over")
    expect(page.get_by_test_id("state-badge")).to_have_text("ACTIVE", timeout=WAIT_MS)
    assert gateway_get(gateway, "/v1/state")["trading_state"] == "ACTIVE"
    resumed = trading_state_changes(gateway)[0]
    assert resumed["principal"] == "rita" and resumed["payload"]["current"] == "ACTIVE"
    assert resumed["payload"]["reason"] == "console drill: over"


def test_flatten_when_risk_officer_confirms_then_halted_and_safe_mode_shown(
    gateway: ServerHandle, page: Page
) -> None:
    connect(page, gateway, token=TOKENS["rita"][0], principal="rita")
    expect(page.get_by_test_id("state-badge")).to_have_text("ACTIVE", timeout=WAIT_MS)
    expect(page.get_by_test_id("safe-mode")).to_be_hidden()

    press(page, "flatten", "console drill: flatten the book")
    expect(page.get_by_test_id("state-badge")).to_have_text("HALTED", timeout=WAIT_MS)
    expect(page.get_by_test_id("safe-mode")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_test_id("safe-mode")).to_have_attribute("data-active", "true")
    # Three positions to close, none closed yet (no decision interval has passed since).
    expect(page.get_by_test_id("safe-mode-detail")).to_contain_text("0 of 3 positions closed")
    expect(page.get_by_test_id("safe-mode-detail")).to_contain_text("by rita: console drill: flatten the book")
    status = gateway_get(gateway, "/v1/status")
    assert status["trading_state"] == "HALTED" and status["safe_mode"]
    halt = trading_state_changes(gateway)[0]
    assert halt["principal"] == "rita" and halt["payload"]["reason"] == "console drill: flatten the book"


def test_kill_switch_when_viewer_presses_then_refused_with_403_reason_and_still_active(
    gateway: ServerHandle, page: Page
) -> None:
    connect(page, gateway, token=TOKENS["vic"][0], principal="vic")
    expect(page.get_by_test_id("state-badge")).to_have_text("ACTIVE", timeout=WAIT_MS)
    kill = page.get_by_test_id("kill-switch")
    if whoami_served(gateway, "vic"):
        # The page knows the role, so it does not even offer the control.
        expect(page.get_by_test_id("identity")).to_contain_text("role viewer", timeout=WAIT_MS)
        expect(kill).to_be_disabled()
        expect(kill).to_have_attribute("title", re.compile("role viewer may not use Kill switch"))
    else:
        press(page, "kill-switch", "a viewer tries")
        # The reason is the API's own 403 text, shown as it came.
        expect(page.get_by_test_id("action-status")).to_contain_text(
            "Kill switch refused: role 'viewer' of 'vic' may not call POST /v1/kill-switch", timeout=WAIT_MS)
    assert gateway_get(gateway, "/v1/state")["trading_state"] == "ACTIVE"
    assert trading_state_changes(gateway) == []
    expect(page.get_by_test_id("state-badge")).to_have_text("ACTIVE")


def test_kill_switch_when_principal_is_not_the_tokens_then_403_reason_shown_and_still_active(
    gateway: ServerHandle, page: Page
) -> None:
    connect(page, gateway, token=TOKENS["rita"][0], principal="mallory")
    press(page, "kill-switch", "pretending to be someone else")
    expect(page.get_by_test_id("action-status")).to_have_text(
        "Kill switch refused: principal 'mallory' in the body does not match the token's principal 'rita'",
        timeout=WAIT_MS)
    assert gateway_get(gateway, "/v1/state")["trading_state"] == "ACTIVE"
    assert trading_state_changes(gateway) == []


def test_console_when_token_bad_then_token_rejected_shown_and_controls_disabled(
    gateway: ServerHandle, page: Page
) -> None:
    # The principal is typed by the operator: markup in it must be shown as text, never parsed.
    connect(page, gateway, token="mgw_not-a-token", principal='<img id="injected" src="x">')
    expect(page.get_by_test_id("status-line")).to_contain_text("token rejected", timeout=WAIT_MS)
    expect(page.get_by_test_id("status-line")).to_contain_text("unknown bearer token")
    expect(page.get_by_test_id("state-badge")).to_have_text("n/a")
    for action in ("kill-switch", "resume", "flatten"):
        expect(page.get_by_test_id(action)).to_be_disabled()
    expect(page.get_by_test_id("identity")).to_contain_text('<img id="injected" src="x">')
    assert page.locator("#injected").count() == 0


def test_console_when_page_requested_without_token_then_served_with_strict_policy(gateway: ServerHandle) -> None:
    page = httpx.get(gateway.url + "/console", timeout=10.0)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'src="/console/console.js"' in page.text
    script = httpx.get(gateway.url + "/console/console.js", timeout=10.0)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert re.search(r"(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|eval\(", script.text) is None
    assert httpx.get(gateway.url + "/console/console.css", timeout=10.0).status_code == 200
    # Nothing in the page comes from outside the gateway: no absolute URL, no CSS import or url().
    for asset in ("/console", "/console/console.js", "/console/console.css"):
        text = httpx.get(gateway.url + asset, timeout=10.0).text
        assert re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text) is None, asset
    assert "@import" not in script.text and "url(" not in httpx.get(gateway.url + "/console/console.css").text


@pytest.mark.parametrize("raw_path", [
    "/console/nope.js",
    "/console/..%2Fapi%2Fconsole.py",
    "/console/%2e%2e%2fapi%2fconsole.py",
    "/console/..",
    "/console/.%2e",
    "/console/../api/console.py",
    "/console/%2e%2e/%2e%2e/settings.py",
    "/console/console.js%00.html",
])
def test_console_asset_when_unknown_or_traversal_then_404(gateway: ServerHandle, raw_path: str) -> None:
    with httpx.Client(timeout=10.0) as client:
        request = client.build_request("GET", gateway.url)
        request.url = request.url.copy_with(raw_path=raw_path.encode())
        response = client.send(request)
    assert response.status_code == 404, (raw_path, response.status_code, response.text[:200])
    assert "APIRouter" not in response.text and "BaseModel" not in response.text
