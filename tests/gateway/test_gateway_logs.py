"""Structured logs across the gateway's threads (contracts.logs): one timestep posted over HTTP to a real gateway
(uvicorn thread), planned on the request thread, its orders routed by the execution workers through alpaca-py to the
real paper exchange. The JSON lines logged meanwhile, the gateway's dependencies' included, carry the correlation ids
the audit trail holds for the same timestep and orders."""

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from gateway_builders import batch, directive

from contracts.logs import configure_logging
from gateway.directives import InProcessDirectiveSource
from gateway.serve import ServerHandle


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The process's root logger as `python -m gateway` sets it up off a terminal (JSON), into a captured stream;
    DEBUG so the broker client's request lines (urllib3, on the routing workers) are written too."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # An in-process CLI test earlier in this worker may have quietened these (the CLI sets them to WARNING).
    clients = {name: logging.getLogger(name) for name in ("urllib3", "httpx")}
    levels = {name: logger.level for name, logger in clients.items()}
    for logger in clients.values():
        logger.setLevel(logging.NOTSET)
    stream = io.StringIO()
    configure_logging(logging.DEBUG, service="gateway", fmt="json", stream=stream, force=True)
    yield stream
    for name, logger in clients.items():
        logger.setLevel(levels[name])
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_timestep_when_routed_then_log_lines_carry_the_audited_timestep_bar_and_client_order_ids(
        make_gateway: Callable[..., ServerHandle], exchange_http: httpx.Client, json_log: io.StringIO) -> None:
    exchange_http.post("/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 200.0}}).raise_for_status()
    bus = InProcessDirectiveSource()
    gateway = make_gateway(directive_source=bus)
    bus.publish(directive("normal"))
    decisions = batch({"AAPL": (1.0, 100.0), "MSFT": (-0.5, 200.0)}, bar_index=3)
    json_log.seek(0, io.SEEK_END)
    before = json_log.tell()

    answer = httpx.post(gateway.url + "/v1/decisions", params={"wait": "settled"},
                        content=decisions.model_dump_json(), headers={"content-type": "application/json"})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    lines: list[dict[str, Any]] = [json.loads(line) for line in json_log.getvalue()[before:].splitlines()]
    # What the audit trail holds for this timestep: the routed orders, their bar and their decision time.
    events = httpx.get(gateway.url + "/v1/orders", params={"limit": 50}).json()["events"]
    orders = [e["payload"] for e in events if e["kind"] == "order"]
    intents = {o["client_order_id"]: o for o in orders if o["status"] == "intent"}
    assert set(intents) == {o["client_order_id"] for o in body["orders"]} and len(intents) == 2
    assert {o["bar_index"] for o in intents.values()} == {3}
    (audited_bar,) = {datetime.fromisoformat(o["timestep"].replace("Z", "+00:00")) for o in intents.values()}

    # Each order's submit (alpaca-py -> urllib3 on a routing worker thread) is logged with its own id, the
    # timestep id the gateway answered with, and the bar.
    submits = [line for line in lines if line["logger"] == "urllib3.connectionpool" and "POST /v2/orders" in line["msg"]]
    assert sorted(line.get("client_order_id", "<none>") for line in submits) == sorted(intents)
    for line in submits:
        assert line.get("timestep") == body["timestep_id"] and line["service"] == "gateway"
        assert "bar" in line and datetime.fromisoformat(line["bar"]) == audited_bar == decisions.timestep
    # The ids do not leak: the test's own client thread logged its request without any.
    client = [line for line in lines if line["logger"] == "httpx" and "/v1/decisions" in line["msg"]]
    assert client and all(not {"bar", "timestep", "client_order_id"} & set(line) for line in client)
