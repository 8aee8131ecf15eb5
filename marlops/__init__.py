"""marlops application layer: composes the packages into the pipeline, the serving stack, and the CLI.

Nothing here may import `orchestration` (Dagster calls into this package, never the reverse).
"""

__version__ = "0.1.0"
