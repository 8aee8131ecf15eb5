"""Fuzz the gateway's OpenAPI with schemathesis against a REAL running gateway (no 5xx, ever).

Paper exchange and gateway run in uvicorn threads; every request carries an admin token, so
bodies get past authentication and reach validation and the service. Schemathesis draws valid and
invalid requests for every operation (examples, coverage and fuzzing phases), derandomized so a
failure reproduces. Checks: no server error, the status code and content type are documented, and
the body conforms to the documented schema.
"""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contracts.config import RiskOverlaysConfig
from gateway.app import create_app
from paper_exchange.app import create_paper_exchange_app
from gateway.serve import ServerHandle, serve_app_in_thread
from gateway.settings import ApiToken, GatewaySettings
from gateway.tokens import hash_token

ADMIN_TOKEN = "fuzz-admin-token"
ADMIN = ApiToken(principal="ada", role="admin", token_sha256=hash_token(ADMIN_TOKEN))
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES = 25  # per operation and mode: ~450 requests in all (derandomized: the same cases each run)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with serve_app_in_thread(create_paper_exchange_app(initial_cash=1_000_000.0)) as exchange:
        httpx.post(exchange.url + "/_sim/prices", json={"prices": {"AAPL": 100.0, "MSFT": 200.0}},
                   headers={"APCA-API-KEY-ID": "marlops-paper", "APCA-API-SECRET-KEY": "marlops-paper-secret"},
                   ).raise_for_status()
        audit = Path(tmp_path_factory.mktemp("fuzz")) / "audit.db"
        settings_ = GatewaySettings(risk=RiskOverlaysConfig(), audit_url=f"sqlite:///{audit}",
                                    broker_base_url=exchange.url, fill_wait_s=0.0, api_tokens=(ADMIN,))
        with serve_app_in_thread(create_app(settings_)) as gateway:
            yield gateway


@pytest.fixture(scope="module")
def gateway_schema(fuzzed_gateway: ServerHandle) -> schemathesis.BaseSchema:
    # The schema as the running gateway serves it, so what is fuzzed is what clients see.
    schema = schemathesis.openapi.from_url(fuzzed_gateway.url + "/openapi.json")
    schema.config.update(base_url=fuzzed_gateway.url)
    return schema


def documented_operations() -> dict[tuple[str, str], bool]:
    """(METHOD, path) of every operation in the gateway's schema -> whether it takes any input
    (building the app starts nothing)."""
    app = create_app(GatewaySettings(risk=RiskOverlaysConfig(), broker_base_url="http://127.0.0.1:9"))
    return {(m.upper(), p): bool(op.get("parameters") or op.get("requestBody"))
            for p, ops in sorted(app.openapi()["paths"].items()) for m, op in ops.items()}


OPERATIONS = documented_operations()
# Lookups of a resource by id: valid random ids name nothing, so their valid answer is the documented 404.
LOOKUPS = {("GET", "/v1/timesteps/{timestep_id}")}
# Invalid input can only be drawn for an operation that takes some.
CASES = [(key, mode) for key, takes_input in OPERATIONS.items()
         for mode in (GenerationMode.POSITIVE, *((GenerationMode.NEGATIVE,) if takes_input else ()))]


def test_fuzzed_operations_when_served_schema_read_then_same_as_documented(
    gateway_schema: schemathesis.BaseSchema,
) -> None:
    served = sorted((op.method.upper(), op.path) for op in (r.ok() for r in gateway_schema.get_all_operations()))
    assert served == sorted(OPERATIONS) and len(served) >= 18


@pytest.mark.parametrize(("key", "mode"), CASES, ids=[f"{k[0]} {k[1]} {m.value}" for k, m in CASES])
def test_gateway_api_when_fuzzed_then_no_server_error_and_responses_documented(
    gateway_schema: schemathesis.BaseSchema, key: tuple[str, str], mode: GenerationMode
) -> None:
    method, path = key
    operation = gateway_schema[path][method]
    statuses: list[int] = []

    # derandomize: the same examples every run, so a failure reproduces (and prints the request).
    @given(case=operation.as_strategy(generation_mode=mode, headers=AUTH))
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    def exercise(case: schemathesis.Case) -> None:
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "principal" in case.body:
            # The principal must be the token's; make it so, or only the 403 path would be
            # exercised (that path has its own tests in test_gateway_rbac.py).
            case.body["principal"] = ADMIN.principal
        statuses.append(case.call_and_validate(headers=AUTH, checks=CHECKS).status_code)

    exercise()
    # The run reached the service (valid input served) or its validation (invalid input refused).
    if mode is GenerationMode.POSITIVE and key in LOOKUPS:
        assert set(statuses) <= {200, 404} and 404 in statuses, statuses
    elif mode is GenerationMode.POSITIVE:
        assert any(200 <= code < 300 for code in statuses), statuses
    else:
        assert any(400 <= code < 500 for code in statuses), statuses
