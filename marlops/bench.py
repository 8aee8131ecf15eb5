"""`marlops bench`: decision latency through the real Triton + gateway path vs the in-process floor."""

import json
import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contracts.config import RLConfig
from features.observation import ObservationBuilder
from marlops.paths import StatePaths
from marlops.pipeline import (
    PipelineContext,
    TrainingSettings,
    deploy_to_triton,
    fit_spec,
    load_bars,
    percentiles,
    register_candidate,
    run_replay,
    train_candidate,
)
from marlops.trading import BarOutcome

logger = logging.getLogger(__name__)


def with_model_repository(config: RLConfig, repository: Path) -> RLConfig:
    triton = config.serving.triton.model_copy(update={"model_repository": str(repository)})
    serving = config.serving.model_copy(update={"triton": triton})
    return config.model_copy(update={"serving": serving})


def inprocess_floor_ms(artifact: Path, observations: list[np.ndarray], *, repeats: int = 3) -> np.ndarray:
    """The same TorchScript file called directly, one call per timestep batch: the latency floor."""
    module = torch.jit.load(str(artifact), map_location="cpu").eval()
    timings: list[float] = []
    with torch.inference_mode():
        for _ in range(repeats):
            for obs in observations:
                x = torch.from_numpy(obs)
                t0 = time.perf_counter()
                module(x)
                timings.append((time.perf_counter() - t0) * 1000)
    return np.array(timings)


def run_bench(paths: StatePaths, config: RLConfig, *, n_symbols: int = 100, steps: int = 60, seed: int = 11,
              warmup_steps: int = 5) -> dict[str, Any]:
    bench_state = StatePaths(root=paths.bench_dir / "state", project_root=paths.project_root).ensure()
    config = with_model_repository(config, paths.bench_dir / "triton_models")
    ctx = PipelineContext.create(bench_state, config)
    replay_days = steps + warmup_steps
    bars = load_bars("synthetic", seed=seed, n_symbols=n_symbols, n_days=replay_days + 150)
    spec = fit_spec(bars, config, seed=seed)
    logger.info("bench: training a small policy for %d symbols (quality is irrelevant here)", n_symbols)
    candidate = train_candidate(bars, spec, ctx, training=TrainingSettings(seed=seed, iterations=2, hidden=64))
    registered = register_candidate(candidate, ctx)
    deploy_to_triton(registered, ctx, smoke_test=False)
    records: list[BarOutcome] = []
    summary = run_replay(bars, registered, ctx, replay_days=replay_days, on_step=records.append)
    measured = records[warmup_steps:]
    decision = np.array([r.latency_ms for r in measured])
    triton = np.array([r.inference_ms for r in measured])

    builder = ObservationBuilder(spec)
    tensors = builder.training_tensors(bars)
    zeros = np.zeros((tensors.symbol_market.shape[1], 2), dtype=np.float32)
    batches = [np.ascontiguousarray(np.concatenate([tensors.symbol_market[t], zeros], axis=1), dtype=np.float32)
               for t in range(-len(measured), 0)]
    floor = inprocess_floor_ms(Path(registered.symbol.artifact), batches)
    report = {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(), "python": platform.python_version()},
        "symbols": n_symbols,
        "timesteps_measured": len(measured),
        "warmup_timesteps": warmup_steps,
        "protocol": config.serving.triton.protocol,
        "decision_latency_ms": percentiles(decision),
        "triton_inference_ms": percentiles(triton),
        "inprocess_inference_ms": percentiles(floor),
        "ratio_p50_decision_over_inprocess": float(np.median(decision) / max(np.median(floor), 1e-9)),
        "ratio_p50_triton_over_inprocess": float(np.median(triton) / max(np.median(floor), 1e-9)),
        "orders_submitted": summary.orders_submitted,
        "policy_versions": summary.policy_versions,
        "definition": "decision latency = bar in -> features -> one batched Triton call -> gateway accepted "
                      "(overlay, risk, audit, orders routed through alpaca-py to the paper exchange)",
    }
    paths.bench_dir.mkdir(parents=True, exist_ok=True)
    (paths.bench_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
