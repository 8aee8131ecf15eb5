"""Errors of the registry package. Every error here subclasses RegistryError."""

from registry import verification


class RegistryError(Exception):
    """Base error of the registry package."""


class SigningKeyError(RegistryError):
    """A signing or trusted public key is missing, unreadable, or not an Ed25519 PEM key."""


class ManifestError(RegistryError, ValueError):
    """A manifest handed to the registry lacks a required field or contradicts the policy signature."""


class ArtifactWriteError(RegistryError):
    """A policy artifact could not be written (missing source file, unsupported module type)."""


class RegistrationError(RegistryError):
    """A policy could not be registered (bad artifact, MLflow refused a write, duplicate agent in a run)."""


class PolicyNotFoundError(RegistryError, LookupError):
    """No registered policy, version or alias matches; the message lists what does exist."""


class ArtifactVerificationError(RegistryError, verification.ArtifactVerificationError):
    """A downloaded or local artifact failed signature, hash, or expectation checks.

    Subclasses both RegistryError and the standalone verification error, so callers may catch either.
    """
