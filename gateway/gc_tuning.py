"""Garbage-collector settings for a latency-sensitive process (the gateway, the trading service).

Measured on the in-process gateway (1000-symbol timesteps, 2 cores): with CPython's defaults a full
collection over the process's large, long-lived heap (imports, config, the book) lands in some timesteps
and was their p99 (386 ms, p50 124 ms); with the long-lived objects frozen out of collection and young
collections less frequent, p99 163 ms (p50 121 ms). At 100 symbols it makes no measurable difference.
Called once per process after start-up, by the process entry points (never by library code or tests).
"""

import gc
import logging

logger = logging.getLogger(__name__)

GEN0_THRESHOLD = 50_000


def tune_gc_for_latency(gen0_threshold: int = GEN0_THRESHOLD) -> None:
    gc.collect()
    gc.freeze()  # what exists now lives as long as the process: never scanned again
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, max(gen1, 50), max(gen2, 1000))
    logger.info("gc tuned for latency: %d objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())
