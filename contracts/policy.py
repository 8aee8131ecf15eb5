from typing import Literal

from pydantic import Field

from contracts.base import Frozen

# sl_fallback: the SL-threshold rule policy, served like the others so the gateway can revert to it.
AgentName = Literal["symbol_agent", "master_agent", "sl_fallback"]
AGENT_NAMES: tuple[str, ...] = ("symbol_agent", "master_agent", "sl_fallback")

# Target position levels of the symbol agent, as fractions of the per-symbol cap.
DEFAULT_ACTION_LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
# Directive modes of the master agent, index = action.
DIRECTIVE_MODES: tuple[str, ...] = ("normal", "cautious", "defensive")


class TensorSpec(Frozen):
    name: str
    dtype: Literal["FP32", "INT64"]
    dims: tuple[int, ...]  # without the batch dimension


class PolicySignature(Frozen):
    """The serving contract of one exported policy."""

    agent: AgentName
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    feature_spec_hash: str = Field(min_length=64, max_length=64)
    action_labels: tuple[str, ...]


class PolicyRef(Frozen):
    agent: AgentName
    version: str
