"""`marlops chaos`: the crash test of the execution gateway (issue 4, proof 8a/8b).

    python -m marlops.chaos --backend both --orders 2000 --kills 20 --seed 0 --out .marlops/chaos

The paper exchange (the broker) runs in its own process for the whole run; the gateway runs in its
own process and is killed with SIGKILL at random moments, at least `min_kills` times, during a
replay of at least `min_orders` orders, and restarted each time. Afterwards the audit trail is read
straight from the store and every order straight from the exchange, and `check_run` says whether
every intent is at the broker exactly once or audited as not sent, with no duplicates and no
orders the trail does not announce; the hash chain must verify and the gateway's reconciled book
must equal the broker's positions. `<out>/report.json` holds the verdict.
"""

import argparse
import json
import logging
import math
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import sqlalchemy as sa
import yaml

from contracts.config import RiskOverlaysConfig, load_risk
from gateway.audit.store import AuditStore
from gateway.errors import GatewayError
from gateway.serve import free_port
from marlops.chaos_check import check_run, positions_differ, split_order_rows
from marlops.chaos_driver import ChaosReplay, ReplayPlan, SyntheticMarket
from marlops.chaos_procs import (
    BROKER_HEADERS,
    ChaosError,
    ManagedProcess,
    exchange_process,
    gateway_process,
)
from marlops.errors import MarlopsError

logger = logging.getLogger(__name__)

Backend = Literal["sqlite", "postgresql"]
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_OUT = Path(".marlops/chaos")
REPORT_KEYS = ("kills", "intents", "at_broker_once", "duplicates", "lost", "audit_chain_ok", "not_sent",
               "orders_at_broker", "orphans", "positions_match", "restarts", "elapsed_s", "backend", "passed")
_AUDIT_PAGE = 1000
_BROKER_PAGE = 500


@dataclass(frozen=True)
class ChaosConfig:
    backend: Backend = "sqlite"
    pg_url: str = DEFAULT_PG_URL
    n_symbols: int = 20
    n_bars: int | None = None  # None: enough bars for min_orders (most symbols trade every bar)
    min_orders: int = 2000
    min_kills: int = 20
    seed: int = 0
    out_dir: Path = DEFAULT_OUT
    audit_table: str | None = None  # None: a fresh name per run
    request_timeout_s: float = 60.0
    initial_cash: float = 1_000_000.0
    keep_audit: bool = False  # PostgreSQL: keep the run's audit table (dropped by default)

    def __post_init__(self) -> None:
        if self.backend not in ("sqlite", "postgresql"):
            raise ChaosError(f"backend must be sqlite or postgresql, got {self.backend!r}")
        if self.n_symbols < 1 or self.min_orders < 1 or self.min_kills < 0:
            raise ChaosError("n_symbols and min_orders must be >= 1 and min_kills >= 0")

    @property
    def bars(self) -> int:
        if self.n_bars is not None:
            return self.n_bars
        # ~80% of symbols trade each bar (a few targets round to no order); a margin on top.
        return max(self.min_kills + 3, math.ceil(self.min_orders / (0.8 * self.n_symbols)) + 2)

    @property
    def run_dir(self) -> Path:
        return self.out_dir / self.backend


@dataclass(frozen=True)
class ChaosReport:
    backend: str
    passed: bool
    kills: int = 0
    intents: int = 0
    at_broker_once: int = 0
    not_sent: int = 0
    lost: int = 0
    duplicates: int = 0
    orphans: int = 0
    orders_at_broker: int = 0
    audit_chain_ok: bool = False
    positions_match: bool = False
    restarts: int = 0
    elapsed_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in REPORT_KEYS}
        out["elapsed_s"] = round(self.elapsed_s, 2)
        out.update(self.details)
        if self.error is not None:
            out["error"] = self.error
        return out


# ---- setup -----------------------------------------------------------------------------------

def write_risk_config(path: Path, base: RiskOverlaysConfig | None = None) -> Path:
    """The shipped guardrails (or `base`), with the runaway guards and kill-switch triggers opened wide: the
    crash test must see orders flow, not the kill switch engage (that has its own tests)."""
    risk = (base or load_risk()).model_dump(mode="json")
    risk["order_rate"] = {**risk["order_rate"], "max_orders": 100_000}
    risk["market_hours"] = {**risk["market_hours"], "source": "off"}
    ks = risk["kill_switch"]
    ks["max_drawdown"] = 0.99
    ks["intraday_drawdown"] = 0.99
    ks["latency"] = {**ks["latency"], "threshold_ms": 3_600_000.0, "consecutive_intervals": 1_000_000}
    ks["compliance"] = {**ks["compliance"], "position_cap_tolerance": 1000.0, "gross_leverage_tolerance": 1000.0}
    ks["dependencies"] = {**ks["dependencies"], "broker_failures": 1_000_000}
    RiskOverlaysConfig.model_validate(risk)  # fail here, not in the gateway's startup log
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by marlops chaos: shipped guardrails, kill-switch triggers opened wide\n"
                    + yaml.safe_dump(risk, sort_keys=False))
    return path


@dataclass(frozen=True)
class AuditTarget:
    """Where the gateway writes its trail and the checker reads it."""

    url: str
    table: str

    def describe(self) -> str:
        return f"{sa.engine.make_url(self.url).render_as_string()} table {self.table}"


def _audit_target(config: ChaosConfig, run_id: str) -> AuditTarget:
    table = config.audit_table or f"chaos_audit_{run_id}"
    if config.backend == "sqlite":
        db = config.run_dir / "audit.db"
        for stale in (db, db.with_name("audit.db-wal"), db.with_name("audit.db-shm")):
            stale.unlink(missing_ok=True)
        return AuditTarget(f"sqlite:///{db.resolve()}", table)
    _check_postgres(config.pg_url)
    return AuditTarget(config.pg_url, table)


def _check_postgres(url: str) -> None:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.SQLAlchemyError as exc:
        raise ChaosError(f"PostgreSQL at {sa.engine.make_url(url).render_as_string()} is not reachable: "
                         f"{str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()


# ---- reading the outcome ---------------------------------------------------------------------

def read_order_rows(store: AuditStore) -> list[dict[str, Any]]:
    """Every "order" payload of the trail, oldest first."""
    rows: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        page = store.list(kind="order", limit=_AUDIT_PAGE, before_seq=before)
        rows.extend(page)
        if len(page) < _AUDIT_PAGE:
            break
        before = page[-1]["seq"]
    rows.sort(key=lambda r: r["seq"])
    return [r["payload"] for r in rows]


def read_broker_orders(exchange: httpx.Client) -> list[dict[str, Any]]:
    """Every order the exchange holds: GET /_sim/orders, or on an exchange without it, Alpaca's
    GET /v2/orders paged."""
    response = exchange.get("/_sim/orders")
    if response.status_code == 404:
        return page_broker_orders(exchange)
    response.raise_for_status()
    body = response.json()
    orders = body.get("orders") if isinstance(body, dict) else body
    if not isinstance(orders, list):
        raise ChaosError(f"GET /_sim/orders answered an unexpected shape: {str(body)[:300]}")
    return orders


def page_broker_orders(exchange: httpx.Client, *, page_size: int = _BROKER_PAGE) -> list[dict[str, Any]]:
    """Every order through GET /v2/orders?status=all&direction=asc, paged by creation time. `after`
    is strict, so each page starts one microsecond before the last one's newest order (orders
    sharing that instant are read again) and orders are de-duplicated by id."""
    by_id: dict[str, dict[str, Any]] = {}
    after: str | None = None
    while True:
        params: dict[str, Any] = {"status": "all", "limit": page_size, "direction": "asc"}
        if after is not None:
            params["after"] = after
        response = exchange.get("/v2/orders", params=params)
        response.raise_for_status()
        page: list[dict[str, Any]] = response.json()
        new = [o for o in page if o["id"] not in by_id]
        by_id.update((o["id"], o) for o in page)
        if len(page) < page_size:
            return list(by_id.values())
        if not new:
            raise ChaosError(f"more than {page_size} broker orders share one created_at: cannot page them")
        newest = max(datetime.fromisoformat(o["created_at"]) for o in page)
        after = (newest - timedelta(microseconds=1)).isoformat()


def broker_positions(exchange: httpx.Client) -> dict[str, float]:
    response = exchange.get("/v2/positions")
    response.raise_for_status()
    return {p["symbol"]: float(p["qty"]) for p in response.json()}


def gateway_positions(gateway_url: str) -> dict[str, float]:
    response = httpx.get(f"{gateway_url}/v1/portfolio", timeout=30.0)
    if response.status_code != 200:
        raise ChaosError(f"GET /v1/portfolio answered {response.status_code}: {response.text[:300]}")
    return {sym: float(p["qty"]) for sym, p in response.json()["positions"].items() if abs(float(p["qty"])) > 0}


def _final_reconcile(gateway: ManagedProcess) -> str:
    """Make the gateway's book the broker's, the way an operator would: POST /v1/reconcile, or,
    where this gateway has no such route, a graceful restart (it reconciles at start)."""
    response = httpx.post(f"{gateway.url}/v1/reconcile", json={"principal": "chaos", "reason": "chaos: final check"},
                          timeout=60.0)
    if response.status_code == 200:
        return "POST /v1/reconcile"
    logger.info("POST /v1/reconcile answered %d; restarting the gateway gracefully to reconcile",
                response.status_code)
    gateway.stop()
    gateway.start()
    return f"graceful restart (POST /v1/reconcile answered {response.status_code})"


# ---- one run -----------------------------------------------------------------------------------

def run_chaos(config: ChaosConfig) -> ChaosReport:
    """Run the crash test on one backend; raises ChaosError when it cannot run at all."""
    started = time.monotonic()
    run_id = f"{config.seed}_{uuid.uuid4().hex[:8]}"
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    for log in ("gateway.log", "exchange.log"):
        (run_dir / log).unlink(missing_ok=True)
    risk_path = write_risk_config(run_dir / "risk_overlays.yaml")
    target = _audit_target(config, run_id)
    logger.info("chaos %s: %d symbols, >= %d orders, >= %d kills, seed %d; audit %s", config.backend,
                config.n_symbols, config.min_orders, config.min_kills, config.seed, target.describe())

    exchange_port, gateway_port = free_port(), free_port()
    exchange = exchange_process(exchange_port, run_dir / "exchange.log", seed=config.seed,
                                initial_cash=config.initial_cash)
    gateway = gateway_process(gateway_port, run_dir / "gateway.log", broker_url=exchange.url, audit_url=target.url,
                              audit_table=target.table, risk_config=risk_path)
    symbols = tuple(f"SYM{i:02d}" for i in range(config.n_symbols))
    plan = ReplayPlan(n_bars=config.bars, min_orders=config.min_orders, min_kills=config.min_kills,
                      seed=config.seed, request_timeout_s=config.request_timeout_s,
                      max_bars=4 * config.bars + 100)
    replay: ChaosReplay | None = None
    store: AuditStore | None = None
    try:
        exchange.start()
        gateway.start()
        replay = ChaosReplay(plan, SyntheticMarket(symbols, config.seed), gateway=gateway, exchange_url=exchange.url)
        result = replay.run()
        logger.info("replay done: %d bars, %d kills; reading the outcome", result.bars, len(result.kills))

        book_before = gateway_positions(gateway.url)
        how = _final_reconcile(gateway)
        book_after = gateway_positions(gateway.url)
        final_state = httpx.get(f"{gateway.url}/healthz", timeout=30.0).json().get("trading_state")
        exit_code = gateway.stop()
        with httpx.Client(base_url=exchange.url, headers=BROKER_HEADERS, timeout=60.0) as client:
            at_broker = broker_positions(client)
            orders = read_broker_orders(client)

        store = AuditStore(target.url, table=target.table)
        order_rows = read_order_rows(store)
        chain_ok = store.verify_chain()
        checks = check_run(split_order_rows(order_rows), order_rows, orders)
        mismatch = positions_differ(book_after, at_broker)
        mismatch_before = positions_differ(book_before, at_broker)

        kills = len(result.kills)
        passed = (checks.ok and chain_ok and not mismatch and not result.failures
                  and kills >= config.min_kills and checks.intents >= config.min_orders)
        report = ChaosReport(
            backend=config.backend,
            passed=passed,
            kills=kills,
            intents=checks.intents,
            at_broker_once=checks.at_broker_once,
            not_sent=checks.not_sent,
            lost=checks.lost,
            duplicates=checks.duplicates,
            orphans=checks.orphans,
            orders_at_broker=checks.orders_at_broker,
            audit_chain_ok=chain_ok,
            positions_match=not mismatch,
            restarts=gateway.starts - 1,
            elapsed_s=time.monotonic() - started,
            details={
                "bars": result.bars,
                "seed": config.seed,
                "n_symbols": config.n_symbols,
                "min_orders": config.min_orders,
                "min_kills": config.min_kills,
                "kills_mid_request": sum(1 for k in result.kills if k.landed == "mid_request"),
                "kills_after_response": sum(1 for k in result.kills if k.landed == "after_response"),
                "resend_accepted": result.resend_accepted,
                "resend_stale": result.resend_stale,
                "failures": result.failures,
                "duplicate_client_ids": checks.duplicate_client_ids,
                "duplicate_bar_orders": checks.duplicate_bar_orders,
                "audit_contradictions": checks.audit_contradictions,
                "lost_last_status": checks.lost_last_status,
                "examples": checks.examples,
                "positions_mismatch": mismatch,
                "positions_match_before_reconcile": not mismatch_before,
                "positions_mismatch_before_reconcile": mismatch_before,
                "final_reconcile": how,
                "final_trading_state": final_state,
                "gateway_exit_code": exit_code,
                "median_restart_s": round(statistics.median(k.restart_s for k in result.kills), 3)
                if result.kills else None,
                "median_request_s": round(statistics.median(result.request_durations_s), 4)
                if result.request_durations_s else None,
                "audit": target.describe(),
                "audit_kept": config.backend == "sqlite" or config.keep_audit,
                "logs": {"gateway": str(run_dir / "gateway.log"), "exchange": str(run_dir / "exchange.log")},
                "kill_log": [k.as_dict() for k in result.kills],
            },
        )
        logger.info("chaos %s: %s — %d intents, %d at broker once, %d not sent, %d lost, %d duplicates, "
                    "%d orphans, chain %s, positions %s, %d kills", config.backend,
                    "PASSED" if passed else "FAILED", checks.intents, checks.at_broker_once, checks.not_sent,
                    checks.lost, checks.duplicates, checks.orphans, "ok" if chain_ok else "BROKEN",
                    "match" if not mismatch else "DIFFER", kills)
        return report
    finally:
        if replay is not None:
            replay.close()
        gateway.stop()
        exchange.stop()
        if config.backend == "postgresql" and not config.keep_audit:
            # A run that failed before reading the trail still leaves no table behind.
            store = store or AuditStore(target.url, table=target.table)
            store.drop()
        if store is not None:
            store.close()


def combine(reports: list[ChaosReport]) -> dict[str, Any]:
    """The top-level report: sums of counts, all() of verdicts, and each run under "runs"."""
    runs = {r.backend: r.as_dict() for r in reports}
    out: dict[str, Any] = {}
    for key in ("kills", "intents", "at_broker_once", "duplicates", "lost", "not_sent", "orders_at_broker",
                "orphans", "restarts"):
        out[key] = sum(getattr(r, key) for r in reports)
    out["audit_chain_ok"] = bool(reports) and all(r.audit_chain_ok for r in reports)
    out["positions_match"] = bool(reports) and all(r.positions_match for r in reports)
    out["elapsed_s"] = round(sum(r.elapsed_s for r in reports), 2)
    out["backend"] = reports[0].backend if len(reports) == 1 else "+".join(r.backend for r in reports)
    out["passed"] = bool(reports) and all(r.passed for r in reports)
    out["runs"] = runs
    return out


def _run_or_fail(config: ChaosConfig) -> ChaosReport:
    started = time.monotonic()
    try:
        return run_chaos(config)
    except (MarlopsError, GatewayError, httpx.HTTPError, sa.exc.SQLAlchemyError) as exc:
        logger.error("chaos %s could not run: %s", config.backend, exc)
        return ChaosReport(backend=config.backend, passed=False, error=str(exc),
                           elapsed_s=time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marlops chaos",
                                     description="kill -9 the gateway during a replay; check nothing is lost "
                                                 "or sent twice")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--orders", type=int, default=2000, help="at least this many order intents")
    parser.add_argument("--kills", type=int, default=20, help="at least this many SIGKILLs of the gateway")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--bars", type=int, default=None, help="default: enough for --orders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--keep-audit", action="store_true", help="keep the PostgreSQL audit table")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    backends: list[Backend] = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    base = ChaosConfig(n_symbols=args.symbols, n_bars=args.bars, min_orders=args.orders, min_kills=args.kills,
                       seed=args.seed, out_dir=args.out, pg_url=args.pg_url, keep_audit=args.keep_audit)
    reports = [_run_or_fail(replace(base, backend=b)) for b in backends]
    combined = combine(reports)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "report.json"
    path.write_text(json.dumps(combined, indent=2, default=str) + "\n")
    print(json.dumps({k: combined[k] for k in REPORT_KEYS}, indent=2))
    for report in reports:
        if report.error:
            print(f"{report.backend}: could not run: {report.error}", file=sys.stderr)
    print(f"chaos {'PASSED' if combined['passed'] else 'FAILED'}; report: {path}")
    return 0 if combined["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
