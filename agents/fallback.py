"""SL-threshold fallback: a rule policy on the SL model's P(up), served exactly like the learned symbol agent.

Rule, per symbol: P(up) >= buy_threshold -> buy_level; P(up) <= sell_threshold -> level 0 (flat); otherwise
hold the current level, i.e. the action level nearest to `position_level` (a tie goes to the lower level).

The module reads the normalised observation x = float32(clip((raw - mean) / std, -clip, clip)) and never
un-normalises in float32. Each threshold, and each midpoint between adjacent levels, is normalised once in
float64 with the expression the ObservationBuilder uses and cast once to float32; the forward pass only
compares float32 values with these bounds, which is exact on every device. Because the float64 z-score and
the float32 cast are both monotone, a raw value exactly at a threshold lands on its bound and takes that
threshold's action. What the bounds cannot restore is resolution finer than one float32 step of the
normalised value: a raw value within that step below a threshold can round onto it.

`sl_threshold_actions(..., spec=spec)` normalises raw values the same way and compares with the same bounds,
so it equals the module bit for bit; without `spec` it is the rule on the raw values.

Clipping: a clipped value only says that the raw value lies beyond mean +/- clip * std. The module compares
what the observation can vouch for, mean + std * x, with the thresholds (un-clipped bounds), so the SL
probability it acts on is approximate once clipped. For thresholds inside the clip range clipping never
changes a decision; a threshold outside it lies on one side of every possible observation, so that side of
the rule fires always or never (`sl_threshold_policy` logs a warning).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from torch import Tensor, nn

from contracts.features import PORTFOLIO_FEATURES, SL_FEATURES, FeatureSpec
from contracts.policy import DEFAULT_ACTION_LEVELS

from agents.errors import FallbackConfigError
from agents.inputs import as_float_array, check_action_levels

logger = logging.getLogger(__name__)

SL_FEATURE = SL_FEATURES[0]
POSITION_FEATURE = PORTFOLIO_FEATURES[0]
FLAT_LEVEL = 0.0


@dataclass(frozen=True)
class FeatureScale:
    """Where one feature sits in the observation row and the z-score constants it was normalised with."""

    index: int
    mean: float
    std: float

    def normalised(self, raw: np.ndarray) -> np.ndarray:
        """float64 z-score, written as ObservationBuilder writes it so that both round alike."""
        return (np.asarray(raw, dtype=np.float64) - self.mean) / self.std


@dataclass(frozen=True)
class SLThresholdRule:
    """The validated rule: thresholds on P(up) and action indices into `action_levels`."""

    buy_threshold: float
    sell_threshold: float
    buy_action: int
    action_levels: tuple[float, ...] = DEFAULT_ACTION_LEVELS

    def __post_init__(self) -> None:
        buy, sell = self.buy_threshold, self.sell_threshold
        if not (np.isfinite(buy) and np.isfinite(sell)):
            raise FallbackConfigError(f"thresholds must be finite, got buy_threshold={buy}, sell_threshold={sell}")
        if not 0.0 <= sell < buy <= 1.0:
            raise FallbackConfigError(
                f"thresholds must satisfy 0 <= sell_threshold < buy_threshold <= 1, "
                f"got sell_threshold={sell}, buy_threshold={buy}"
            )
        levels = check_action_levels(self.action_levels)
        if not (np.diff(levels) > 0).all():
            raise FallbackConfigError(f"action_levels must be strictly increasing, got {levels.tolist()}")
        if FLAT_LEVEL not in self.action_levels:
            raise FallbackConfigError(f"action_levels must contain the flat level 0.0, got {levels.tolist()}")
        if not 0 <= self.buy_action < len(self.action_levels):
            raise FallbackConfigError(
                f"buy_action {self.buy_action} is not an index into {len(self.action_levels)} action levels"
            )

    @classmethod
    def from_levels(
        cls,
        *,
        buy_threshold: float,
        sell_threshold: float,
        buy_level: float,
        action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
    ) -> "SLThresholdRule":
        levels = tuple(float(level) for level in action_levels)
        if float(buy_level) not in levels:
            raise FallbackConfigError(f"buy_level {buy_level} is not one of action_levels {list(levels)}")
        return cls(float(buy_threshold), float(sell_threshold), levels.index(float(buy_level)), levels)

    @property
    def flat_action(self) -> int:
        return self.action_levels.index(FLAT_LEVEL)

    def level_midpoints(self) -> np.ndarray:
        """float64 [A - 1]: a held level above midpoint i is nearer to level i + 1 than to level i."""
        levels = np.asarray(self.action_levels, dtype=np.float64)
        return (levels[:-1] + levels[1:]) / 2.0

    def normalised_bounds(self, sl: FeatureScale, position: FeatureScale) -> tuple[np.ndarray, np.ndarray]:
        """float32 ([sell, buy] bounds of the normalised SL feature, [A - 1] normalised level midpoints)."""
        thresholds = np.array([self.sell_threshold, self.buy_threshold], dtype=np.float64)
        sl_bounds = sl.normalised(thresholds).astype(np.float32)
        return sl_bounds, position.normalised(self.level_midpoints()).astype(np.float32)

    def decide(self, sl: np.ndarray, held: np.ndarray, sl_bounds: np.ndarray, midpoints: np.ndarray) -> np.ndarray:
        """int64 [N] actions; operands and bounds share one dtype and one scale (raw or normalised)."""
        hold = (held[:, None] > midpoints[None, :]).sum(axis=1)
        flat_or_hold = np.where(sl <= sl_bounds[0], self.flat_action, hold)
        return np.where(sl >= sl_bounds[1], self.buy_action, flat_or_hold).astype(np.int64)


class SLThresholdPolicy(nn.Module):
    """Rule policy: P(up) >= buy_threshold -> buy_level; P(up) <= sell_threshold -> level 0 (flat); otherwise
    hold the current level (the action level nearest to position_level).

    Same serving contract as PolicyNet: observations [B, obs_dim] float32 -> (one-hot probabilities [B, A]
    float32 of the chosen action, action [B] int64). No parameters, only float32 bound buffers.
    """

    # The rule is plain Python for callers of the eager module; the scripted graph needs only the buffers.
    __jit_ignored_attributes__ = ["rule"]

    # Plain attributes, not Final: TorchScript writes Final constants in set order, which follows the
    # process's hash seed, so the archive's bytes would change from one process to the next.
    obs_dim: int
    n_actions: int
    sl_index: int
    position_index: int
    buy_action: int
    flat_action: int

    def __init__(
        self,
        obs_dim: int,
        sl_feature: FeatureScale,
        position_feature: FeatureScale,
        *,
        buy_threshold: float,
        sell_threshold: float,
        buy_level_index: int,
        action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
    ) -> None:
        super().__init__()
        rule = SLThresholdRule(
            float(buy_threshold), float(sell_threshold), buy_level_index, tuple(float(v) for v in action_levels)
        )
        _check_layout(obs_dim, sl_feature, position_feature)
        sl_bounds, midpoints = rule.normalised_bounds(sl_feature, position_feature)
        self.rule = rule
        self.obs_dim = obs_dim
        self.n_actions = len(rule.action_levels)
        self.sl_index = sl_feature.index
        self.position_index = position_feature.index
        self.buy_action = rule.buy_action
        self.flat_action = rule.flat_action
        self.register_buffer("sl_bounds", torch.from_numpy(sl_bounds.copy()))
        self.register_buffer("level_midpoints", torch.from_numpy(midpoints.copy()))

    def forward(self, observations: Tensor) -> Tuple[Tensor, Tensor]:
        # The check lives inside the scripted graph, so Triton callers get the same message.
        if observations.dim() != 2 or observations.size(1) != self.obs_dim:
            raise RuntimeError(
                "SLThresholdPolicy expects observations of shape [batch, "
                + str(self.obs_dim)
                + "], got "
                + str(observations.shape)
            )
        # Bounds are float32 and compared exactly; any other dtype would compare after a silent promotion.
        if observations.dtype != torch.float32:
            raise RuntimeError("SLThresholdPolicy expects float32 observations; convert the batch with .float()")
        # Without parameters a runtime cannot tell the module's device; follow the input's instead.
        sl_bounds = self.sl_bounds.to(observations.device)
        midpoints = self.level_midpoints.to(observations.device)
        sl = observations[:, self.sl_index]
        held = observations[:, self.position_index]
        hold = (held.unsqueeze(1) > midpoints.unsqueeze(0)).sum(dim=1)
        flat_or_hold = torch.where(sl <= sl_bounds[0], torch.full_like(hold, self.flat_action), hold)
        action = torch.where(sl >= sl_bounds[1], torch.full_like(hold, self.buy_action), flat_or_hold)
        probabilities = nn.functional.one_hot(action, self.n_actions).to(torch.float32)
        return probabilities, action


def sl_threshold_policy(
    spec: FeatureSpec,
    *,
    buy_threshold: float,
    sell_threshold: float,
    buy_level: float = 1.0,
    action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
) -> SLThresholdPolicy:
    """The fallback for observations built with `spec` (its symbol block: order and z-score constants)."""
    rule = SLThresholdRule.from_levels(
        buy_threshold=buy_threshold, sell_threshold=sell_threshold, buy_level=buy_level, action_levels=action_levels
    )
    sl, position = _spec_scales(spec)
    for name, threshold in (("buy_threshold", rule.buy_threshold), ("sell_threshold", rule.sell_threshold)):
        z = float(sl.normalised(np.array(threshold)))
        if abs(z) > spec.clip:
            logger.warning(
                "%s %.6g normalises to %.3g, beyond the observation clip +/-%g: every observation lies on one "
                "side of it, so that side of the rule fires always or never",
                name, threshold, z, spec.clip,
            )
    return SLThresholdPolicy(
        len(spec.symbol.names),
        sl,
        position,
        buy_threshold=rule.buy_threshold,
        sell_threshold=rule.sell_threshold,
        buy_level_index=rule.buy_action,
        action_levels=rule.action_levels,
    )


def sl_threshold_actions(
    sl_probabilities: np.ndarray,
    held_levels: np.ndarray,
    *,
    buy_threshold: float,
    sell_threshold: float,
    buy_level: float = 1.0,
    action_levels: Sequence[float] = DEFAULT_ACTION_LEVELS,
    spec: FeatureSpec | None = None,
) -> np.ndarray:
    """Reference in numpy: int64 [N] action indices from raw P(up) [N] and raw held levels [N].

    With `spec`, the raw values go through the observation's normalisation (float64 z-score, clip, float32)
    first and meet the module's float32 bounds: the result then equals SLThresholdPolicy on the observations
    built from the same raw values, bit for bit.
    """
    probabilities = as_float_array("sl_probabilities", sl_probabilities, (None,), ("N",))
    held = as_float_array("held_levels", held_levels, (len(probabilities),), ("N",))
    rule = SLThresholdRule.from_levels(
        buy_threshold=buy_threshold, sell_threshold=sell_threshold, buy_level=buy_level, action_levels=action_levels
    )
    if spec is None:
        raw_bounds = np.array([rule.sell_threshold, rule.buy_threshold], dtype=np.float64)
        return rule.decide(probabilities, held, raw_bounds, rule.level_midpoints())
    sl, position = _spec_scales(spec)
    sl_bounds, midpoints = rule.normalised_bounds(sl, position)
    clip = float(spec.clip)
    sl_obs = np.clip(sl.normalised(probabilities), -clip, clip).astype(np.float32)
    held_obs = np.clip(position.normalised(held), -clip, clip).astype(np.float32)
    return rule.decide(sl_obs, held_obs, sl_bounds, midpoints)


def _spec_scales(spec: FeatureSpec) -> tuple[FeatureScale, FeatureScale]:
    block = spec.symbol
    missing = [name for name in (SL_FEATURE, POSITION_FEATURE) if name not in block.names]
    if missing:
        raise FallbackConfigError(
            f"feature spec symbol block lacks {missing} (has {list(block.names)}); the SL-threshold "
            "fallback reads the SL probability and the held position level"
        )
    scales = []
    for name in (SL_FEATURE, POSITION_FEATURE):
        index = block.names.index(name)
        scales.append(FeatureScale(index=index, mean=float(block.means[index]), std=float(block.stds[index])))
    return scales[0], scales[1]


def _check_layout(obs_dim: int, sl: FeatureScale, position: FeatureScale) -> None:
    if obs_dim < 1:
        raise FallbackConfigError(f"obs_dim must be >= 1, got {obs_dim}")
    for name, scale in (("SL feature", sl), ("position feature", position)):
        if not 0 <= scale.index < obs_dim:
            raise FallbackConfigError(f"{name} index {scale.index} is outside an observation of {obs_dim} features")
        if not (np.isfinite(scale.mean) and np.isfinite(scale.std) and scale.std > 0):
            raise FallbackConfigError(f"{name} needs a finite mean and a finite std > 0, got {scale}")
    if sl.index == position.index:
        raise FallbackConfigError(f"SL feature and position feature share observation index {sl.index}")
