"""Walk-forward SL predictions: every prediction comes from a model fitted only on labels known before its bar.

The training period's SL feature must look to the RL agents the way it will look in serving: the output of a
model that has not seen the bar it scores. In-sample predictions would be better than anything the served model
can do, and the agents would learn to trust them too much. So the model is refitted every `refit_every` bars on
an expanding window and scores only the next block. A row at bar t is labelled by bar t+1's close, so a fit
for a block starting at bar b uses the bars before b only: its last row has no label and is left out.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from features.errors import SLModelError
from features.sl_signal import fit_sl_model, predict_sl

logger = logging.getLogger(__name__)


def walk_forward_sl_probabilities(
    market_features: pd.DataFrame,
    bars: pd.DataFrame,
    *,
    min_train_bars: int,
    refit_every: int,
) -> pd.Series:
    """P(next bar up) per (timestamp, symbol) row of `market_features`; NaN for the first `min_train_bars` bars.

    Fits use `bars` strictly before each block's first timestamp, so no prediction depends on its own future.
    """
    if min_train_bars < 2 or refit_every < 1:
        raise SLModelError(f"need min_train_bars >= 2 and refit_every >= 1, got {min_train_bars}, {refit_every}")
    stamps = market_features.index.get_level_values("timestamp")
    calendar = np.sort(stamps.unique())
    out = pd.Series(np.nan, index=market_features.index, name="sl_prob_up")
    if len(calendar) <= min_train_bars:
        raise SLModelError(
            f"walk-forward SL needs more than {min_train_bars} feature bars to make a prediction, got {len(calendar)}"
        )
    refits = 0
    for start in range(min_train_bars, len(calendar), refit_every):
        block_start = calendar[start]
        block_end = calendar[min(start + refit_every, len(calendar)) - 1]
        past_rows = market_features[stamps < block_start]
        past_bars = bars[bars["timestamp"] < block_start]
        model = fit_sl_model(past_rows, past_bars)
        in_block = (stamps >= block_start) & (stamps <= block_end)
        out[in_block] = predict_sl(model, market_features[in_block])
        refits += 1
    logger.info(
        "walk-forward SL: %d refits every %d bars after %d warm-up bars, %d rows predicted",
        refits, refit_every, min_train_bars, int(out.notna().sum()),
    )
    return out
