"""Replay throughput: symbol-decisions per second of a 1-minute replay through the real services.

The replay is `marlops.pipeline.replay_on_own_table`, the path `staging_replay` takes: the trading service loop
(`marlops.trading.TradingService`) over a `ReplayBarSource` as fast as possible, with its own paper exchange
(process), `tritonserver` (process) and execution gateway (uvicorn in this process, durable SQLite audit). Per
bar: the bar's prices to the paper exchange, the feature service, ONE batched Triton request for the symbol
agent (the master agent every 5 minutes of market time), `POST /v1/decisions` (overlay, risk, audit, orders
through alpaca-py to the paper exchange), the cursor saved.

The market is the seeded synthetic one in 1-minute bars (`frequency="1Min"`, 390 bars per regular session).
The policy is the bench's tiny one (MAPPO, 2 iterations), trained on `history_days` sessions of the same
minute bars before the replayed ones, with a feature spec fitted on them.

`wall_s` is the loop's wall time, from the first replayed bar's start to the last bar's answer; stack start,
Triton model loads and training are `setup_s`, not part of it. The target (30 trading days x 390 minutes x 100
symbols = 1.17 M symbol-decisions in <= 300 s) is reported, never asserted. A smaller slice reports its own
figures and a clearly labelled extrapolation to the full size at the measured rate.

Where the time goes: CPU seconds per thread of this process (trading loop, gateway) and per child process
(tritonserver + its Python backend stubs, paper exchange) over the timed bars, read from /proc; then, on the
same stack, `profile_bars` more bars (not timed) with cProfile on the trading loop's thread (top functions by
cumulative and by own time; the pstats file is kept beside the run) and stack samples of the gateway's threads
(`marlops.bench.StackSampler`: cProfile sees only the thread that enables it).
"""

from __future__ import annotations

import cProfile
import logging
import os
import pstats
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contracts.config import RLConfig
from marlops.bench import StackSampler, with_model_repository
from marlops.candidates import TrainingSettings, fit_spec, register_candidate, train_candidate
from marlops.context import PipelineContext
from marlops.paths import StatePaths
from marlops.pipeline import WindowRun, deploy_to_triton, percentiles, registered_routing, replay_on_own_table
from marlops.trading import BarOutcome
from market_data.source import load_market
from market_data.synthetic import SESSION_MINUTES

logger = logging.getLogger(__name__)

TARGET_S = 300.0
TARGET_SYMBOLS = 100
TARGET_DAYS = 30
TARGET_SYMBOL_DECISIONS = TARGET_DAYS * SESSION_MINUTES * TARGET_SYMBOLS  # 1,170,000
REPO_ROOT = Path(__file__).resolve().parents[1]
MINUTE_BAR_SECONDS = 60.0
MASTER_EVERY_SECONDS = 300.0  # the master acts every 5 minutes of market time on minute bars

DEFINITION = (
    "replay throughput = symbol-decisions per second of wall time of the trading service loop (the loop "
    "staging_replay runs: marlops.pipeline.replay_on_own_table) replaying seeded synthetic 1-minute bars "
    "(390 per regular session) as fast as possible through the real services: per bar, prices to the paper "
    "exchange, features, one batched Triton request (symbol agent; master agent every 5 market minutes), "
    "POST /v1/decisions to the gateway (overlay, risk, durable SQLite audit, orders via alpaca-py to the paper "
    "exchange), cursor saved. symbol_decisions = symbols x bars decided; wall_s = first replayed bar's start -> "
    "last bar's answer (stack start, Triton model loads and training excluded: setup_s). "
    f"Target: {TARGET_DAYS} trading days x {SESSION_MINUTES} minutes x {TARGET_SYMBOLS} symbols "
    f"= {TARGET_SYMBOL_DECISIONS:,} symbol-decisions in <= {TARGET_S:.0f} s."
)


def minute_bar_config(config: RLConfig) -> RLConfig:
    """The loop settings of 1-minute bars: a bar is 60 s of market time, the master acts every 5 minutes."""
    loop = config.serving.loop.model_copy(update={"bar_seconds": MINUTE_BAR_SECONDS,
                                                  "master_every_seconds": MASTER_EVERY_SECONDS})
    serving = config.serving.model_copy(update={"loop": loop})
    return config.model_copy(update={"serving": serving})


# ---------------------------------------------------------------------------------------------- CPU accounting


def _ticks(stat_path: Path) -> float | None:
    """utime + stime (seconds) from a /proc stat file; None when it is gone."""
    try:
        text = stat_path.read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_group(name: str) -> str:
    if name == "MainThread":
        return "trading loop (main thread)"
    if name.startswith("uvicorn-") or name.startswith("AnyIO worker"):
        return "gateway (in-process uvicorn + its worker threads)"
    return "other threads of this process"


def _process_group(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"process {pid}"
    if "tritonserver" in cmdline:
        return "tritonserver (+ Python backend stubs)"
    if "paper_exchange" in cmdline:
        return "paper exchange (process)"
    return cmdline.split(" ")[0].rsplit("/", 1)[-1] or f"process {pid}"


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds used so far, by thread group of this process and by child process tree (Linux /proc;
    empty elsewhere)."""
    proc = Path("/proc")
    if not (proc / "self" / "task").is_dir():
        return {}
    out: dict[str, float] = {}
    names = {t.native_id: t.name for t in threading.enumerate()}
    for task in (proc / "self" / "task").iterdir():
        used = _ticks(task / "stat")
        if used is not None:
            group = _thread_group(names.get(int(task.name), ""))
            out[group] = out.get(group, 0.0) + used
    total = _ticks(proc / "self" / "stat")
    if total is not None:
        # Threads that ended since the process started are only in the process total.
        out["this process (total)"] = total
    parent: dict[int, int] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(text[text.rindex(")") + 2:].split()[1])
    me = os.getpid()
    for pid in parent:
        top, node = None, pid
        while node in parent and node != me:
            top, node = node, parent[node]
        if node != me or top is None:
            continue
        used = _ticks(proc / str(pid) / "stat")
        if used is not None:
            group = _process_group(top)
            out[group] = out.get(group, 0.0) + used
    return out


def cpu_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 2) for k in sorted(after) if after[k] - before.get(k, 0.0) > 0}


# ---------------------------------------------------------------------------------------------- profiling


def top_functions(stats: pstats.Stats | None, n: int, *, skip: Callable[[str], bool] = lambda _: False,
                  by: str = "cumtime_s") -> list[dict[str, Any]]:
    """The `n` functions with the largest cumulative (or own: by="tottime_s") time:
    {function, cumtime_s, tottime_s, ncalls}."""
    if stats is None:
        return []
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename
        for marker in (str(REPO_ROOT) + "/", "site-packages/", "/lib/python"):
            if marker in short:
                short = short.split(marker, 1)[1]
                break
        label = f"{short}:{line}({name})" if line else name
        if skip(label):
            continue
        rows.append({"function": label, "cumtime_s": round(cumtime, 3), "tottime_s": round(tottime, 3),
                     "ncalls": int(ncalls)})
    rows.sort(key=lambda r: -r[by])
    return rows[:n]


PROJECT_PACKAGES = ("marlops/", "features/", "market_data/", "serving/", "gateway/", "contracts/", "agents/",
                    "paper_exchange/")


def _not_project(label: str) -> bool:
    return not label.startswith(PROJECT_PACKAGES) or _is_plumbing(label)


def _is_plumbing(label: str) -> bool:
    """Frames that only wrap everything below them (thread bootstrap, event loop, the profiler's own)."""
    return any(s in label for s in ("threading.py", "asyncio/", "uvloop", "<built-in method builtins.exec>",
                                    "cProfile", "method 'enable'", "method 'disable'", "selectors.py",
                                    "method 'run' of", "concurrent/futures/thread.py", "queue.py", "_thread.lock",
                                    "uvicorn/server.py", "uvicorn/_compat.py", "gateway/serve.py", "anyio/"))


# ---------------------------------------------------------------------------------------------- the bench


def minute_market(*, n_symbols: int, days: int, history_days: int, minutes_per_day: int, seed: int,
                  preset: str = "planted-alpha") -> tuple[pd.DataFrame, pd.Timestamp]:
    """`history_days + days` sessions of 1-minute bars, and the first replayed bar (session `history_days`)."""
    bars = load_market(f"synthetic:{preset}", seed=seed, n_symbols=n_symbols, n_days=history_days + days,
                       frequency="1Min", minutes_per_day=minutes_per_day)
    return bars, _stamps(bars)[history_days * minutes_per_day]


def _stamps(bars: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(bars["timestamp"].unique()).sort_values()


def replay_throughput(paths: StatePaths, config: RLConfig, *, n_symbols: int = TARGET_SYMBOLS,
                      days: int = TARGET_DAYS, minutes_per_day: int = SESSION_MINUTES, seed: int = 11,
                      history_days: int = 2, iterations: int = 2, profile_bars: int = 100,
                      profile_top: int = 15) -> dict[str, Any]:
    """Replay `days` sessions of `minutes_per_day` 1-minute bars of `n_symbols` symbols through the real
    services (module doc) and measure symbol-decisions per second; then, on the same stack, profile the next
    `profile_bars` bars (cProfile on the loop's thread, stack samples of the gateway's; 0: no profile). The
    profiled bars are not part of the measurement."""
    t_setup = time.perf_counter()
    root = paths.bench_dir / "replay"
    state = StatePaths(root=root / "state", project_root=paths.project_root).ensure()
    config = minute_bar_config(with_model_repository(config, root / "triton_models"))
    ctx = PipelineContext.create(state, config)
    extra_days = -(-profile_bars // minutes_per_day) if profile_bars > 0 else 0
    bars, start = minute_market(n_symbols=n_symbols, days=days + extra_days, history_days=history_days,
                                minutes_per_day=minutes_per_day, seed=seed)
    history = bars[bars["timestamp"] < start].reset_index(drop=True)
    spec = fit_spec(history, config, seed=seed)
    logger.info("replay bench: training a tiny policy on %d minute bars of %d symbols (quality is irrelevant)",
                history["timestamp"].nunique(), n_symbols)
    t_train = time.perf_counter()
    candidate = train_candidate(history, spec, ctx, training=TrainingSettings(seed=seed, iterations=iterations, hidden=64))
    registered = register_candidate(candidate, ctx)
    train_s = time.perf_counter() - t_train
    deploy_to_triton(registered, ctx, smoke_test=False)
    stamps = _stamps(bars)
    first = int(stamps.searchsorted(start))
    n_timed = days * minutes_per_day
    end = stamps[first + n_timed + profile_bars - 1]
    window = _Window(n_timed=n_timed, n_profiled=profile_bars)
    run_dir = root / "runs" / time.strftime("%Y%m%dT%H%M%S")
    run: WindowRun | None = None
    after_loop_error = ""
    try:
        run = replay_on_own_table(bars, ctx, change=registered_routing(registered), principal="bench-replay",
                                  reason="replay throughput bench", start=start, end=end, spec=registered.spec,
                                  name="bench-replay", run_dir=run_dir, on_step=window.on_step)
    except Exception as exc:
        # Every bar was decided and measured; what failed came after the loop (e.g. the gateway's audit summary,
        # which verifies the whole hash chain, outlasting the client's timeout after millions of audit rows).
        if len(window.outcomes) < n_timed + profile_bars:
            raise
        after_loop_error = f"{type(exc).__name__}: {exc}"
        logger.error("replay bench: after the measured loop: %s", after_loop_error)
    timed = window.outcomes[:n_timed]
    decided = [o for o in timed if o.status == "decided"]
    wall_s = window.wall_s
    symbol_decisions = sum(o.n_symbols for o in decided)
    per_s = symbol_decisions / wall_s if wall_s > 0 else 0.0
    full_size = n_symbols >= TARGET_SYMBOLS and days >= TARGET_DAYS and minutes_per_day == SESSION_MINUTES
    projected = TARGET_SYMBOL_DECISIONS / per_s if per_s > 0 else float("inf")
    profile = window.profile_report(run_dir, profile_top)
    report = {
        "symbols": len(run.symbols) if run is not None else max((o.n_symbols for o in decided), default=0),
        "trading_days": days,
        "minutes_per_day": minutes_per_day,
        "bars": len(decided),
        "bars_replayed": len(timed),
        "symbol_decisions": symbol_decisions,
        "wall_s": wall_s,
        "symbol_decisions_per_s": per_s,
        "bars_per_s": len(decided) / wall_s if wall_s > 0 else 0.0,
        "ms_per_bar": 1000.0 * wall_s / len(decided) if decided else 0.0,
        "target_s": TARGET_S,
        "target_symbol_decisions": TARGET_SYMBOL_DECISIONS,
        "full_size": full_size,
        "met": bool(wall_s <= TARGET_S) if full_size else bool(projected <= TARGET_S),
        "met_basis": "measured at full size" if full_size else
        "EXTRAPOLATED from this slice at its measured rate (target_symbol_decisions / symbol_decisions_per_s)",
        "projected_full_size_s": round(projected, 1),
        "orders_submitted": sum(o.n_orders for o in decided),
        "orders_filled": sum(o.n_filled for o in decided),
        "decision_latency_ms": percentiles(np.array([o.latency_ms for o in decided])),
        "inference_ms": percentiles(np.array([o.inference_ms for o in decided])),
        "cpu_s_during_loop": window.cpu(),
        "setup_s": round(time.perf_counter() - t_setup - wall_s - profile.get("wall_s", 0.0), 1),
        "train_s": round(train_s, 1),
        "audit_rows": int(run.audit_summary.get("total", 0)) if run is not None else None,
        "trading_state": run.trading_state if run is not None else (decided[-1].trading_state if decided else ""),
        "after_loop_error": after_loop_error,
        "profile_bars": profile.get("bars", 0),
        # The trading loop's thread (cProfile), project functions by cumulative time: what each step of a bar
        # costs; then any function by own time: where that CPU goes (pandas, sockets, sqlite, json).
        "profile": profile.get("loop", []),
        "profile_self": profile.get("loop_self", []),
        # The in-process gateway's threads, sampled (cProfile sees only the thread that enables it).
        "gateway_profile": profile.get("gateway", {}),
        "profile_files": profile.get("files", {}),
        "machine_cpus": os.cpu_count(),
        "definition": DEFINITION,
    }
    logger.info("replay bench: %d symbol-decisions in %.1f s = %.0f /s (%s; projected full size %.0f s, target %.0f s)",
                symbol_decisions, wall_s, per_s, "full size" if full_size else "slice", projected, TARGET_S)
    return report


class _Window:
    """on_step of the bench replay: times the first `n_timed` bars (CPU per thread/process over them), then
    profiles the next `n_profiled` bars; everything is read before the stack stops."""

    def __init__(self, *, n_timed: int, n_profiled: int) -> None:
        self.n_timed = n_timed
        self.n_profiled = n_profiled
        self.outcomes: list[BarOutcome] = []
        self.t0 = self.t_end = self.t_profile = self.t_profile_end = 0.0
        self.cpu0: dict[str, float] = {}
        self.cpu1: dict[str, float] = {}
        self.profiler: cProfile.Profile | None = None
        self.sampler: StackSampler | None = None

    @property
    def wall_s(self) -> float:
        return self.t_end - self.t0 if self.outcomes else 0.0

    def cpu(self) -> dict[str, float]:
        return cpu_between(self.cpu0, self.cpu1) if self.cpu1 else {}

    def on_step(self, outcome: BarOutcome) -> None:
        now = time.perf_counter()
        self.outcomes.append(outcome)
        n = len(self.outcomes)
        if n == 1:
            # The loop started when the first bar did: its own measured latency before this callback.
            self.t0 = now - outcome.latency_ms / 1000.0
            self.cpu0 = cpu_snapshot()
        if n <= self.n_timed:
            self.t_end = now
        if n % 1000 == 0 and n <= self.n_timed:
            logger.info("replay bench: %d / %d bars, %.0f bars/s", n, self.n_timed, n / max(now - self.t0, 1e-9))
        if n == self.n_timed:
            self.cpu1 = cpu_snapshot()
            if self.n_profiled > 0:
                self.sampler = StackSampler()
                self.sampler.start()
                self.profiler = cProfile.Profile()
                self.t_profile = time.perf_counter()
                self.profiler.enable()
        elif n == self.n_timed + self.n_profiled and self.profiler is not None:
            self.profiler.disable()  # before the stack stops
            self.t_profile_end = time.perf_counter()
            assert self.sampler is not None
            self.sampler.stop()

    def profile_report(self, run_dir: Path, top: int) -> dict[str, Any]:
        if self.profiler is None or self.sampler is None or not self.t_profile_end:
            return {}
        stats = pstats.Stats(self.profiler)
        files = {"loop": str(run_dir / "loop.pstats")}
        stats.dump_stats(files["loop"])
        return {"bars": self.n_profiled, "files": files, "wall_s": self.t_profile_end - self.t_profile,
                "loop": top_functions(stats, top, skip=_not_project),
                "loop_self": top_functions(stats, top, skip=_is_plumbing, by="tottime_s"),
                "gateway": self.sampler.report(self.n_profiled, limit=top)}
