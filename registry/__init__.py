"""MLflow policy registry: signed TorchScript artifacts, versions, aliases, verified downloads.

Submodules are imported explicitly (`from registry.policy_registry import PolicyRegistry`) so that
`registry.verification`, which Triton models copy standalone, never drags MLflow in.
"""
