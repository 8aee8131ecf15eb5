"""The gateway's part of `marlops bench`: each hop measured on its own, side by side in one run.

Real processes: the paper exchange (`python -m paper_exchange`) and the gateway (`python -m gateway`,
SQLite audit, the directive bus on Redis when reachable), so the bench process's own work does not
share their interpreter. Every timestep makes every symbol trade (targets alternate between two long
levels), so a 100-symbol timestep is a 100-order timestep.

  action_to_order_ms     intent durable -> broker acknowledged (the gateway's own exact window, GET /v1/latency)
  order_to_fill_ms       broker acknowledged -> filled
  gateway_accept_ms      timestep received -> decisions accepted, inside the gateway
  accept_roundtrip_ms    POST /v1/decisions round trip seen by the client (HTTP + JSON + accept)
  timestep_settle_ms     timestep received -> every order answered
  directive_propagation_ms  master publishes on Redis -> the gateway's DirectiveBook holds it
  throughput             decisions/s accepted with durable audit (timesteps posted back to back), and
                         decisions/s when every timestep also waits for its orders to settle
  inprocess              the same accept path without HTTP (GatewayService over the in-process paper
                         book), with a cProfile of it: where the gateway's time goes
"""

import cProfile
import logging
import pstats
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from contracts.config import RiskOverlaysConfig
from contracts.decisions import MasterDirective, SymbolDecision, TimestepDecisions
from gateway.audit.store import AuditStore
from gateway.serve import free_port
from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from marlops.bench_procs import process_rss
from marlops.chaos import write_risk_config
from marlops.chaos_procs import BROKER_HEADERS, exchange_process, gateway_process
from marlops.pipeline import percentiles
from paper_exchange.inprocess import InProcessBroker

logger = logging.getLogger(__name__)

T0 = datetime(2024, 6, 3, 13, 30, tzinfo=timezone.utc)
LEVELS = (0.5, 0.2)  # both long (the shipped rules may forbid shorts): each bar every symbol trades
PRICE = 100.0
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def symbols_of(n: int) -> list[str]:
    return [f"S{i:04d}" for i in range(n)]


def timestep(symbols: list[str], bar_index: int) -> TimestepDecisions:
    level = LEVELS[bar_index % 2]
    return TimestepDecisions(
        timestep=T0 + timedelta(minutes=bar_index), bar_index=bar_index, policy_version="bench",
        decisions=tuple(SymbolDecision(symbol=s, action=0, target_level=level, price=PRICE) for s in symbols))


def live_directive(directive_id: str) -> MasterDirective:
    return MasterDirective(directive_id=directive_id, issued_at=T0, ttl_seconds=30 * 86400, mode="normal",
                           max_position_size=0.10, risk_scale=1.0, defensive=False, policy_version="bench")


def _redis_reachable(url: str) -> str | None:
    """None when Redis answers PING at `url`, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0)
        client.ping()
        client.close()
        return None
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"


@contextmanager
def gateway_stack(run_dir: Path, risk: RiskOverlaysConfig, *, redis_url: str | None) -> Iterator[tuple[str, str]]:
    """The paper exchange and the gateway as processes, with a fresh audit trail in a new folder under `run_dir`
    (a second bench run must not meet the first one's decided bars); yields (gateway_url, exchange_url)."""
    run_dir = run_dir / datetime.now(timezone.utc).strftime("run-%Y%m%dT%H%M%S%f")
    run_dir.mkdir(parents=True, exist_ok=True)
    risk_config = write_risk_config(run_dir / "risk_overlays.yaml", risk)
    exchange = exchange_process(free_port(), run_dir / "exchange.log", seed=0, initial_cash=1_000_000_000.0)
    extra = ["--directive-bus", redis_url] if redis_url else []
    gateway = gateway_process(free_port(), run_dir / "gateway.log", broker_url=exchange.url,
                              audit_url=f"sqlite:///{run_dir / 'audit.db'}", audit_table="gateway_audit",
                              risk_config=risk_config, extra_args=extra)
    try:
        exchange.start()
        gateway.start()
        yield gateway.url, exchange.url
    finally:
        gateway.stop()
        exchange.stop()


def _post(http: httpx.Client, batch: TimestepDecisions, wait: str = "accepted") -> dict[str, Any]:
    response = http.post("/v1/decisions", params={"wait": wait}, content=batch.model_dump_json(),
                         headers={"content-type": "application/json"})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _ms(summary: dict[str, Any]) -> dict[str, float]:
    return {k: summary[k] for k in ("p50", "p99") if summary.get(k) is not None} | {"n": summary.get("count", 0)}


def measure_orders(http: httpx.Client, exchange: httpx.Client, symbols: list[str], steps: int,
                   first_bar: int) -> dict[str, Any]:
    """Timesteps of len(symbols) orders each, one at a time (each settles before the next)."""
    exchange.post("/_sim/prices", json={"prices": {s: PRICE for s in symbols}}).raise_for_status()
    roundtrip: list[float] = []
    orders = 0
    for bar in range(first_bar, first_bar + steps):
        t = time.perf_counter()
        body = _post(http, timestep(symbols, bar))
        roundtrip.append((time.perf_counter() - t) * 1000)
        settled = http.get(f"/v1/timesteps/{body['timestep_id']}", params={"wait_s": 60}).json()
        orders += sum(1 for o in settled["orders"] if o["status"] == "filled")
    return {"roundtrip_ms": np.array(roundtrip), "orders_filled": orders}


def measure_throughput(http: httpx.Client, symbols: list[str], steps: int, first_bar: int,
                       *, settle: bool) -> dict[str, Any]:
    t = time.perf_counter()
    for bar in range(first_bar, first_bar + steps):
        _post(http, timestep(symbols, bar), wait="settled" if settle else "accepted")
    wall = time.perf_counter() - t
    return {"timesteps": steps, "symbols": len(symbols), "wall_s": wall,
            "decisions_per_s": round(steps * len(symbols) / wall, 1)}


def _wait_idle(http: httpx.Client, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = http.get("/v1/status").json()
        if status["orders_routing"] == 0 and status["inflight_orders"] == 0:
            return
        time.sleep(0.05)
    raise TimeoutError(f"gateway still routing after {timeout_s:.0f} s")


def measure_directives(http: httpx.Client, redis_url: str, count: int) -> dict[str, Any]:
    from serving.directive_bus import RedisDirectiveBus

    bus = RedisDirectiveBus(redis_url)
    try:
        before = http.get("/v1/latency").json()["directive"]["count"]
        for i in range(count):
            bus.publish(live_directive(f"bench-bus-{i}"))
            time.sleep(0.01)  # one directive at a time (the master issues one per interval)
        deadline = time.monotonic() + 10
        while http.get("/v1/latency").json()["directive"]["count"] < before + count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        bus.close()
    return http.get("/v1/latency").json()["directive"]


def inprocess_accept(symbols: int, steps: int, base_risk: RiskOverlaysConfig, *, profile: bool) -> dict[str, Any]:
    """GatewayService over the in-process paper book (no HTTP): accept latency, and a cProfile of it."""
    names = symbols_of(symbols)
    with tempfile.TemporaryDirectory(prefix="marlops-bench-gw-") as tmp:
        risk = RiskOverlaysConfig.model_validate(
            yaml.safe_load(write_risk_config(Path(tmp) / "risk.yaml", base_risk).read_text()))
        store = AuditStore(f"sqlite:///{tmp}/audit.db")
        broker = InProcessBroker(initial_cash=1_000_000_000.0)
        broker.set_prices({s: PRICE for s in names})
        service = GatewayService(GatewaySettings(risk=risk, broker_base_url="inprocess://", reconcile_interval_s=0),
                                 broker=broker, audit=store)
        try:
            service.start()
            service.receive_directive(live_directive("bench-inprocess"))
            profiler = cProfile.Profile() if profile else None
            accept: list[float] = []
            for bar in range(steps):
                batch = timestep(names, bar)
                if profiler is not None:
                    profiler.enable()
                t = time.perf_counter()
                _outcome, ticket = service.timesteps.accept(batch)
                accept.append((time.perf_counter() - t) * 1000)
                if profiler is not None:
                    profiler.disable()
                ticket.wait(60)
            routed = service.latency_summary()
        finally:
            service.stop()
            store.close()
    out: dict[str, Any] = {"symbols": symbols, "accept_ms": percentiles(np.array(accept)),
                           "action_to_order_ms": _ms(routed["action_to_order"]),
                           "timestep_settle_ms": _ms(routed["timestep_settle"])}
    if profiler is not None:
        stats = pstats.Stats(profiler)
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)  # type: ignore[attr-defined]
        out["profile_top_cumulative"] = [
            {"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "cum_ms_per_timestep": round(v[3] * 1000 / steps, 3)}
            for k, v in rows[:18]]
    return out


def gateway_benchmarks(run_dir: Path, risk: RiskOverlaysConfig, *, symbols: int = 100, steps: int = 30, throughput_steps: int = 30,
                       directives: int = 50, inprocess_scales: tuple[int, ...] = (100, 1000),
                       redis_url: str = DEFAULT_REDIS_URL) -> dict[str, Any]:
    """Everything above, in one run, under `risk` with its throttles and kill-switch triggers opened wide (the
    bench measures the hops, not the guards); latencies as {p50, p99, n} in milliseconds."""
    names = symbols_of(symbols)
    why_no_redis = _redis_reachable(redis_url)
    if why_no_redis is not None:
        logger.warning("bench: Redis at %s unreachable (%s): directive propagation not measured", redis_url,
                       why_no_redis)
    report: dict[str, Any] = {}
    with gateway_stack(run_dir, risk, redis_url=None if why_no_redis else redis_url) as (gateway_url, exchange_url), \
            httpx.Client(base_url=gateway_url, timeout=120.0) as http, \
            httpx.Client(base_url=exchange_url, headers=BROKER_HEADERS, timeout=30.0) as exchange:
        assert http.post("/v1/directives", json=live_directive("bench-http").model_dump(mode="json")).status_code == 202
        logger.info("bench: %d timesteps of %d orders through the gateway process", steps, symbols)
        measure_orders(http, exchange, names, 3, first_bar=0)  # warm-up: connections, first-order paths
        warm = http.get("/v1/latency").json()
        orders = measure_orders(http, exchange, names, steps, first_bar=3)
        rss = process_rss("bench_process")
        total = http.get("/v1/latency").json()
        bar = 3 + steps

        def since_warmup(kind: str) -> dict[str, Any]:
            # The gateway's window holds the warm-up's samples too: read only the newest ones, the bench's own.
            n = total[kind]["count"] - warm[kind]["count"]
            return _ms(http.get("/v1/latency", params={"last": max(n, 1)}).json()[kind])

        report["action_to_order_ms"] = {**since_warmup("action_to_order"), "orders_per_timestep": symbols,
                                        "definition": "intent durable -> broker acknowledged (gateway window)"}
        report["order_to_fill_ms"] = since_warmup("order_to_fill")
        report["gateway_accept_ms"] = since_warmup("decision")
        report["timestep_settle_ms"] = since_warmup("timestep_settle")
        report["accept_roundtrip_ms"] = percentiles(orders["roundtrip_ms"])
        report["orders_filled"] = orders["orders_filled"]
        report["gateway_rss_mb"] = {k: round(v, 1) for k, v in rss.items() if k in ("gateway", "paper_exchange")}
        logger.info("bench: gateway throughput, %d timesteps back to back", throughput_steps)
        accepted = measure_throughput(http, names, throughput_steps, bar, settle=False)
        bar += throughput_steps
        _wait_idle(http)  # the accepted run's last orders finish routing before the settled run starts
        settled = measure_throughput(http, names, throughput_steps, bar, settle=True)
        report["gateway_throughput"] = {"accepted": accepted, "settled": settled,
                                        "definition": "decisions/s with every timestep durably audited "
                                                      "(accepted: answer at acceptance; settled: answer once "
                                                      "its orders are filled)"}
        if why_no_redis is None:
            logger.info("bench: directive propagation over Redis (%d directives)", directives)
            d = measure_directives(http, redis_url, directives)
            report["directive_propagation_ms"] = {**_ms(d), "transport": "redis pub/sub",
                                                  "definition": "master published -> gateway DirectiveBook holds it"}
        else:
            report["directive_propagation_ms"] = {"skipped": f"Redis unreachable at {redis_url}: {why_no_redis}"}
    report["inprocess"] = [inprocess_accept(n, min(steps, 20), risk, profile=True) for n in inprocess_scales]
    return report
