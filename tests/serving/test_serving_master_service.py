from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

from contracts.config import LoopConfig, RiskOverlaysConfig
from contracts.decisions import MasterDirective
from contracts.features import MASTER_FEATURES
from serving.client import PolicyOutput
from serving.directive_bus import InProcessDirectiveBus
from serving.errors import MasterServiceError
from serving.master_service import MasterAgentService, directive_id_for
from serving.testing import TinyPolicy
from serving.triton_runtime.policy_runtime import run_policy

START = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
M = len(MASTER_FEATURES)


def _master_policy(action: int, actions: int = 3) -> Callable[[np.ndarray], PolicyOutput]:
    """A scripted master policy whose argmax is always `action`, run in process."""
    module = TinyPolicy(M, actions)
    with torch.no_grad():
        module.linear.weight.zero_()
        module.linear.bias.copy_(torch.nn.functional.one_hot(torch.tensor(action), actions).float())
    scripted = torch.jit.script(module.eval())
    return lambda observation: PolicyOutput(*run_policy(scripted, observation))


def _service(action: int, bus: InProcessDirectiveBus, every_bars: int = 5, actions: int = 3) -> MasterAgentService:
    return MasterAgentService(
        _master_policy(action, actions),
        bus,
        RiskOverlaysConfig(),
        every_bars=every_bars,
        ttl_seconds=864000.0,
        policy_version="master-v3",
    )


def _observation() -> np.ndarray:
    return np.zeros((1, M), dtype=np.float32)


@pytest.mark.parametrize(
    ("action", "mode", "max_position_size", "risk_scale", "defensive"),
    [(0, "normal", 0.10, 1.0, False), (1, "cautious", 0.05, 0.6, False), (2, "defensive", 0.02, 0.25, True)],
)
def test_step_when_bar_on_schedule_then_action_mapped_to_preset_and_published(
    action: int, mode: str, max_position_size: float, risk_scale: float, defensive: bool
) -> None:
    bus = InProcessDirectiveBus()
    received: list[MasterDirective] = []
    bus.subscribe(received.append)
    directive = _service(action, bus).step(START, 10, _observation(), regime_shift=False)
    assert directive == MasterDirective(
        directive_id="master-master-v3-bar10",
        issued_at=START,
        ttl_seconds=864000.0,
        mode=mode,  # type: ignore[arg-type]
        max_position_size=max_position_size,
        risk_scale=risk_scale,
        defensive=defensive,
        policy_version="master-v3",
    )
    assert received == [directive]


def test_step_when_between_schedule_without_regime_shift_then_no_directive() -> None:
    bus = InProcessDirectiveBus()
    received: list[MasterDirective] = []
    bus.subscribe(received.append)
    service = _service(1, bus)
    issued = [service.step(START + timedelta(days=i), i, _observation(), regime_shift=False) for i in range(1, 5)]
    assert issued == [None, None, None, None]
    assert received == []


def test_step_when_regime_shift_off_schedule_then_directive_issued() -> None:
    bus = InProcessDirectiveBus()
    directive = _service(2, bus).step(START, 7, _observation(), regime_shift=True)
    assert directive is not None and directive.mode == "defensive"
    assert directive.directive_id == directive_id_for("master-v3", 7)


def test_step_when_same_bar_replayed_then_same_directive_id() -> None:
    first = _service(0, InProcessDirectiveBus()).step(START, 20, _observation(), regime_shift=False)
    again = _service(0, InProcessDirectiveBus()).step(START, 20, _observation(), regime_shift=False)
    assert first is not None and again is not None and first.directive_id == again.directive_id


def test_step_when_policy_has_more_actions_than_modes_then_error_names_action() -> None:
    service = _service(3, InProcessDirectiveBus(), actions=4)
    with pytest.raises(MasterServiceError, match=r"action 3 maps to no directive mode"):
        service.step(START, 0, _observation(), regime_shift=False)


@pytest.mark.parametrize(
    ("observation", "timestep", "bar_index", "reason"),
    [
        (np.zeros((2, M), np.float32), START, 0, r"one row \[1, M\], got shape \[2, 11\]"),
        (np.zeros((1, M), np.float32), START.replace(tzinfo=None), 0, "must be timezone-aware"),
        (np.zeros((1, M), np.float32), START, -5, "bar_index must be >= 0"),
    ],
)
def test_step_when_input_invalid_then_error_names_problem(
    observation: np.ndarray, timestep: datetime, bar_index: int, reason: str
) -> None:
    with pytest.raises(MasterServiceError, match=reason):
        _service(0, InProcessDirectiveBus()).step(timestep, bar_index, observation, regime_shift=False)


def test_from_config_when_loop_config_given_then_ttl_is_bars_times_bar_seconds() -> None:
    loop = LoopConfig(master_every_bars=3, directive_ttl_bars=10, bar_seconds=60.0)
    service = MasterAgentService.from_config(
        _master_policy(0), InProcessDirectiveBus(), RiskOverlaysConfig(), loop, policy_version="m1"
    )
    assert (service.every_bars, service.ttl_seconds) == (3, 600.0)
    assert service.step(START, 3, _observation(), regime_shift=False) is not None
