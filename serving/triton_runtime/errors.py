"""Errors of the Triton model runtime. Standalone (no project imports): copied into model folders."""


class PolicyRuntimeError(Exception):
    """Base error of the Triton model runtime."""


class PolicyLoadError(PolicyRuntimeError):
    """The policy could not be verified or loaded; Triton reports this message as the load failure."""


class PolicyInputError(PolicyRuntimeError):
    """An observation batch is malformed (shape, dtype, non-finite values); the request is answered with it."""


class PolicyOutputError(PolicyRuntimeError):
    """The TorchScript module returned something that breaks the policy contract."""
