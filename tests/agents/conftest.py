"""Shared fixtures of the agents tests: quiet progress bars, the default risk config, hand-made episodes."""

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest

from contracts.config import RiskOverlaysConfig
from contracts.features import MASTER_MARKET_FEATURES, REGIME_FEATURES

from agents.environment import MarketEpisode
from agents.inputs import MASTER_MARKET_DIM, SYMBOL_MARKET_DIM

# Where the regime flags sit in the master's market features (the environment detects shifts there).
REGIME_COLUMNS: tuple[int, ...] = tuple(MASTER_MARKET_FEATURES.index(name) for name in REGIME_FEATURES)

EpisodeFactory = Callable[..., MarketEpisode]


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARLOPS_NO_PROGRESS", "1")


@pytest.fixture
def risk() -> RiskOverlaysConfig:
    return RiskOverlaysConfig()


def daily_stamps(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2024-01-02", periods=n, freq="D", tz="UTC")


def hand_episode(
    closes: Sequence[Sequence[float]] | np.ndarray,
    *,
    symbols: Sequence[str] | None = None,
    symbol_market: np.ndarray | None = None,
    master_market: np.ndarray | None = None,
    regime: Sequence[Sequence[float]] | np.ndarray | None = None,
    clip: float = 5.0,
) -> MarketEpisode:
    """An episode from closes [T, N] chosen by hand; market features zero unless given, regime flags [T, 2]."""
    prices = np.asarray(closes, dtype=np.float64)
    steps, n = prices.shape
    master = (
        np.zeros((steps, MASTER_MARKET_DIM), dtype=np.float32)
        if master_market is None
        else np.array(master_market, dtype=np.float32)
    )
    if regime is not None:
        master[:, list(REGIME_COLUMNS)] = np.asarray(regime, dtype=np.float32)
    return MarketEpisode(
        timestamps=daily_stamps(steps),
        symbols=tuple(symbols) if symbols is not None else tuple(f"S{i}" for i in range(n)),
        symbol_market=(
            np.zeros((steps, n, SYMBOL_MARKET_DIM), dtype=np.float32) if symbol_market is None else symbol_market
        ),
        master_market=master,
        closes=prices,
        clip=clip,
    )


def planted_episode(steps: int, n_symbols: int, seed: int, *, move: float = 0.01) -> MarketEpisode:
    """Feature 0 at bar t is the sign of the return from bar t to t+1; closes are built from those returns.

    A policy that goes long when feature 0 is +1 and stays flat when it is -1 earns `move` on every up bar;
    nothing else in the observation carries information.
    """
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(steps, n_symbols))
    returns = move * signs[:-1]
    closes = 100.0 * np.vstack([np.ones((1, n_symbols)), np.cumprod(1.0 + returns, axis=0)])
    market = np.zeros((steps, n_symbols, SYMBOL_MARKET_DIM), dtype=np.float32)
    market[:, :, 0] = signs
    market[-1, :, 0] = 0.0  # the last bar has no next return to tell
    return hand_episode(closes, symbol_market=market)


@pytest.fixture
def make_episode() -> EpisodeFactory:
    return hand_episode


@pytest.fixture
def make_planted_episode() -> Callable[[int, int, int], MarketEpisode]:
    return planted_episode
