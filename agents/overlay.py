"""Master overlay and cost rules used by the simulator.

They mirror the gateway's rules in gateway.domain (overlay.apply_overlay, risk.leverage_scale,
costs.cost_rate): effective weight = level * min(cap, preset.max_position_size) * preset.risk_scale;
defensive presets may only shrink exposure; gross leverage scales exposure increases; costs per unit of
traded weight. Vectorised over symbols here, and the cost rate is gateway.domain's own function, so a
backtest and the gateway charge the same.
"""

import numpy as np

from contracts.config import DirectivePreset, RiskOverlaysConfig
from contracts.policy import DIRECTIVE_MODES
from gateway.domain.costs import cost_rate

from agents.errors import InvalidActionError

__all__ = ["cost_rate", "directive_preset", "directive_mode_for_action", "leverage_limited", "target_weights"]


def directive_preset(risk: RiskOverlaysConfig, mode: str) -> DirectivePreset:
    if mode not in risk.directive_presets:
        raise InvalidActionError(
            f"unknown directive mode {mode!r}; expected one of {sorted(risk.directive_presets)}"
        )
    return risk.directive_presets[mode]


def directive_mode_for_action(action: int) -> str:
    if not 0 <= action < len(DIRECTIVE_MODES):
        raise InvalidActionError(
            f"master action {action} out of range; expected 0..{len(DIRECTIVE_MODES) - 1} for {DIRECTIVE_MODES}"
        )
    return DIRECTIVE_MODES[action]


def leverage_limited(previous_weights: np.ndarray, planned_weights: np.ndarray, max_gross_leverage: float) -> np.ndarray:
    """Scale every exposure *increase* by one common factor so gross exposure stays within the limit.

    Same rule as the gateway (gateway.domain.risk.leverage_scale): the part of a position that survives
    the move ("kept") is never cut; only the exposure a move adds is scaled, and reductions pass.
    """
    same_side = (previous_weights != 0.0) & (planned_weights != 0.0) & ((previous_weights > 0) == (planned_weights > 0))
    kept = np.where(same_side, np.minimum(np.abs(previous_weights), np.abs(planned_weights)), 0.0)
    increase = np.maximum(0.0, np.abs(planned_weights) - kept)
    total_increase = float(increase.sum())
    total_kept = float(kept.sum())
    if total_increase <= 0.0 or total_kept + total_increase <= max_gross_leverage * (1 + 1e-12):
        return planned_weights
    factor = min(1.0, max(0.0, (max_gross_leverage - total_kept) / total_increase))
    scaled = np.sign(planned_weights) * (kept + factor * increase)
    return np.where(increase > 0.0, scaled, planned_weights)


def target_weights(
    levels: np.ndarray, previous_weights: np.ndarray, risk: RiskOverlaysConfig, mode: str
) -> np.ndarray:
    """Weights (fractions of equity) the portfolio holds after applying the directive to `levels`.

    Not simulated (the gateway does them on share quantities): whole-share rounding and the minimum
    order notional.
    """
    preset = directive_preset(risk, mode)
    size = min(risk.per_symbol_cap, preset.max_position_size) * preset.risk_scale
    weights = np.asarray(levels, dtype=np.float64) * size
    if preset.defensive:
        # Defensive: a position may move toward zero, never away from it (no new exposure, no flip).
        weights = np.clip(weights, np.minimum(previous_weights, 0.0), np.maximum(previous_weights, 0.0))
    return leverage_limited(previous_weights, weights, risk.max_gross_leverage)
