"""One Great Expectations ephemeral context per process, created on first use (GX takes seconds to import)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_context: Any = None
_validations: dict[Hashable, Any] = {}
_DATASOURCE = "marlops_frames"


def get_context() -> Any:
    global _context
    with _lock:
        if _context is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            context.data_sources.add_pandas(_DATASOURCE)
            _context = context
            logger.info("great expectations %s context ready", gx.__version__)
        return _context


def validation_for(key: Hashable, name: str, build_expectations: Callable[[], list[Any]]) -> Any:
    """The validation definition for `key`, built once: a whole-dataframe batch + the given expectations."""
    context = get_context()
    with _lock:
        if key in _validations:
            return _validations[key]
        import great_expectations as gx

        asset = context.data_sources.get(_DATASOURCE).add_dataframe_asset(f"{name}_{len(_validations)}")
        batch = asset.add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_{len(_validations)}", expectations=build_expectations()))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_{len(_validations)}", data=batch, suite=suite)
        )
        _validations[key] = validation
        return validation


def run_validation(validation: Any, frame: pd.DataFrame) -> Any:
    """Run on `frame` (positional RangeIndex expected) with COMPLETE results: unexpected index lists = row numbers."""
    with _lock:
        return validation.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"})
