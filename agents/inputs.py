"""Checks on the arrays handed to environments, training and evaluation; errors name the array and the fault."""

import numpy as np

from contracts.features import (
    MASTER_MARKET_FEATURES,
    PORTFOLIO_FEATURES,
    SYMBOL_FEATURES,
    master_market_names,
    symbol_market_names,
)

from agents.errors import InputShapeError

# HybridRLObservation v1's widths (the default); other versions: market_dims(version).
SYMBOL_MARKET_DIM = len(SYMBOL_FEATURES) - len(PORTFOLIO_FEATURES)
MASTER_MARKET_DIM = len(MASTER_MARKET_FEATURES)


def market_dims(observation_version: int) -> tuple[int, int]:
    """(symbol market width, master market width) of a HybridRLObservation version: what the feature service
    fills, i.e. the observation less the portfolio features the environment appends."""
    try:
        return len(symbol_market_names(observation_version)), len(master_market_names(observation_version))
    except ValueError as exc:
        raise InputShapeError(str(exc)) from exc


def as_float_array(name: str, value: object, shape: tuple[int | None, ...], axes: tuple[str, ...]) -> np.ndarray:
    """Return `value` as a finite float array of `shape` (None = any size >= 1)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputShapeError(f"{name}: not a numeric array ({exc})") from exc
    expected = "[" + ", ".join(f"{axis}={size if size is not None else '*'}" for axis, size in zip(axes, shape)) + "]"
    if array.ndim != len(shape):
        raise InputShapeError(f"{name}: expected {len(shape)} dimensions {expected}, got shape {array.shape}")
    for axis, (size, got) in enumerate(zip(shape, array.shape)):
        if got == 0:
            raise InputShapeError(f"{name}: axis {axes[axis]} is empty (shape {array.shape})")
        if size is not None and got != size:
            raise InputShapeError(
                f"{name}: axis {axes[axis]} has size {got}, expected {size} {expected}; got shape {array.shape}"
            )
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputShapeError(
            f"{name}: {int(bad.sum())} non-finite value(s), first at index {first} "
            f"({', '.join(f'{a}={i}' for a, i in zip(axes, first))})"
        )
    return array


def check_market_inputs(
    symbol_market: object, forward_returns: object, *, market_dim: int = SYMBOL_MARKET_DIM
) -> tuple[np.ndarray, np.ndarray]:
    """Validate `symbol_market [T, N, Dm]` and `forward_returns [T, N]` together."""
    market = as_float_array("symbol_market", symbol_market, (None, None, market_dim), ("T", "N", "Dm"))
    steps, symbols, _ = market.shape
    returns = as_float_array("forward_returns", forward_returns, (steps, symbols), ("T", "N"))
    if (returns <= -1.0).any():
        first = tuple(int(i) for i in np.argwhere(returns <= -1.0)[0])
        raise InputShapeError(f"forward_returns: value <= -1 (a loss beyond 100%) at index {first} (T, N)")
    return market, returns


def check_master_market(master_market: object, steps: int, *, market_dim: int = MASTER_MARKET_DIM) -> np.ndarray:
    return as_float_array("master_market", master_market, (steps, market_dim), ("T", "Mm"))


def check_action_levels(action_levels: object) -> np.ndarray:
    levels = as_float_array("action_levels", action_levels, (None,), ("A",))
    if levels.size < 2:
        raise InputShapeError(f"action_levels: need at least 2 levels, got {levels.tolist()}")
    if (np.abs(levels) > 1.0).any():
        raise InputShapeError(f"action_levels: every level must lie in [-1, 1], got {levels.tolist()}")
    return levels
