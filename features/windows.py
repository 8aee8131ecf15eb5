"""Trailing-window statistics with a fixed summation order.

pandas' rolling mean/std update a running sum as the window slides, so the value at bar t depends on
where the frame starts. The feature service computes on a short trailing window while training uses the
whole history; for the two to agree bit for bit every statistic here is a fixed-order sum over exactly
the window's values (oldest to newest), independent of how many rows came before.
Arrays are 2-D (time, column); the first `window - 1` rows are NaN; any NaN inside a window gives NaN.
"""

from __future__ import annotations

import numpy as np


def lag(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted down by k rows (row t holds x[t-k]); the first k rows are NaN."""
    out = np.full_like(x, np.nan, dtype=np.float64)
    if k < len(x):
        out[k:] = x[: len(x) - k]
    return out


def rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    n = len(x)
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if n < window:
        return out
    acc = np.zeros((n - window + 1,) + x.shape[1:], dtype=np.float64)
    for j in range(window):
        acc = acc + x[j : n - window + 1 + j]
    out[window - 1 :] = acc
    return out


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    return rolling_sum(x, window) / window


def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Sample standard deviation (ddof=1), two-pass for accuracy."""
    n = len(x)
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if n < window:
        return out
    mean = rolling_mean(x, window)[window - 1 :]
    acc = np.zeros_like(mean)
    for j in range(window):
        d = x[j : n - window + 1 + j] - mean
        acc = acc + d * d
    out[window - 1 :] = np.sqrt(acc / (window - 1))
    return out


def row_sum_over_columns(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-row sum of the valid entries, left to right. Adding an exact 0.0 for invalid entries leaves the
    sum bit-identical to summing the valid ones alone, so extra all-NaN columns change nothing."""
    acc = np.zeros(x.shape[0], dtype=np.float64)
    for j in range(x.shape[1]):
        acc = acc + np.where(valid[:, j], x[:, j], 0.0)
    return acc
