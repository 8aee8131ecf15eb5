"""contracts.logs: JSON lines with correlation ids for machines, the usual text line on a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextvars import copy_context
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contracts.errors import ConfigError
from contracts.logs import FORMAT_ENV, configure_logging, correlation, correlation_ids, resolve_format

BAR = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _root_logger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test configures the real root logger; what it held before is put back afterwards."""
    monkeypatch.delenv(FORMAT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no project .env read
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _json_logger(stream: io.StringIO, service: str = "gateway") -> logging.Logger:
    configure_logging("info", service=service, fmt="json", stream=stream, force=True)
    return logging.getLogger("marlops.test")


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_when_json_then_one_parsable_line_with_the_fixed_fields() -> None:
    stream = io.StringIO()
    _json_logger(stream).info("routed %d orders", 3)
    (line,) = _lines(stream)
    assert line["msg"] == "routed 3 orders"
    assert (line["level"], line["logger"], line["service"], line["pid"]) == ("INFO", "marlops.test", "gateway",
                                                                             os.getpid())
    ts = datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0
    assert line["ts"].endswith("Z") and len(line["ts"].split(".")[1]) == len("123Z")
    assert not {"bar", "timestep", "client_order_id", "exc"} & set(line)


def test_log_when_inside_correlation_then_ids_carried_and_gone_after() -> None:
    stream = io.StringIO()
    log = _json_logger(stream)
    with correlation(bar=BAR, timestep="7-abc", client_order_id="mo-1"):
        log.info("inside")
    log.info("after")
    inside, after = _lines(stream)
    assert (inside["bar"], inside["timestep"], inside["client_order_id"]) == ("2024-03-01T14:30:00+00:00", "7-abc",
                                                                              "mo-1")
    assert not {"bar", "timestep", "client_order_id"} & set(after)


def test_correlation_when_nested_then_inner_adds_and_outer_restored() -> None:
    with correlation(bar=BAR, timestep="t1"):
        with correlation(client_order_id="c1"):
            assert correlation_ids() == {"bar": BAR.isoformat(), "timestep": "t1", "client_order_id": "c1"}
            with correlation(timestep="t2"):
                assert correlation_ids()["timestep"] == "t2"
            assert correlation_ids()["timestep"] == "t1"
        assert correlation_ids() == {"bar": BAR.isoformat(), "timestep": "t1"}
    assert correlation_ids() == {}


def test_correlation_when_block_raises_then_outer_ids_restored() -> None:
    with correlation(timestep="t1"):
        with pytest.raises(RuntimeError), correlation(timestep="t2"):
            raise RuntimeError("boom")
        assert correlation_ids() == {"timestep": "t1"}


def test_correlation_when_other_thread_then_not_inherited_unless_context_copied() -> None:
    seen: dict[str, dict[str, str]] = {}
    with correlation(client_order_id="c9"):
        plain = threading.Thread(target=lambda: seen.update(plain=correlation_ids()))
        context = copy_context()
        copied = threading.Thread(target=lambda: context.run(lambda: seen.update(copied=correlation_ids())))
        for thread in (plain, copied):
            thread.start()
            thread.join()
    assert seen == {"plain": {}, "copied": {"client_order_id": "c9"}}


def test_log_when_exception_then_exc_field_holds_the_traceback() -> None:
    stream = io.StringIO()
    log = _json_logger(stream)
    try:
        raise ValueError("bad fill price")
    except ValueError:
        log.exception("fill not applied")
    (line,) = _lines(stream)
    assert line["msg"] == "fill not applied" and line["level"] == "ERROR"
    assert line["exc"].startswith("Traceback") and "ValueError: bad fill price" in line["exc"]


def test_log_when_extra_fields_then_passed_through_clashes_renamed_terminal_copies_dropped() -> None:
    stream = io.StringIO()
    _json_logger(stream).info("order", extra={"symbol": "AAPL", "qty": 5, "service": "spoof", "at": BAR,
                                              "color_message": "\x1b[36morder\x1b[0m"})
    (line,) = _lines(stream)
    assert (line["symbol"], line["qty"], line["at"]) == ("AAPL", 5, str(BAR))
    assert "color_message" not in line  # uvicorn's terminal copy of msg
    assert line["service"] == "gateway" and line["extra_service"] == "spoof"


def test_log_when_text_then_human_line_with_ids_suffix_only_when_set() -> None:
    stream = io.StringIO()
    configure_logging("info", service="trade", fmt="text", stream=stream, force=True)
    log = logging.getLogger("marlops.test")
    log.info("plain")
    with correlation(bar="2024-03-01", client_order_id="c1"):
        log.warning("bound")
    plain, bound = stream.getvalue().splitlines()
    assert plain.endswith(" INFO marlops.test: plain")
    assert bound.endswith(" WARNING marlops.test: bound [bar=2024-03-01 client_order_id=c1]")
    assert not plain.lstrip().startswith("{")


def test_resolve_format_when_auto_then_text_on_a_tty_and_json_otherwise() -> None:
    assert resolve_format("auto", _Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"


def test_resolve_format_when_env_set_then_overrides_auto_not_an_explicit_choice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FORMAT_ENV, "json")
    assert resolve_format("auto", _Tty()) == "json"
    monkeypatch.setenv(FORMAT_ENV, "text")
    assert resolve_format("auto", io.StringIO()) == "text"
    assert resolve_format("json", _Tty()) == "json"


def test_resolve_format_when_dotenv_sets_format_then_used(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"{FORMAT_ENV}=json\n")
    assert resolve_format("auto", _Tty()) == "json"


def test_resolve_format_when_env_unknown_then_config_error_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FORMAT_ENV, "xml")
    with pytest.raises(ConfigError, match=FORMAT_ENV):
        resolve_format("auto", io.StringIO())


def test_configure_logging_when_called_twice_then_one_handler_replaced() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", service="a", fmt="json", stream=first, force=True)
    configure_logging("debug", service="b", fmt="json", stream=second)
    logging.getLogger("marlops.test").debug("once")
    assert first.getvalue() == "" and [line["service"] for line in _lines(second)] == ["b"]
    assert logging.getLogger().level == logging.DEBUG


def test_configure_logging_when_root_has_foreign_handler_then_left_alone_unless_forced() -> None:
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    foreign = logging.StreamHandler(io.StringIO())
    root.addHandler(foreign)
    configure_logging("info", service="a", fmt="json", stream=io.StringIO())
    assert root.handlers == [foreign]
    configure_logging("info", service="a", fmt="json", stream=io.StringIO(), force=True)
    assert foreign not in root.handlers and len(root.handlers) == 1


def test_configure_logging_when_stderr_then_lines_follow_the_current_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", service="master", fmt="json", force=True)
    logging.getLogger("marlops.test").info("to stderr")
    assert json.loads(capsys.readouterr().err)["msg"] == "to stderr"
