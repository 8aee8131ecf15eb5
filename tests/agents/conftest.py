from collections.abc import Callable

import numpy as np
import pytest

from contracts.config import RiskOverlaysConfig

from agents.inputs import MASTER_MARKET_DIM, SYMBOL_MARKET_DIM

PlantedData = tuple[np.ndarray, np.ndarray]


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARLOPS_NO_PROGRESS", "1")


@pytest.fixture
def risk() -> RiskOverlaysConfig:
    return RiskOverlaysConfig()


def planted_signal(steps: int, symbols: int, seed: int) -> PlantedData:
    """forward_return = 0.01 * sign(feature 0) + noise: a policy that reads feature 0 can profit."""
    rng = np.random.default_rng(seed)
    market = rng.standard_normal((steps, symbols, SYMBOL_MARKET_DIM)).astype(np.float32)
    returns = 0.01 * np.sign(market[:, :, 0]) + 0.005 * rng.standard_normal((steps, symbols))
    return market, returns


def master_features(steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((steps, MASTER_MARKET_DIM)).astype(np.float32)


@pytest.fixture
def make_planted() -> Callable[[int, int, int], PlantedData]:
    return planted_signal


@pytest.fixture
def make_master_features() -> Callable[[int, int], np.ndarray]:
    return master_features
