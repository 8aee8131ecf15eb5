"""Process logging for every marlops service: JSON lines for machines, the usual text line on a terminal.

    configure_logging("info", service="gateway")          # once, at process start
    with correlation(bar=batch.timestep, timestep=tid):   # where one bar / timestep / order is worked on
        logger.info("planned %d orders", n)               # -> carries bar= and timestep=

Format: `fmt="auto"` (the default) writes text when the log stream is a terminal and JSON lines otherwise (a
service under `make up` logs to a file: JSON). MARLOPS_LOG_FORMAT (environment or `.env`: auto | json | text)
overrides auto; an explicit `fmt="json"` / `"text"` from the caller wins over both.

JSON line fields: ts (ISO-8601 UTC, milliseconds), level, logger, msg, service, pid, then the correlation ids in
force (bar, timestep, client_order_id), exc (the formatted traceback) when the record has one, and every `extra=`
field (a field whose name clashes with one of these is kept as `extra_<name>`). Text: the usual line plus
` [bar=... timestep=... client_order_id=...]` when ids are set.

Correlation ids live in contextvars: they follow the code within one thread (and asyncio task), and do NOT flow into
a thread or a pool started elsewhere. Hand work to a pool with `contextvars.copy_context().run` or bind inside the
worker.

This module logs nothing itself (no headers, no environment): what reaches a line is what the caller logged.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import IO, Any, Literal

from contracts.errors import ConfigError

LogFormat = Literal["auto", "json", "text"]
FORMAT_ENV = "MARLOPS_LOG_FORMAT"
CORRELATION_FIELDS = ("bar", "timestep", "client_order_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_NONE: Mapping[str, str] = MappingProxyType({})
_ids: ContextVar[Mapping[str, str]] = ContextVar("marlops_correlation_ids", default=_NONE)

# Attributes every LogRecord has (plus the ones formatting adds): anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
_JSON_FIELDS = frozenset({"ts", "level", "logger", "msg", "service", "pid", "exc", "stack", *CORRELATION_FIELDS})
# Extras that only restate `msg` for a colour terminal (uvicorn's): not written.
_TERMINAL_EXTRAS = frozenset({"color_message"})


@lru_cache(maxsize=1)
def _log_settings_class() -> type:
    # Built on first use: pydantic_settings costs a light process (the master, a CLI) about 2 s of imports and
    # hundreds of modules, and only configure_logging needs it.
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class LogSettings(BaseSettings):
        """MARLOPS_LOG_FORMAT from the environment or `.env` (the environment wins)."""

        model_config = SettingsConfigDict(env_prefix="MARLOPS_LOG_", env_file=".env", env_file_encoding="utf-8",
                                          extra="ignore", frozen=True)

        format: LogFormat = "auto"

    LogSettings.__module__ = __name__
    LogSettings.__qualname__ = "LogSettings"
    return LogSettings


def __getattr__(name: str) -> Any:
    if name == "LogSettings":  # the settings class, e.g. for the every-variable-documented check
        return _log_settings_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _as_id(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


@contextmanager
def correlation(*, bar: object = None, timestep: object = None, client_order_id: object = None) -> Iterator[None]:
    """Bind correlation ids for the lines logged inside the block (this thread / task only). Ids not given keep
    their outer value; on exit the outer ids are back. `bar` may be a datetime (written as ISO-8601)."""
    given = {"bar": bar, "timestep": timestep, "client_order_id": client_order_id}
    token = _ids.set(MappingProxyType({**_ids.get(), **{k: _as_id(v) for k, v in given.items() if v is not None}}))
    try:
        yield
    finally:
        _ids.reset(token)


def correlation_ids() -> dict[str, str]:
    """The correlation ids in force here (only those set)."""
    return dict(_ids.get())


def _ids_of(record: logging.LogRecord) -> Mapping[str, str]:
    """The ids stamped on the record by CorrelationFilter, else those in force now."""
    stamped = getattr(record, "correlation", None)
    return stamped if isinstance(stamped, Mapping) else _ids.get()


class CorrelationFilter(logging.Filter):
    """Stamps the ids in force on each record as it is emitted (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(getattr(record, "correlation", None), Mapping):
            record.correlation = _ids.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for the fields)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self.service,
            "pid": record.process if record.process is not None else os.getpid(),
        }
        line.update(_ids_of(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key in _TERMINAL_EXTRAS or key == "correlation" or key.startswith("_"):
                continue
            line[f"extra_{key}" if key in _JSON_FIELDS else key] = value
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The usual human line, plus ` [bar=... timestep=... client_order_id=...]` when ids are set (the traceback,
    if any, follows on the next lines as usual)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging.Formatter's name
        ids = _ids_of(record)
        line = super().formatMessage(record)
        if not ids:
            return line
        return line + " [" + " ".join(f"{k}={ids[k]}" for k in CORRELATION_FIELDS if k in ids) + "]"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each line (like logging's last resort)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:  # StreamHandler.__init__ assigns it
        pass


def resolve_format(fmt: LogFormat, stream: IO[str]) -> Literal["json", "text"]:
    """json or text: an explicit choice wins, then MARLOPS_LOG_FORMAT (environment, `.env`), then a terminal
    (text) or not (JSON). Raises ConfigError on an unknown format."""
    if fmt not in ("auto", "json", "text"):
        raise ConfigError(f"log format {fmt!r}: must be auto, json or text")
    if fmt == "auto":
        try:
            fmt = _log_settings_class()().format
        except ValueError:  # pydantic's ValidationError
            raise ConfigError(f"{FORMAT_ENV} (environment or .env): must be auto, json or text") from None
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # no isatty, or a closed stream: not a terminal
        return "json"


def _installed(handler: logging.Handler) -> bool:
    return getattr(handler, "_marlops_logs", False) is True


def configure_logging(level: int | str, *, service: str, fmt: LogFormat = "auto", stream: IO[str] | None = None,
                      text_format: str = TEXT_FORMAT, datefmt: str | None = None, force: bool = False) -> None:
    """Set up the root logger of a service process: one handler on `stream` (default: stderr), JSON or text per
    `resolve_format`, every record stamped with the correlation ids in force.

    Like logging.basicConfig, it leaves a root logger that already has other handlers alone (e.g. under a test
    runner that captures logs) unless `force`; the handler of an earlier call is replaced, not doubled."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if _installed(h)]
    if not force and len(ours) < len(root.handlers):
        return
    target: IO[str] = stream if stream is not None else sys.stderr
    chosen = resolve_format(fmt, target)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter(service) if chosen == "json" else TextFormatter(text_format, datefmt))
    handler.addFilter(CorrelationFilter())
    handler._marlops_logs = True  # type: ignore[attr-defined]
    for old in root.handlers[:] if force else ours:
        root.removeHandler(old)
        if _installed(old):
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
