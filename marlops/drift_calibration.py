"""`marlops drift-calibrate`: the live drift monitor's false-alarm rate and detection delay, measured.

For each seed: a synthetic market (planted-alpha) of `train_bars + bars` bars; the feature spec (and its drift
reference) is fitted on the first `train_bars`; the next `bars` bars go through the feature service and the
drift monitor with the shipped thresholds (config/rl/feature_drift_thresholds.json).

- False alarms: on the unshifted bars (same process as training), the number of halts (a key feature beyond its
  limit) and of drift-score alerts (score > alert_score), counted as rising edges, per 1,000 bars.
- Detection delay: the same bars with a planted shift of `shift` training standard deviations added to one key
  feature from the middle bar on; the delay is the number of bars from the shift until the monitor first asks
  for a halt (1 = on the shifted bar itself), per key feature and shift size.

    marlops drift-calibrate --seeds 1,2,3 --train-bars 1500 --bars 1000 --json drift_calibration.json
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contracts.config import DriftThresholdsConfig, load_drift
from features.drift_monitor import SL_FEATURE, DriftMonitor
from features.service import FeatureService
from features.sl_signal import predict_sl
from features.spec import fit_feature_spec
from market_data.source import load_market, trading_symbols
from marlops.errors import MarlopsError

logger = logging.getLogger(__name__)

DEFAULT_SHIFTS: tuple[float, ...] = (4.5, 6.0, 8.0)


def _feature_stream(seed: int, train_bars: int, bars: int, n_symbols: int) -> tuple[Any, list[tuple[Any, ...]]]:
    """The spec fitted on the first `train_bars`, and the raw features of each later bar."""
    market = load_market("synthetic:planted-alpha", seed=seed, n_symbols=n_symbols, n_days=train_bars + bars)
    stamps = np.sort(market["timestamp"].unique())
    cut = stamps[train_bars]
    history = market[market["timestamp"] < cut]
    spec = fit_feature_spec(history, seed=seed)
    service = FeatureService(spec, trading_symbols(market), history=history)
    stream = []
    for ts in stamps[train_bars:]:
        snap = service.on_bars(market[market["timestamp"] == ts])
        stream.append((snap.timestamp, snap.market_rows, snap.master_row))
    return spec, stream


def _shifted(spec: Any, rows: pd.DataFrame, master: pd.Series, name: str,
             shift: float) -> tuple[pd.DataFrame, pd.Series, np.ndarray | None]:
    if name == SL_FEATURE:
        i = spec.symbol.names.index(name)
        return rows, master, predict_sl(spec.sl_model, rows) + shift * spec.symbol.stds[i]
    if name in rows.columns:
        i = spec.symbol.names.index(name)
        rows = rows.assign(**{name: rows[name] + shift * spec.symbol.stds[i]})
    if name in master.index:
        i = spec.master.names.index(name)
        master = master.copy()
        master[name] = master[name] + shift * spec.master.stds[i]
    return rows, master, None


def _run(spec: Any, stream: list[tuple[Any, ...]], thresholds: DriftThresholdsConfig, *, shift_from: int | None = None,
         feature: str = "", shift: float = 0.0) -> dict[str, Any]:
    monitor = DriftMonitor(spec, thresholds)
    halts = alerts = 0
    halted = alerting = False
    first_halt = None
    max_score = 0.0
    for i, (ts, rows, master) in enumerate(stream):
        sl = None
        if shift_from is not None and i >= shift_from:
            rows, master, sl = _shifted(spec, rows, master, feature, shift)
        verdict = monitor.observe(ts, rows, master, sl_probabilities=sl)
        halt, alert = bool(verdict.breaches), verdict.score > thresholds.monitor.alert_score
        halts += halt and not halted
        alerts += alert and not alerting
        halted, alerting = halt, alert
        max_score = max(max_score, verdict.score)
        if halt and first_halt is None and (shift_from is None or i >= shift_from):
            first_halt = i
    return {"halts": halts, "alerts": alerts, "max_score": round(max_score, 4), "first_halt": first_halt}


def calibrate(seeds: Sequence[int], *, train_bars: int, bars: int, n_symbols: int = 20,
              shifts: Sequence[float] = DEFAULT_SHIFTS, thresholds: DriftThresholdsConfig | None = None) -> dict[str, Any]:
    thresholds = thresholds or load_drift()
    # Thousands of bars: the feature service's per-bar notes (regime shifts) would bury the report.
    logging.getLogger("features").setLevel(logging.WARNING)
    if bars < 4:
        raise MarlopsError(f"--bars must be >= 4, got {bars}")
    keys = sorted(thresholds.key_features)
    per_seed = []
    delays: dict[str, dict[str, list[int | None]]] = {k: {str(s): [] for s in shifts} for k in keys}
    halts = alerts = 0
    for seed in seeds:
        logger.info("drift calibration: seed %d (%d training bars, %d monitored)", seed, train_bars, bars)
        spec, stream = _feature_stream(seed, train_bars, bars, n_symbols)
        clean = _run(spec, stream, thresholds)
        halts += clean["halts"]
        alerts += clean["alerts"]
        middle = len(stream) // 2
        for key in keys:
            for shift in shifts:
                shifted = _run(spec, stream, thresholds, shift_from=middle, feature=key, shift=shift)
                delay = None if shifted["first_halt"] is None else shifted["first_halt"] - middle + 1
                delays[key][str(shift)].append(delay)
        per_seed.append({"seed": seed, **{k: v for k, v in clean.items() if k != "first_halt"}})
    total = len(seeds) * bars
    return {
        "bars_monitored": total, "seeds": list(seeds), "train_bars": train_bars, "symbols": n_symbols,
        "false_halts_per_1000_bars": round(1000 * halts / total, 3),
        "false_alerts_per_1000_bars": round(1000 * alerts / total, 3),
        "per_seed": per_seed,
        "key_features": dict(thresholds.key_features),
        "detection_delay_bars": {k: {s: {"max": max((d for d in v if d is not None), default=None),
                                          "missed": sum(d is None for d in v), "runs": len(v)}
                                      for s, v in by_shift.items()} for k, by_shift in delays.items()},
        "monitor": thresholds.monitor.model_dump(),
    }


def add_drift_calibrate_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("drift-calibrate", help="measure the drift monitor's false alarms per 1000 "
                                   "stationary bars and its detection delay for planted shifts")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds of the synthetic markets")
    parser.add_argument("--train-bars", type=int, default=1500, help="bars the spec is fitted on")
    parser.add_argument("--bars", type=int, default=1000, help="bars monitored per seed")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="write the report here (default: stdout only)")
    parser.set_defaults(func=run_drift_calibrate)


def run_drift_calibrate(args: argparse.Namespace) -> int:
    try:
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    except ValueError as exc:
        raise MarlopsError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from exc
    if not seeds:
        raise MarlopsError("--seeds names no seed")
    thresholds = load_drift(Path(args.config_dir) / "feature_drift_thresholds.json") if getattr(
        args, "config_dir", None) else None
    report = calibrate(seeds, train_bars=args.train_bars, bars=args.bars, n_symbols=args.symbols,
                       thresholds=thresholds)
    text = json.dumps(report, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0
