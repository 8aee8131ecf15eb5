"""The risk committee reads the deployment RFC in the Dagster UI, and an auditor reads the lifecycle's lineage there.

The real `dagster-webserver` serves the real code location `orchestration.definitions` from a private DAGSTER_HOME
holding one materialization of `deployment_rfc`, with the metadata exactly as the asset emits it
(`orchestration.lifecycle_assets.rfc_metadata`). GraphQL gives the lineage, the blocking gate checks and the RFC's
metadata; headless Chromium (Debian's, `scripts/install_chromium.sh`, driven by Playwright as in
tests/gateway/test_gateway_console.py) opens the asset page, opens the RFC and screenshots it with the plot inline.
Set MARLOPS_SCREENSHOT_DIR to keep the screenshot.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dagster import AssetMaterialization, DagsterInstance
from dagster_ui_server import Webserver, dagster_home, running_webserver

from marlops.lifecycle.rfc import (
    PLOT_LOCATION,
    DeploymentRFC,
    build_rfc,
    equity_drawdown_png,
    rfc_digest,
)
from orchestration.lifecycle_assets import rfc_metadata

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000
VIEWPORT = {"width": 1400, "height": 2600}
ASSET = "deployment_rfc"

ROLLBACK_PLAN = [
    ("Canary breach (automatic, canary-health sensor): the canary symbols route back to production at the next bar; "
     "the candidate slot is cleared; audited in the routing table and the lifecycle events."),
    ("After rollout: `marlops rollback --to last-known-good --reason ...` (risk_officer/admin token) or the Dagster "
     "`rollback` job returns every symbol to the previous production symbol_agent v6 (alias last-known-good) "
     "within one bar."),
    ("Model anomaly (NaN/out-of-range outputs, collapsed action distribution, decision errors): the model-anomaly "
     "sensor runs the same rollback by itself."),
    ("Last resort: `marlops rollback --to sl_fallback` routes every symbol to the SL-threshold fallback "
     "(sl_fallback); the gateway kill switch (`/v1/kill`) halts trading regardless of routing."),
]

ASSET_GRAPH_QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"

ASSET_CHECKS_QUERY = """
{ assetNodes { assetKey { path }
    assetChecksOrError { __typename
        ... on AssetChecks { checks { name blocking } }
        ... on AssetCheckNeedsMigrationError { message } } } }
"""

LATEST_MATERIALIZATION_QUERY = """
query LatestMaterialization($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) { __typename
    ... on Asset { assetMaterializations(limit: 1) { timestamp
        metadataEntries { __typename label
            ... on TextMetadataEntry { text }
            ... on MarkdownMetadataEntry { mdStr }
            ... on JsonMetadataEntry { jsonString } } } } } }
"""


def _equity_curve(seed: int, drift: float, n: int = 120) -> list[float]:
    returns = np.random.default_rng(seed).normal(drift, 0.006, n)
    return list(100_000.0 * np.cumprod(1.0 + returns))


def _sha256_like(seed: int) -> str:
    return "".join(f"{b:02x}" for b in np.random.default_rng(seed).integers(0, 256, 32, dtype=np.uint8))


def _signature(seed: int) -> str:
    return base64.b64encode(np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8).tobytes()).decode()


@pytest.fixture(scope="module")
def rfc() -> DeploymentRFC:
    """An RFC shaped like `marlops.lifecycle.deployment_rfc.prepare_rfc`'s: candidate v7 against production v6."""
    held_out = {"sharpe": 1.42, "total_return": 0.083, "max_drawdown": 0.041, "profit_factor": 1.31,
                "win_rate": 0.54, "turnover": 0.21, "cost_ratio": 0.07}
    paper = {"net_return": 0.0121, "max_drawdown": 0.018, "turnover_per_day": 0.19, "cost": 412.5,
             "traded_notional": 1_830_000.0, "denial_rate": 0.0, "error_rate": 0.0, "days_traded": 10.0}
    return build_rfc(
        candidate_run_id="9f1c2ab4e5d64f0c8a7b3e21d0c4f5a6",
        candidate={"symbol_agent": "7", "master_agent": "7", "sl_fallback": "3"},
        production={"symbol_agent": "6", "master_agent": "6", "sl_fallback": "3"},
        metrics={
            "held_out": {"candidate": held_out,
                         "production": {**held_out, "sharpe": 1.18, "total_return": 0.061, "max_drawdown": 0.052},
                         "buy_and_hold": {"sharpe": 0.74, "total_return": 0.049, "max_drawdown": 0.097}},
            "staging": {"candidate": {"decisions": 480.0, "orders_submitted": 212.0, "fill_rate": 1.0,
                                      "decision_latency_p50_ms": 3.8, "decision_latency_p99_ms": 11.2,
                                      "final_equity": 100_940.0, "audit_chain_ok": 1.0}},
            "paper": {"candidate": paper,
                      "production": {**paper, "net_return": 0.0087, "max_drawdown": 0.024, "cost": 455.0}},
        },
        risk={
            "guardrail_headroom": {"paper_max_drawdown": 0.018, "kill_switch_max_drawdown": 0.1,
                                   "drawdown_headroom": 0.082, "paper_denial_rate": 0.0, "paper_error_rate": 0.0},
            "drift": {"status": "ok", "max_psi": 0.07, "drifted_features": []},
            "cost_ratio": {"paper_cost_per_traded_notional": 0.000225, "paper_turnover_per_day": 0.19},
            "concentration": {"herfindahl_of_final_positions": 0.083, "positions": 14},
        },
        rollback_plan=ROLLBACK_PLAN,
        artifacts={agent: {"version": version, "sha256": _sha256_like(i), "manifest_sha256": _sha256_like(10 + i),
                           "signature": _signature(20 + i), "key_id": "marlops-signing-2026",
                           "artifact": f"/srv/marlops/registry/{agent}/{version}/model.onnx"}
                   for i, (agent, version) in enumerate({"symbol_agent": "7", "master_agent": "7",
                                                         "sl_fallback": "3"}.items())},
        equity_plot_png=equity_drawdown_png(
            {"candidate": _equity_curve(1, 0.0012), "production": _equity_curve(2, 0.0008)},
            title="Paper trading 2026-03-02 .. 2026-03-13: candidate vs production"),
        now=datetime(2026, 3, 16, 14, 30, tzinfo=UTC),
    )


@pytest.fixture(scope="module")
def webserver(rfc: DeploymentRFC, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """The real webserver on a DAGSTER_HOME whose instance holds one materialization of `deployment_rfc`."""
    root = tmp_path_factory.mktemp("rfc-ui")
    home = dagster_home(root / "dagster")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(AssetMaterialization(asset_key=ASSET, metadata=rfc_metadata(rfc)))
    with running_webserver(home, marlops_home=root / "marlops", log_path=root / "webserver.log") as server:
        yield server


def _keys(paths: list[dict[str, list[str]]]) -> set[str]:
    return {"/".join(key["path"]) for key in paths}


def test_asset_graph_when_webserver_serves_definitions_then_rfc_lineage_runs_from_paper_trading_to_review(
    webserver: Webserver,
) -> None:
    nodes = webserver.graphql(ASSET_GRAPH_QUERY)["assetNodes"]
    upstream = {"/".join(node["assetKey"]["path"]): _keys(node["dependencyKeys"]) for node in nodes}
    assert {"paper_trading", "validation_report", "staging_replay", "registered_policy"} <= upstream["deployment_rfc"]
    assert upstream["paper_trading"] >= {"staging_replay", "registered_policy"}
    assert upstream["rfc_approval"] == {"deployment_rfc"}
    assert "rfc_approval" in upstream["canary"]
    assert "canary" in upstream["production_rollout"]
    assert "production_rollout" in upstream["post_deployment_review"]


def test_asset_checks_when_webserver_serves_definitions_then_every_lifecycle_gate_is_a_blocking_check(
    webserver: Webserver,
) -> None:
    checks: dict[str, dict[str, bool]] = {}
    for node in webserver.graphql(ASSET_CHECKS_QUERY)["assetNodes"]:
        answer = node["assetChecksOrError"]
        assert answer["__typename"] == "AssetChecks", answer
        checks["/".join(node["assetKey"]["path"])] = {c["name"]: c["blocking"] for c in answer["checks"]}
    assert checks["deployment_rfc"].get("rfc_is_complete") is True
    assert checks["rfc_approval"].get("rfc_is_approved") is True
    assert checks["canary"].get("canary_is_healthy") is True
    assert checks["production_rollout"].get("rollout_had_zero_failed_requests") is True
    assert checks["paper_trading"] and all(checks["paper_trading"].values()), checks["paper_trading"]
    # The review reports; it gates nothing (there is nothing downstream of it to stop).
    assert "review_is_within_expectations" in checks["post_deployment_review"]


def _latest_rfc_metadata(webserver: Webserver) -> dict[str, dict[str, Any]]:
    answer = webserver.graphql(LATEST_MATERIALIZATION_QUERY, {"assetKey": {"path": [ASSET]}})["assetOrError"]
    assert answer["__typename"] == "Asset", answer
    materializations = answer["assetMaterializations"]
    assert len(materializations) == 1, materializations
    return {entry["label"]: entry for entry in materializations[0]["metadataEntries"]}


def test_latest_materialization_when_rfc_reported_then_metadata_carries_id_digest_and_markdown_with_inline_plot(
    webserver: Webserver, rfc: DeploymentRFC,
) -> None:
    metadata = _latest_rfc_metadata(webserver)
    assert metadata["rfc_id"] == {"__typename": "TextMetadataEntry", "label": "rfc_id", "text": rfc.rfc_id}
    assert metadata["rfc_digest"]["text"] == rfc.digest == rfc_digest(rfc)
    assert metadata["status"]["text"] == "pending approval"
    assert metadata["candidate"]["__typename"] == "JsonMetadataEntry"
    markdown = metadata["rfc"]
    assert markdown["__typename"] == "MarkdownMetadataEntry"
    md = markdown["mdStr"]
    assert md.startswith(f"# Deployment {rfc.rfc_id}")
    for step in ROLLBACK_PLAN:
        assert step in md
    for section in ("### held out", "### staging", "### paper", "## Risk assessment", "guardrail_headroom",
                    "concentration", "cost_ratio", "drift", "## Artifacts"):
        assert section in md
    for entry in rfc.artifacts.values():
        assert entry["sha256"] in md and entry["signature"] in md
    assert rfc.digest in md
    # The plot is inline (a data URI of the very PNG the digest covers), not a path the UI cannot open.
    assert "data:image/png;base64," in md
    inline = re.search(r"!\[equity\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert inline is not None
    assert base64.b64decode(inline.group(1)) == rfc.equity_plot_png


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_rfc_asset_page_when_opened_in_chromium_then_rfc_with_inline_plot_renders_and_screenshot_is_saved(
    webserver: Webserver, rfc: DeploymentRFC, tmp_path: Path,
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed: run scripts/install_chromium.sh (as root) to screenshot the "
                    "RFC in the Dagster UI")
    from playwright.sync_api import expect, sync_playwright

    assert PLOT_LOCATION == f"the `{ASSET}` asset page in the Dagster UI"
    screenshot = tmp_path / "deployment_rfc.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{webserver.url}/assets/{ASSET}")
            # The asset page's metadata table: the digest in plain text, the RFC behind "[Show Markdown]".
            digest_row = page.locator("tr", has=page.get_by_text("rfc_digest", exact=True))
            expect(digest_row.first).to_contain_text(rfc.digest, timeout=WAIT_MS)
            rfc_row = page.locator("tr", has=page.get_by_text("rfc", exact=True))
            rfc_row.get_by_text("[Show Markdown]").click(timeout=WAIT_MS)
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_role("heading", name=f"Deployment {rfc.rfc_id}")).to_be_visible(timeout=WAIT_MS)
            expect(dialog.get_by_role("heading", name="Rollback plan")).to_be_visible()
            expect(dialog).to_contain_text(ROLLBACK_PLAN[0].split(":")[0])
            plot = dialog.locator('img[src^="data:image/png;base64,"]')
            expect(plot).to_be_visible(timeout=WAIT_MS)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle(),
                                   timeout=WAIT_MS)
            assert tuple(plot.evaluate("img => [img.naturalWidth, img.naturalHeight]")) == _png_size(
                rfc.equity_plot_png or b"")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000, len(png)
    assert _png_size(png)[0] == VIEWPORT["width"]
    keep = os.environ.get("MARLOPS_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, Path(keep) / "dagster_deployment_rfc.png")
