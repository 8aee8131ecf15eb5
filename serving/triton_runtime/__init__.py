"""Templates copied into every exported Triton model version folder.

`model.py` runs only inside Triton's python backend; `policy_runtime.py` and `errors.py` are plain
Python, importable here for unit tests and copied next to `model.py` (with registry/verification.py)
by `serving.model_repository.export_policy`, so a model folder is self-contained.
"""
