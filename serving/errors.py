"""Errors of the serving package. Every error raised here is a ServingError."""


class ServingError(Exception):
    """Base error of the serving package."""


class TritonNotFoundError(ServingError):
    """The `tritonserver` binary of the nvidia-pytriton wheel is not installed."""


class TritonStartError(ServingError):
    """tritonserver exited or did not become ready; the message carries the log tail."""


class TritonUnavailableError(ServingError):
    """tritonserver is not started, has exited, or does not answer its HTTP endpoint."""


class ModelLoadError(ServingError):
    """Triton refused to load (or unload) a model; the message carries the server's reason."""


class ExportError(ServingError):
    """A policy could not be exported into the Triton model repository."""


class ArtifactRejectedError(ExportError):
    """The artifact failed signature, hash or feature-spec verification and was not exported."""


class InferenceError(ServingError):
    """An inference request failed or its answer broke the policy contract."""


class DirectiveBusError(ServingError):
    """The directive bus cannot publish or subscribe (e.g. Redis unreachable)."""


class MasterServiceError(ServingError):
    """The master agent produced something that maps to no directive."""
