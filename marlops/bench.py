"""`marlops bench` (`make bench`): where the time of one decision goes, measured side by side in one run.

1. A small policy is trained once on `symbols` symbols (its quality is irrelevant here), registered and exported.
2. For each scale (the headline `symbols`, `scales`, and a `universe` larger than Triton's max batch) the
   trading service loop (marlops.pipeline.run_replay: the loop of `marlops trade`, with its own paper exchange
   process, tritonserver process and execution gateway) replays the synthetic market at that size:
   `warmup_steps` bars, then `steps` (headline) or `scale_steps` measured bars, then `profile_steps` bars that are
   profiled when the scale misses its latency target (or with `profile_always`). Decision latency = bar in ->
   decisions accepted by the gateway. Triton's own counters give the requests per bar (a universe above the max
   batch goes as several requests: serving.client.PolicyClient chunks it). RSS of every service process is
   sampled at each measured bar (marlops.bench_procs).
3. At the headline scale, after its measured bars, against the same running Triton and on the same
   observations: one batched request vs one request per symbol, gRPC vs HTTP, the universe chunked, and the
   TorchScript file in process (marlops.bench_triton).
4. `targets` states the issue's targets with met / missed; `_extra_sections` adds what other bench modules
   measure (gateway latencies, replay throughput).
"""

from __future__ import annotations

import cProfile
import json
import logging
import math
import os
import platform
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contracts.config import RLConfig
from features.observation import ObservationBuilder
from marlops.bench_procs import RssPeaks, top_functions
from marlops.bench_triton import compare_inference, ratio, triton_counts
from marlops.paths import StatePaths
from marlops.pipeline import (
    SYMBOL_AGENT,
    PipelineContext,
    RegisteredPolicies,
    TrainingSettings,
    deploy_to_triton,
    fit_spec,
    load_bars,
    percentiles,
    register_candidate,
    run_replay,
    train_candidate,
)
from marlops.stack import StackPorts
from marlops.trading import BarOutcome

logger = logging.getLogger(__name__)

# The decision-latency targets: p99 in ms at exactly this many symbols.
DECISION_P99_TARGETS_MS = {100: 15.0, 1000: 40.0}
ACTION_TO_ORDER_P99_TARGET_MS = 50.0
REPLAY_TARGET_S = 300.0
BENCH_PROCESS_KEY = "bench_process_trading_service_and_gateway"
DEFINITION = ("decision latency = bar in -> features -> one batched Triton request per policy version (chunked "
              "above the model's max batch) -> POST /v1/decisions answered by the gateway (BarOutcome.latency_ms of "
              "marlops.trading: the gateway's acceptance, as the gateway defines it at the time of the run; the "
              "trading service's later wait for the bar's orders to settle is not part of it)")


@dataclass(frozen=True)
class BenchOptions:
    symbols: int = 100  # the headline scale: decision_latency_ms, the Triton comparisons
    steps: int = 60  # measured bars at the headline scale
    scales: tuple[int, ...] = (100, 1000)
    universe: int = 3000  # a universe larger than Triton's max batch: it must work (chunked requests)
    scale_steps: int = 20  # measured bars at every other scale
    warmup_steps: int = 5
    profile_steps: int = 10  # bars profiled after the measured ones where a target is missed
    profile_always: bool = False  # profile every scale, target or not (the smoke test)
    max_batch_size: int | None = None  # override serving.triton.max_batch_size (a tiny one for the smoke test)
    seed: int = 11
    # The gateway's hops (marlops.bench_gateway): timesteps of `gateway_orders` orders each.
    gateway_orders: int = 100
    gateway_steps: int = 30
    directives: int = 50
    # Replay throughput (marlops.bench_replay): `replay_days` sessions of 1-minute bars of `replay_symbols`.
    replay_symbols: int = 100
    replay_days: int = 30
    replay_minutes_per_day: int = 390

    def sizes(self) -> list[int]:
        return sorted({self.symbols, *self.scales, *([self.universe] if self.universe else [])})

    def measured_steps(self, size: int) -> int:
        return self.steps if size == self.symbols else self.scale_steps

    def profiled_steps(self, size: int) -> int:
        return self.profile_steps if (self.profile_always or size in DECISION_P99_TARGETS_MS) else 0


def with_model_repository(config: RLConfig, repository: Path) -> RLConfig:
    triton = config.serving.triton.model_copy(update={"model_repository": str(repository)})
    serving = config.serving.model_copy(update={"triton": triton})
    return config.model_copy(update={"serving": serving})


def with_max_batch_size(config: RLConfig, max_batch_size: int) -> RLConfig:
    triton = config.serving.triton.model_copy(update={"max_batch_size": max_batch_size})
    return config.model_copy(update={"serving": config.serving.model_copy(update={"triton": triton})})


class StackSampler(threading.Thread):
    """Samples the stacks of this process's other threads (the gateway's event loop) every `interval_s` while
    running: cProfile sees only the thread that enables it. Samples whose innermost frame waits (selectors,
    threading waits) count as idle."""

    _IDLE = ("selectors.py", "threading.py", "queue.py")
    # Innermost Python frames of a thread blocked in C: uvloop's event loop waiting for I/O, a pool worker
    # waiting for work.
    _IDLE_LEAVES = (("asyncio/runners.py", "run"), ("concurrent/futures/thread.py", "_worker"))

    def __init__(self, interval_s: float = 0.002) -> None:
        super().__init__(name="bench-stack-sampler", daemon=True)
        self.interval_s = interval_s
        self.busy = 0
        self.idle = 0
        self.rounds = 0
        self.elapsed_s = 0.0
        self.inclusive: Counter[str] = Counter()
        self.own: Counter[str] = Counter()
        self._stop_event = threading.Event()
        self._root = str(Path(__file__).resolve().parents[1]) + "/"

    def _label(self, code: Any) -> str:
        filename = code.co_filename.replace(self._root, "")
        if "site-packages/" in filename:
            filename = filename.split("site-packages/", 1)[1]
        return f"{filename}:{code.co_firstlineno}({code.co_name})"

    def run(self) -> None:
        me, main = threading.get_ident(), threading.main_thread().ident
        t0 = time.perf_counter()
        while not self._stop_event.wait(self.interval_s):
            self.rounds += 1
            self.elapsed_s = time.perf_counter() - t0
            for ident, frame in sys._current_frames().items():
                if ident in (me, main):
                    continue
                code = frame.f_code
                if code.co_filename.endswith(self._IDLE) or any(
                        code.co_filename.endswith(f) and code.co_name == n for f, n in self._IDLE_LEAVES):
                    self.idle += 1
                    continue
                self.busy += 1
                self.own[self._label(frame.f_code)] += 1
                seen: set[str] = set()
                f: Any = frame
                while f is not None:
                    if f.f_code.co_filename.startswith(self._root) and "/.venv/" not in f.f_code.co_filename:
                        seen.add(self._label(f.f_code))  # project code only: the frames that say what it does
                    f = f.f_back
                self.inclusive.update(seen)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def report(self, bars: int, limit: int = 15) -> dict[str, Any]:
        # A sample is one look at every thread; a round can come late (the sampler needs the GIL), so time per
        # sample is the sampling wall time over the rounds, not the nominal interval.
        per_sample_ms = self.elapsed_s * 1000 / max(self.rounds, 1) / max(bars, 1)

        def rows(counter: Counter[str], n: int) -> list[dict[str, Any]]:
            return [{"function": name, "ms_per_bar_approx": round(k * per_sample_ms, 2),
                     "share_of_samples": round(k / max(self.rounds, 1), 3)} for name, k in counter.most_common(n)]

        return {"interval_ms": self.interval_s * 1000, "rounds": self.rounds, "busy_samples": self.busy,
                "idle_samples": self.idle, "busy_ms_per_bar_approx": round(self.busy * per_sample_ms, 2),
                "top_inclusive_project_code": rows(self.inclusive, limit), "top_own": rows(self.own, 8)}


@dataclass
class ScaleRun:
    """The on_step observer of one scale's replay: bars, RSS, Triton's counters, the comparisons, the profile."""

    size: int
    warmup: int
    measured: int
    profile: int
    metrics_url: str
    rss: RssPeaks
    after_measured: Any = None  # callable run once, after the measured bars (the headline's comparisons)
    target_ms: float | None = None
    profile_always: bool = False
    records: list[BarOutcome] = field(default_factory=list)
    counts_before: dict[str, float] = field(default_factory=dict)
    counts_after: dict[str, float] = field(default_factory=dict)
    profiler: cProfile.Profile | None = None
    sampler: StackSampler | None = None
    profile_report: dict[str, Any] | None = None
    profile_reason: str = ""
    started: float = field(default_factory=time.monotonic)

    def on_step(self, outcome: BarOutcome) -> None:
        self.records.append(outcome)
        n = len(self.records)
        if n == self.warmup:
            self.counts_before = self._counts()
        elif self.warmup < n <= self.warmup + self.measured:
            self.rss.sample()
        if n % 5 == 0 or n == self.warmup + self.measured:
            logger.info("bench %d symbols: bar %d/%d, last %.1f ms (%.0f s so far)", self.size, n,
                        self.warmup + self.measured + self.profile, outcome.latency_ms, time.monotonic() - self.started)
        if n == self.warmup + self.measured:
            self.counts_after = self._counts()
            if self.after_measured is not None:
                self.after_measured()
            self._maybe_start_profile()
        elif n == self.warmup + self.measured + self.profile and self.profiler is not None:
            self._stop_profile()

    def _counts(self) -> dict[str, float]:
        try:
            return triton_counts(self.metrics_url, SYMBOL_AGENT)
        except Exception as exc:  # the figure is then missing, the bench goes on
            logger.warning("cannot read Triton's metrics at %s: %s", self.metrics_url, exc)
            return {}

    def decision_ms(self) -> np.ndarray:
        return np.array([r.latency_ms for r in self.measured_records()])

    def measured_records(self) -> list[BarOutcome]:
        return [r for r in self.records[self.warmup:self.warmup + self.measured] if r.status == "decided"]

    def _maybe_start_profile(self) -> None:
        if self.profile <= 0:
            return
        p99 = float(np.percentile(self.decision_ms(), 99)) if self.measured_records() else math.inf
        if self.target_ms is not None and p99 > self.target_ms:
            self.profile_reason = f"decision latency p99 {p99:.1f} ms misses the {self.target_ms:.0f} ms target"
        elif self.profile_always:
            self.profile_reason = "profile requested (--profile)"
        else:
            return
        logger.info("bench %d symbols: profiling the next %d bars: %s", self.size, self.profile, self.profile_reason)
        self.sampler = StackSampler()
        self.sampler.start()
        self.profiler = cProfile.Profile()
        self.profiler.enable()

    def _stop_profile(self) -> None:
        assert self.profiler is not None and self.sampler is not None
        self.profiler.disable()
        self.sampler.stop()
        bars = self.profile
        profiled = self.records[-bars:]
        self.profile_report = {
            "symbols": self.size, "bars": bars, "why": self.profile_reason,
            "decision_latency_ms_while_profiled": percentiles(np.array([r.latency_ms for r in profiled])),
            "trading_loop_cprofile": top_functions(self.profiler, bars=bars, limit=15, project_only=True),
            "trading_loop_cprofile_own_time": top_functions(self.profiler, bars=bars, limit=8, by="own"),
            "other_threads_sampled": self.sampler.report(bars),
            "note": "trading_loop_cprofile: cProfile of the trading service's thread (the bar loop), cumulative "
                    "ms per bar (project code; _own_time: any code by own time), inflated by cProfile's "
                    "overhead; other_threads_sampled: stack samples of this "
                    "process's other threads (the in-process gateway), busy samples only",
        }
        self.profiler = None

    def entry(self, max_batch: int) -> dict[str, Any]:
        records = self.measured_records()
        decision = self.decision_ms()
        entry: dict[str, Any] = {
            "symbols": self.size,
            "timesteps_measured": len(records),
            "decision_latency_ms": percentiles(decision),
            "triton_inference_ms": percentiles(np.array([r.inference_ms for r in records])),
            "orders_per_bar_mean": float(np.mean([r.n_orders for r in records])) if records else 0.0,
            "denied_per_bar_mean": float(np.mean([r.n_denied for r in records])) if records else 0.0,
            "max_batch_size": max_batch,
            "exceeds_max_batch": self.size > max_batch > 0,
            "triton_requests_per_bar_expected": math.ceil(self.size / max_batch) if max_batch > 0 else 1,
            "rss_mb": self.rss.report(),
        }
        if self.counts_before and self.counts_after and records:
            bars = len(self.records[self.warmup:self.warmup + self.measured])
            entry["triton_requests_per_bar"] = (self.counts_after["requests"] - self.counts_before["requests"]) / bars
            entry["triton_rows_per_bar"] = (self.counts_after["rows"] - self.counts_before["rows"]) / bars
        if self.target_ms is not None:
            entry["target_p99_ms"] = self.target_ms
            entry["target_met"] = bool(decision.size and entry["decision_latency_ms"]["p99"] <= self.target_ms)
        return entry


def _extra_sections(paths: StatePaths, config: RLConfig, options: BenchOptions) -> dict[str, Any]:
    """Sections other bench modules measure, merged into the report: the gateway's hops
    (marlops.bench_gateway.gateway_benchmarks: action-to-order, order-to-fill, acceptance, throughput, directive
    propagation, RSS of the gateway process) and replay throughput (marlops.bench_replay.replay_throughput).
    Imported here: marlops.bench_replay imports this module."""
    from marlops.bench_gateway import gateway_benchmarks
    from marlops.bench_replay import replay_throughput

    logger.info("bench: the gateway's hops (%d-order timesteps)", options.gateway_orders)
    gateway = gateway_benchmarks(paths.bench_dir / "gateway", config.risk, symbols=options.gateway_orders,
                                 steps=options.gateway_steps, throughput_steps=options.gateway_steps,
                                 directives=options.directives,
                                 inprocess_scales=tuple(sorted({options.gateway_orders, *options.scales})))
    logger.info("bench: replay throughput, %d symbols x %d days x %d one-minute bars", options.replay_symbols,
                options.replay_days, options.replay_minutes_per_day)
    replay = replay_throughput(paths, config, n_symbols=options.replay_symbols, days=options.replay_days,
                               minutes_per_day=options.replay_minutes_per_day, seed=options.seed)
    return {**gateway, "replay": replay}


def _extra_targets(report: dict[str, Any]) -> None:
    """The targets the extra sections measure, into report["targets"]."""
    targets = report["targets"]
    a2o = report.get("action_to_order_ms", {})
    measured = a2o.get("p99")
    targets["action_to_order_p99_ms"].update(
        measured_ms=measured, met=None if measured is None else bool(measured <= ACTION_TO_ORDER_P99_TARGET_MS),
        orders_per_timestep=a2o.get("orders_per_timestep"))
    replay = report.get("replay", {})
    full, wall = bool(replay.get("full_size")), replay.get("wall_s")
    targets["replay_30d_1min_100_symbols_s"].update(
        measured_s=wall, met=None if wall is None or not full else bool(wall <= REPLAY_TARGET_S),
        projected_full_size_s=replay.get("projected_full_size_s"),
        **({} if full else {"note": "the replay measured was smaller than 30 days x 390 bars x 100 symbols: "
                                    "not judged (projected_full_size_s extrapolates it)"}))


def _observation_batches(bars: Any, registered: RegisteredPolicies, count: int) -> list[np.ndarray]:
    """The headline market's last `count` timesteps as the symbol agent's [symbols, D] batches (position level
    and gross exposure zero), built by the spec's ObservationBuilder."""
    tensors = ObservationBuilder(registered.spec).training_tensors(bars)
    market = tensors.symbol_market
    zeros = np.zeros((market.shape[1], 2), dtype=np.float32)
    count = min(count, market.shape[0])
    return [np.ascontiguousarray(np.concatenate([market[t], zeros], axis=1), dtype=np.float32)
            for t in range(-count, 0)]


def _targets(scales: list[dict[str, Any]]) -> dict[str, Any]:
    by_size = {s["symbols"]: s for s in scales}
    targets: dict[str, Any] = {}
    for size, target in DECISION_P99_TARGETS_MS.items():
        measured = by_size.get(size, {}).get("decision_latency_ms", {}).get("p99") if size in by_size else None
        targets[f"decision_latency_p99_ms_{size}_symbols"] = {
            "target_ms": target, "measured_ms": measured,
            "met": None if measured is None else bool(measured <= target),
            **({} if measured is not None else {"note": f"not measured: no {size}-symbol scale in this run"})}
    targets["action_to_order_p99_ms"] = {"target_ms": ACTION_TO_ORDER_P99_TARGET_MS, "measured_ms": None,
                                         "met": None, "measured_by": "marlops.bench_gateway"}
    targets["replay_30d_1min_100_symbols_s"] = {"target_s": REPLAY_TARGET_S, "measured_s": None, "met": None,
                                                "measured_by": "marlops.bench_replay"}
    return targets


def run_bench(paths: StatePaths, config: RLConfig, options: BenchOptions | None = None, *,
              n_symbols: int | None = None, steps: int | None = None) -> dict[str, Any]:
    options = options or BenchOptions()
    if n_symbols is not None or steps is not None:  # the former signature: run_bench(paths, config, n_symbols=, steps=)
        options = BenchOptions(**{**asdict(options), "symbols": n_symbols or options.symbols,
                                  "steps": steps or options.steps})
    t_start = time.monotonic()
    load_start = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure: say how busy it was
    bench_state = StatePaths(root=paths.bench_dir / "state", project_root=paths.project_root).ensure()
    config = with_model_repository(config, paths.bench_dir / "triton_models")
    if options.max_batch_size is not None:
        config = with_max_batch_size(config, options.max_batch_size)
    max_batch = config.serving.triton.max_batch_size
    if options.universe and options.universe <= max_batch:
        logger.warning("bench: universe %d does not exceed Triton's max batch %d: the chunked path is not exercised",
                       options.universe, max_batch)
    ctx = PipelineContext.create(bench_state, config)
    sizes = options.sizes()
    logger.info("bench: scales %s (headline %d symbols, %d measured bars; others %d), max batch %d",
                sizes, options.symbols, options.steps, options.scale_steps, max_batch)

    train_days = options.warmup_steps + options.steps + options.profile_steps
    headline_bars = load_bars("synthetic", seed=options.seed, n_symbols=options.symbols, n_days=train_days + 150)
    spec = fit_spec(headline_bars, config, seed=options.seed)
    logger.info("bench: training a small policy on %d symbols (quality is irrelevant here)", options.symbols)
    candidate = train_candidate(headline_bars, spec, ctx,
                                training=TrainingSettings(seed=options.seed, iterations=2, hidden=64))
    registered = register_candidate(candidate, ctx)
    deploy_to_triton(registered, ctx, smoke_test=False)
    setup_s = time.monotonic() - t_start

    scales: list[dict[str, Any]] = []
    comparisons: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    headline: ScaleRun | None = None
    orders_submitted = 0
    for size in sizes:
        measured, profile = options.measured_steps(size), options.profiled_steps(size)
        replay_days = options.warmup_steps + measured + profile
        bars = headline_bars if size == options.symbols else load_bars(
            "synthetic", seed=options.seed, n_symbols=size, n_days=replay_days + 150)
        ports = StackPorts.free()
        run = ScaleRun(size=size, warmup=options.warmup_steps, measured=measured, profile=profile,
                       metrics_url=f"http://127.0.0.1:{ports.triton_metrics}/metrics", rss=RssPeaks(BENCH_PROCESS_KEY),
                       target_ms=DECISION_P99_TARGETS_MS.get(size), profile_always=options.profile_always)
        if size == options.symbols:
            batches = _observation_batches(bars, registered, options.steps)

            def compare(batches: list[np.ndarray] = batches, ports: StackPorts = ports) -> None:
                logger.info("bench: Triton comparisons on %d batches of %d symbols (and a %d-row universe)",
                            len(batches), options.symbols, max(options.universe, options.symbols))
                comparisons.update(compare_inference(
                    grpc_url=f"127.0.0.1:{ports.triton_grpc}", http_url=f"http://127.0.0.1:{ports.triton_http}",
                    model=SYMBOL_AGENT, version=str(registered.symbol.triton_version),
                    artifact=Path(registered.symbol.artifact), batches=batches,
                    universe_rows=max(options.universe, options.symbols)))

            run.after_measured = compare
            headline = run
        logger.info("bench: %d symbols: %d warm-up + %d measured + %d profile bars through the trading service",
                    size, options.warmup_steps, measured, profile)
        summary = run_replay(bars, registered, ctx, replay_days=replay_days, ports=ports, on_step=run.on_step)
        entry = run.entry(max_batch)
        scales.append(entry)
        if run.profile_report is not None:
            profiles[str(size)] = run.profile_report
        if size == options.symbols:
            orders_submitted = summary.orders_submitted
        logger.info("bench: %d symbols: decision latency p50 %.1f ms, p99 %.1f ms", size,
                    entry["decision_latency_ms"]["p50"], entry["decision_latency_ms"]["p99"])

    assert headline is not None
    head = next(s for s in scales if s["symbols"] == options.symbols)
    decision = head["decision_latency_ms"]
    floor = comparisons.get("inprocess_torchscript_ms", {"p50": 0.0, "p99": 0.0})
    report: dict[str, Any] = {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_1m_at_start": load_start, "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "options": {**asdict(options), "scales": list(options.scales)},
        "symbols": options.symbols,
        "timesteps_measured": head["timesteps_measured"],
        "warmup_timesteps": options.warmup_steps,
        "protocol": config.serving.triton.protocol,
        "max_batch_size": max_batch,
        "decision_latency_ms": decision,
        "triton_inference_ms": head["triton_inference_ms"],
        "inprocess_inference_ms": floor,
        "ratio_p50_decision_over_inprocess": ratio(decision["p50"], floor["p50"]),
        "ratio_p50_triton_over_inprocess": ratio(head["triton_inference_ms"]["p50"], floor["p50"]),
        "scales": scales,
        "triton": comparisons,
        "rss_mb": head["rss_mb"],
        "rss_note": f"peak resident memory (MB) over the {options.symbols}-symbol measured bars, from /proc; the "
                    f"gateway runs as a thread of the bench process (marlops.stack.ServingStack), so its memory "
                    f"is in '{BENCH_PROCESS_KEY}'; triton_total = tritonserver + its Python backend stubs (one per "
                    f"loaded model version); every scale's own peaks are in scales[].rss_mb",
        "targets": _targets(scales),
        "profile": profiles,
        "orders_submitted": orders_submitted,
        "policy_versions": registered.versions(),
        "setup_s": round(setup_s, 1),
        "definition": DEFINITION,
    }
    report.update(_extra_sections(paths, config, options))
    _extra_targets(report)
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    paths.bench_dir.mkdir(parents=True, exist_ok=True)
    (paths.bench_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
