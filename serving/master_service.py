"""The master agent service: every K bars (or on a regime shift) turn the master policy's action into a directive."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import numpy as np

from contracts.config import LoopConfig, RiskOverlaysConfig
from contracts.decisions import MasterDirective, directive_from_preset
from contracts.policy import DIRECTIVE_MODES
from serving.client import PolicyOutput
from serving.directive_bus import DirectiveBus
from serving.errors import MasterServiceError

logger = logging.getLogger(__name__)


def directive_id_for(policy_version: str, bar_index: int) -> str:
    """Same policy version and bar -> same id, so a replayed or re-sent directive is recognisable."""
    return f"master-{policy_version}-bar{bar_index}"


class MasterAgentService:
    """Runs the master policy on its schedule and publishes the resulting MasterDirective on the bus."""

    def __init__(
        self,
        infer: Callable[[np.ndarray], PolicyOutput],
        bus: DirectiveBus,
        risk: RiskOverlaysConfig,
        *,
        every_bars: int,
        ttl_seconds: float,
        policy_version: str,
    ) -> None:
        if every_bars < 1:
            raise MasterServiceError(f"every_bars must be >= 1, got {every_bars}")
        if ttl_seconds <= 0:
            raise MasterServiceError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        if not policy_version:
            raise MasterServiceError("policy_version must name the master policy version")
        self._infer = infer
        self._bus = bus
        self._risk = risk
        self.every_bars = every_bars
        self.ttl_seconds = ttl_seconds
        self.policy_version = policy_version

    @classmethod
    def from_config(
        cls,
        infer: Callable[[np.ndarray], PolicyOutput],
        bus: DirectiveBus,
        risk: RiskOverlaysConfig,
        loop: LoopConfig,
        *,
        policy_version: str,
    ) -> MasterAgentService:
        """Schedule and TTL from config/rl/serving.yaml `loop` (TTL = directive_ttl_bars bars of market time)."""
        return cls(
            infer,
            bus,
            risk,
            every_bars=loop.master_every_bars,
            ttl_seconds=loop.directive_ttl_bars * loop.bar_seconds,
            policy_version=policy_version,
        )

    def should_act(self, bar_index: int, regime_shift: bool) -> bool:
        return regime_shift or bar_index % self.every_bars == 0

    def step(
        self, timestep: datetime, bar_index: int, master_observation: np.ndarray, regime_shift: bool
    ) -> MasterDirective | None:
        """Issue and publish a directive when due; None between scheduled bars without a regime shift."""
        if bar_index < 0:
            raise MasterServiceError(f"bar_index must be >= 0, got {bar_index}")
        if timestep.tzinfo is None:
            raise MasterServiceError(f"timestep {timestep.isoformat()} must be timezone-aware (UTC bar time)")
        if not self.should_act(bar_index, regime_shift):
            return None
        if (
            not isinstance(master_observation, np.ndarray)
            or master_observation.ndim != 2
            or master_observation.shape[0] != 1
        ):
            shape = list(getattr(master_observation, "shape", []))
            raise MasterServiceError(f"master_observation must be one row [1, M], got shape {shape}")
        output = self._infer(master_observation)
        if output.actions.shape != (1,):
            raise MasterServiceError(
                f"master policy returned actions of shape {list(output.actions.shape)}, expected [1]"
            )
        action = int(output.actions[0])
        if not 0 <= action < len(DIRECTIVE_MODES):
            raise MasterServiceError(
                f"master policy action {action} maps to no directive mode; modes are {list(DIRECTIVE_MODES)}"
            )
        mode = DIRECTIVE_MODES[action]
        preset = self._risk.directive_presets[mode]
        directive = directive_from_preset(
            directive_id=directive_id_for(self.policy_version, bar_index),
            issued_at=timestep,
            ttl_seconds=self.ttl_seconds,
            mode=mode,  # type: ignore[arg-type]  # DIRECTIVE_MODES holds exactly the DirectiveMode literals
            preset=preset,
            policy_version=self.policy_version,
        )
        self._bus.publish(directive)
        logger.info(
            "bar %d%s: master action %d -> %s directive %s (max position %.3f, risk scale %.2f)",
            bar_index,
            " (regime shift)" if regime_shift else "",
            action,
            mode,
            directive.directive_id,
            preset.max_position_size,
            preset.risk_scale,
        )
        return directive
