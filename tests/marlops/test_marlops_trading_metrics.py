import numpy as np
import pytest

from marlops.routing import PolicyRef
from marlops.trading import TradingMetrics, timed_inference


def _count(metrics: TradingMetrics, model: str, version: str) -> float:
    return metrics.registry.get_sample_value("marlops_trading_inference_seconds_count",
                                             {"model": model, "version": version}) or 0.0


def test_timed_inference_when_master_infers_then_observed_under_its_model_even_when_it_fails() -> None:
    metrics = TradingMetrics()
    ref = PolicyRef("master_agent", 3)
    infer = timed_inference(metrics, ref, lambda obs: obs.sum())
    assert infer(np.ones((1, 4))) == 4.0
    assert _count(metrics, "master_agent", "3") == 1.0

    def broken(_obs: np.ndarray) -> object:
        raise RuntimeError("triton down")

    with pytest.raises(RuntimeError, match="triton down"):
        timed_inference(metrics, ref, broken)(np.ones((1, 4)))
    assert _count(metrics, "master_agent", "3") == 2.0
    assert _count(metrics, "symbol_agent", "3") == 0.0
    # The 400 ms bucket exists, so the master's 400 ms alert reads an exact bucket boundary.
    assert metrics.registry.get_sample_value("marlops_trading_inference_seconds_bucket",
                                             {"model": "master_agent", "version": "3", "le": "0.4"}) == 2.0
