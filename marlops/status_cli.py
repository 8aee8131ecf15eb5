"""`marlops status [--json]`: each service's health, the trading state, bars decided, routing, policy versions served.

Reads `<MARLOPS_HOME>/up.json` (written by `make up`) for the services' URLs, else the configured
ports; the gateway is asked with the local viewer/trader token. Exit 0 when every service answers, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx

from contracts.config import load_rl_config
from contracts.paper_account import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET
from marlops.paths import StatePaths

HEALTH_PATHS = {
    "paper_exchange": "/v2/clock",
    "market_data": "/healthz",
    "triton_http": "/v2/health/ready",
    "gateway": "/healthz",
    "trading_metrics": "",
    "dagster_ui": "/server_info",
    "mlflow_ui": "/health",
    "master_metrics": "",
    "alert_context": "/healthz",
    "playbooks": "/healthz",
    "alertmanager": "/-/ready",
    "prometheus": "/-/ready",
}


def add_status_parser(subparsers: Any) -> argparse.ArgumentParser:
    status = subparsers.add_parser("status", help="health of every service, trading state, bars decided, routing")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--token-file", type=Path, default=None, help="gateway token (default: a local one)")
    status.set_defaults(func=run_status)
    return status


def _probe(url: str) -> dict[str, Any]:
    try:
        # The local paper exchange wants its (local, not secret) key pair even for the clock.
        response = httpx.get(url, timeout=3.0, headers={"APCA-API-KEY-ID": LOCAL_PAPER_KEY_ID,
                                                        "APCA-API-SECRET-KEY": LOCAL_PAPER_SECRET})
        return {"url": url, "healthy": response.status_code < 400, "status_code": response.status_code}
    except httpx.HTTPError as exc:
        return {"url": url, "healthy": False, "error": type(exc).__name__}


def _local_token(paths: StatePaths, explicit: Path | None) -> str | None:
    from gateway.token_file import read_local_token, read_token_file

    return read_token_file(explicit) if explicit else read_local_token(paths.tokens_dir, ("viewer", "trader", "admin"))


def collect_status(paths: StatePaths, config_dir: str, token_file: Path | None = None) -> dict[str, Any]:
    config = load_rl_config(Path(config_dir))
    up_file = paths.root / "up.json"
    up = json.loads(up_file.read_text()) if up_file.is_file() else {}
    triton = config.serving.triton
    urls: dict[str, str] = up.get("urls") or {
        "gateway": "http://127.0.0.1:8080", "paper_exchange": "http://127.0.0.1:5100",
        "triton_http": f"http://127.0.0.1:{triton.http_port}",
    }
    services = {name: _probe(url.removesuffix("/metrics") + ("/metrics" if name == "trading_metrics" else
                                                             HEALTH_PATHS.get(name, "")))
                for name, url in urls.items() if name in HEALTH_PATHS}
    trading_state: Any = None
    token = _local_token(paths, token_file)
    if services.get("gateway", {}).get("healthy"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = httpx.get(urls["gateway"] + "/v1/state", headers=headers, timeout=3.0)
            trading_state = response.json().get("trading_state") if response.status_code == 200 else \
                f"unknown (gateway answered {response.status_code})"
        except httpx.HTTPError as exc:
            trading_state = f"unknown ({type(exc).__name__})"
    from marlops.routing_store import RoutingStore
    from marlops.trading_state import TradingStateStore

    cursors = TradingStateStore(paths.state_url)
    try:
        services_cursors = {c.name: c.as_dict() for c in cursors.all()}
    finally:
        cursors.close()
    routing_store = RoutingStore(paths.state_url)
    try:
        routing = routing_store.read().to_dict()
    finally:
        routing_store.close()
    policy_versions: dict[str, list[int]] = {}
    if services.get("triton_http", {}).get("healthy"):
        try:
            index = httpx.post(urls["triton_http"] + "/v2/repository/index", timeout=5.0).json()
            for entry in index:
                if entry.get("state") == "READY" and entry.get("version"):
                    policy_versions.setdefault(entry["name"], []).append(int(entry["version"]))
        except (httpx.HTTPError, ValueError):
            policy_versions = {}
    return {
        "services": services,
        "trading_state": trading_state,
        "bars_decided": sum(int(c["bars_decided"]) for c in services_cursors.values()),
        "trading_services": services_cursors,
        "routing": routing,
        "policy_versions": {k: sorted(v) for k, v in policy_versions.items()},
        "up": bool(up),
    }


def run_status(args: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    status = collect_status(paths, args.config_dir, args.token_file)
    healthy = all(s["healthy"] for s in status["services"].values())
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True, default=str))
        return 0 if healthy else 1
    print("services:")
    for name, s in status["services"].items():
        print(f"  {name:<16} {'up  ' if s['healthy'] else 'DOWN'}  {s['url']}")
    print(f"trading state:     {status['trading_state']}")
    print(f"bars decided:      {status['bars_decided']}")
    for name, cursor in status["trading_services"].items():
        print(f"  {name}: last bar {cursor['bar_index']} at {cursor['bar_timestamp']}, alerts {cursor['alerts'] or 'none'}")
    routing = status["routing"]
    print(f"routing (revision {routing.get('revision')}):")
    for slot, ref in (routing.get("policies") or {}).items():
        print(f"  {slot:<12} {ref}")
    for symbol, route in sorted((routing.get("routes") or {}).items()):
        print(f"  route {symbol:<8} {route}")
    print(f"served by Triton:  {status['policy_versions'] or 'unknown'}")
    return 0 if healthy else 1
