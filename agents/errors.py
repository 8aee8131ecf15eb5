"""Errors of the agents package. Every message names what is wrong (array, shape, value)."""


class AgentError(Exception):
    """Base error of the agents package."""


class InputShapeError(AgentError, ValueError):
    """An input array has the wrong rank, shape or dtype, or holds non-finite values.

    Also a ValueError, so pydantic validators that call the checks report it as a validation error.
    """


class EnvironmentStateError(AgentError):
    """An environment was used out of order (step before reset, step after the episode ended)."""


class InvalidActionError(AgentError, ValueError):
    """An action index or directive mode is outside the allowed set."""


class ExportError(AgentError):
    """A policy could not be scripted, or its scripted form disagrees with the eager module."""


class FallbackConfigError(AgentError, ValueError):
    """A rule (fallback) policy was configured with inconsistent thresholds, levels or feature spec."""
