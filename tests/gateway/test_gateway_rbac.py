"""Roles: every route the gateway serves has a rule in ROUTE_ROLES, and a real gateway enforces it.

One gateway (real paper exchange, alpaca-py, SQLite audit) with one token per role. Each refused
call is checked for having no side effect: same audit rows, same trading state, no order at the
exchange. Also the tokens file (hashed only) and the `marlops token` commands.
"""

import argparse
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from gateway_builders import PAPER_HEADERS, batch, directive

from contracts.config import RiskOverlaysConfig
from gateway.engine.timestep import timestep_id
from gateway.api.roles import ROUTE_ROLES, guard_key
from gateway.app import create_app
from paper_exchange.app import create_paper_exchange_app
from gateway.serve import ServerHandle, serve_app_in_thread
from gateway.settings import ROLES, ApiToken, GatewaySettings, Role
from gateway.token_file import TokenFileError, load_tokens
from gateway.tokens import hash_token
from marlops.token_cli import add_token_parser, run_token

# One token per role; the principal is what a body's "principal" must match.
PRINCIPALS: dict[Role, str] = {"viewer": "vera", "trader": "tom", "risk_officer": "rita", "admin": "ada"}
TOKENS: dict[Role, str] = {role: f"test-token-{role}" for role in ROLES}
GRANTS = tuple(ApiToken(principal=PRINCIPALS[r], role=r, token_sha256=hash_token(TOKENS[r])) for r in ROLES)

# Where the refused action WOULD change something, so "nothing changed" means something.
HALTING_ROUTES = {("POST", "/v1/kill-switch"), ("POST", "/v1/reduce-only"), ("POST", "/v1/flatten")}
PRECONDITION_STATE: dict[tuple[str, str], str] = {("POST", "/v1/resume"): "HALTED"}
# The timestep id is the one of bar 0, which the stack fixture decides (bars 1.. are the tests').
PATH_EXAMPLES = {"asset": "console.js", "timestep_id": timestep_id(batch({"AAPL": (0.0, 100.0)}, bar_index=0))}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Stack:
    app: FastAPI
    gateway: ServerHandle
    exchange: httpx.Client
    http: httpx.Client  # one client: a fresh one per call costs ~0.1 s of setup
    bar_index: int = 0

    @property
    def url(self) -> str:
        return self.gateway.url

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, self.url + path, headers=bearer(TOKENS["admin"]), **kwargs)

    def next_bar(self) -> int:
        self.bar_index += 1
        return self.bar_index


def _operator_body(principal: str, _stack: Stack) -> dict[str, Any]:
    return {"principal": principal, "reason": "rbac test"}


def _decisions_body(_principal: str, stack: Stack) -> dict[str, Any]:
    # A fresh bar each call (an allowed call decides it), with the target flipping long/short so
    # every allowed call trades; the directive live at that bar is posted by the test beforehand
    # (see live_directive), so the decision is not vetoed by the defensive fallback.
    bar = stack.next_bar()
    return batch({"AAPL": (1.0 if bar % 2 else -1.0, 100.0)}, bar_index=bar).model_dump(mode="json")


def _directive_body(_principal: str, stack: Stack) -> dict[str, Any]:
    return directive(directive_id=f"d-rbac-{stack.next_bar()}").model_dump(mode="json")


# A valid body per POST route, made for the caller (its principal) and the moment (its bar).
BODIES: dict[tuple[str, str], Callable[[str, Stack], dict[str, Any]]] = {
    ("POST", "/v1/decisions"): _decisions_body,
    ("POST", "/v1/directives"): _directive_body,
    ("POST", "/v1/kill-switch"): _operator_body,
    ("POST", "/v1/reduce-only"): _operator_body,
    ("POST", "/v1/resume"): _operator_body,
    ("POST", "/v1/flatten"): _operator_body,
    ("POST", "/v1/reconcile"): _operator_body,
    ("POST", "/v1/defensive"): _operator_body,
    ("POST", "/v1/defensive/clear"): _operator_body,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    exchange = serve_app_in_thread(create_paper_exchange_app(initial_cash=1_000_000.0))
    client = httpx.Client(base_url=exchange.url, headers=PAPER_HEADERS, timeout=10.0)
    client.post("/_sim/prices", json={"prices": {"AAPL": 100.0}}).raise_for_status()
    settings = GatewaySettings(
        risk=RiskOverlaysConfig(),
        audit_url=f"sqlite:///{tmp_path_factory.mktemp('rbac') / 'audit.db'}",
        broker_base_url=exchange.url,
        fill_wait_s=0.2,
        api_tokens=GRANTS,
    )
    app = create_app(settings)
    gateway = serve_app_in_thread(app)
    http = httpx.Client(timeout=10.0)
    bar0 = batch({"AAPL": (0.0, 100.0)}, bar_index=0).model_dump(mode="json")
    assert http.post(gateway.url + "/v1/decisions", json=bar0, headers=bearer(TOKENS["admin"])).status_code == 200
    yield Stack(app=app, gateway=gateway, exchange=client, http=http)
    http.close()
    gateway.stop()
    client.close()
    exchange.stop()


def api_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """(served path, route) of every API route, through included routers, hidden ones included."""
    return [(c.path, c.original_route) for c in iter_route_contexts(app.routes)
            if isinstance(c.original_route, APIRoute) and c.path is not None]


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app answers, including routes hidden from the OpenAPI schema."""
    keys = {(m, path) for path, route in api_routes(app) for m in route.methods}
    assert keys, "no API route found: has the router structure of FastAPI changed?"
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert documented <= keys, f"in the schema but not served: {documented - keys}"
    return keys


def snapshot(stack: Stack) -> tuple[dict[str, int], str, int]:
    counts = stack.admin("GET", "/v1/audit/summary").json()["counts"]
    state = stack.admin("GET", "/v1/state").json()["trading_state"]
    orders = stack.exchange.get("/_sim/state").json()["orders"]
    return counts, state, orders


def live_directive(stack: Stack) -> None:
    """A normal-mode directive issued at the next bar's timestep, so that bar's decisions trade."""
    upcoming = batch({"AAPL": (1.0, 100.0)}, bar_index=stack.bar_index + 1).timestep
    sent = directive(issued_at=upcoming, directive_id=f"d-live-{stack.bar_index + 1}").model_dump(mode="json")
    assert stack.admin("POST", "/v1/directives", json=sent).status_code == 202


def put_in_state(stack: Stack, state: str) -> None:
    path = {"ACTIVE": "/v1/resume", "HALTED": "/v1/kill-switch", "REDUCING": "/v1/reduce-only"}[state]
    answer = stack.admin("POST", path, json={"principal": PRINCIPALS["admin"], "reason": "rbac precondition"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["trading_state"] == state


def call(stack: Stack, key: tuple[str, str], headers: dict[str, str], principal: str) -> httpx.Response:
    method, template = key
    body = BODIES[key](principal, stack) if method == "POST" else None
    # Decisions wait for their orders to settle, so the broker's order count is final when the test reads it.
    params = {"wait": "settled"} if key == ("POST", "/v1/decisions") else None
    return stack.http.request(method, stack.url + template.format(**PATH_EXAMPLES), json=body, headers=headers,
                              params=params)


PROTECTED = sorted(k for k, roles in ROUTE_ROLES.items() if roles is not None)
PUBLIC = sorted(k for k, roles in ROUTE_ROLES.items() if roles is None)


def test_route_table_when_compared_with_served_routes_then_identical(stack: Stack) -> None:
    served = served_routes(stack.app)
    assert served - set(ROUTE_ROLES) == set(), "served without a rule in ROUTE_ROLES"
    assert set(ROUTE_ROLES) - served == set(), "a rule in ROUTE_ROLES for a route nobody serves"


def test_routes_when_not_api_routes_then_only_the_schema_and_its_docs(stack: Stack) -> None:
    # Anything served outside FastAPI's APIRoute would bypass the table; only the schema pages may.
    others = {getattr(c.original_route, "path", None) for c in iter_route_contexts(stack.app.routes)
              if not isinstance(c.original_route, APIRoute)}
    assert others == {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def test_route_table_when_routes_inspected_then_each_carries_its_own_rule(stack: Stack) -> None:
    # The dependency is derived from the table by key, so a route guarded by another route's rule
    # (a copy-paste slip) shows up here.
    for path, route in api_routes(stack.app):
        guards = {guard_key(d.call) for d in route.dependant.dependencies} - {None}
        for method in route.methods:
            assert guards == {(method, path)}, f"{method} {path} is guarded by {guards}"


def test_route_table_when_read_then_rules_match_the_design() -> None:
    assert {k for k, v in ROUTE_ROLES.items() if v is None} == {
        ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/console"), ("GET", "/console/{asset}")}
    for (method, path), roles in ROUTE_ROLES.items():
        if method == "GET" and roles is not None:
            assert set(roles) == set(ROLES), f"read {path} must be open to every role"
    assert ROUTE_ROLES[("POST", "/v1/decisions")] == ("trader",)
    assert ROUTE_ROLES[("POST", "/v1/directives")] == ("trader",)
    assert set(ROUTE_ROLES[("POST", "/v1/kill-switch")] or ()) == {"trader", "risk_officer"}
    assert set(ROUTE_ROLES[("POST", "/v1/reduce-only")] or ()) == {"trader", "risk_officer"}
    assert set(ROUTE_ROLES[("POST", "/v1/defensive")] or ()) == {"trader", "risk_officer"}  # tightening
    for path in ("/v1/resume", "/v1/flatten", "/v1/reconcile", "/v1/defensive/clear"):
        assert ROUTE_ROLES[("POST", path)] == ("risk_officer",)
    assert all(k in BODIES for k in ROUTE_ROLES if k[0] == "POST"), "every POST route needs an example body"


@pytest.mark.parametrize("key", PROTECTED, ids=lambda k: f"{k[0]} {k[1]}")
def test_protected_route_when_token_missing_bad_or_role_wrong_then_refused_without_side_effect(
    stack: Stack, key: tuple[str, str]
) -> None:
    put_in_state(stack, PRECONDITION_STATE.get(key, "ACTIVE"))
    live_directive(stack)
    before = snapshot(stack)
    allowed = ROUTE_ROLES[key] or ()

    missing = call(stack, key, {}, PRINCIPALS["admin"])
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"] == "unauthorized"
    for headers in (bearer("not-a-token"), {"Authorization": f"Basic {TOKENS['admin']}"}, {"Authorization": "Bearer"}):
        refused = call(stack, key, headers, PRINCIPALS["admin"])
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.headers["www-authenticate"] == "Bearer"
    for role in (r for r in ROLES if r != "admin" and r not in allowed):
        forbidden = call(stack, key, bearer(TOKENS[role]), PRINCIPALS[role])
        assert forbidden.status_code == 403, (role, forbidden.text)
        reason = forbidden.json()["reasons"][0]
        assert repr(role) in reason and all(needed in reason for needed in allowed), reason

    assert snapshot(stack) == before


@pytest.mark.parametrize("key", PROTECTED, ids=lambda k: f"{k[0]} {k[1]}")
def test_protected_route_when_allowed_role_calls_then_served(stack: Stack, key: tuple[str, str]) -> None:
    for role in (*(ROUTE_ROLES[key] or ()), "admin"):
        put_in_state(stack, PRECONDITION_STATE.get(key, "ACTIVE"))
        live_directive(stack)
        counts, state, orders = snapshot(stack)
        answer = call(stack, key, bearer(TOKENS[role]), PRINCIPALS[role])
        assert answer.status_code < 400, (role, answer.text)
        if key in HALTING_ROUTES or key == ("POST", "/v1/resume"):
            assert snapshot(stack)[1] != state, f"{role} was served but the state did not change"
        if key in {("POST", "/v1/decisions"), ("POST", "/v1/directives")}:
            assert snapshot(stack)[0] != counts, f"{role} was served but nothing was audited"
        if key == ("POST", "/v1/decisions"):
            assert snapshot(stack)[2] == orders + 1, answer.text


@pytest.mark.parametrize("key", PUBLIC, ids=lambda k: f"{k[0]} {k[1]}")
def test_public_route_when_called_without_token_then_served(stack: Stack, key: tuple[str, str]) -> None:
    answer = call(stack, key, {}, "nobody")
    assert answer.status_code == 200, answer.text


def test_operator_body_when_principal_is_someone_else_then_403_and_state_unchanged(stack: Stack) -> None:
    put_in_state(stack, "ACTIVE")
    before = snapshot(stack)
    spoofed = stack.http.post(stack.url + "/v1/kill-switch", json={"principal": "rita", "reason": "x"},
                              headers=bearer(TOKENS["trader"]))
    assert spoofed.status_code == 403 and "does not match" in spoofed.json()["reasons"][0]
    assert snapshot(stack) == before


def test_openapi_when_read_then_bearer_scheme_and_refusals_documented(stack: Stack) -> None:
    schema = stack.app.openapi()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for method, path in PROTECTED:
        operation = schema["paths"][path][method.lower()]
        assert operation["security"] == [{"HTTPBearer": []}]
        assert {"401", "403"} <= set(operation["responses"]), (method, path)


# ---- tokens file and `marlops token` ----------------------------------------------------------
def token_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="marlops")
    add_token_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_load_tokens_when_entry_has_plaintext_token_then_refused_naming_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tokens": [
        {"principal": "rita", "role": "risk_officer", "token_sha256": hash_token("a")},
        {"principal": "tom", "role": "trader", "token": "plain-secret"},
    ]}))
    with pytest.raises(TokenFileError, match=r"tokens\[1\].*'tom'.*plaintext 'token'.*hashed only"):
        load_tokens(path)


@pytest.mark.parametrize(("entry", "expected"), [
    ({"principal": "x", "role": "superuser", "token_sha256": "0" * 64}, r"tokens\[0\]: role"),
    ({"principal": "x", "role": "viewer", "token_sha256": "ABC"}, r"tokens\[0\]: token_sha256"),
    ({"principal": "x", "role": "viewer", "token_sha256": "0" * 64, "extra": 1}, r"tokens\[0\]: extra"),
    ("just-a-string", r"tokens\[0\]: expected a mapping"),
], ids=["bad-role", "bad-hash", "unknown-field", "not-a-mapping"])
def test_load_tokens_when_entry_invalid_then_error_names_file_and_index(
    tmp_path: Path, entry: Any, expected: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry]}))
    with pytest.raises(TokenFileError, match=expected) as info:
        load_tokens(path)
    assert str(path) in str(info.value)


def test_load_tokens_when_same_hash_twice_then_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    grant = {"principal": "x", "role": "viewer", "token_sha256": hash_token("t")}
    path.write_text(yaml.safe_dump({"tokens": [grant, {**grant, "principal": "y"}]}))
    with pytest.raises(TokenFileError, match=r"tokens\[1\]: the same token hash is already tokens\[0\]"):
        load_tokens(path)


def test_load_tokens_when_file_missing_or_not_yaml_then_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read the tokens file"):
        load_tokens(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("tokens: [unclosed")
    with pytest.raises(TokenFileError, match="not valid YAML"):
        load_tokens(broken)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_token_cli_when_created_then_file_holds_hash_only_and_list_shows_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = tmp_path / "conf" / f"tokens{suffix}"
    assert token_cli("token", "create", "--principal", "rita", "--role", "risk_officer", "--file", str(path)) == 0
    created = capsys.readouterr()
    token = created.out.strip()
    assert token and "\n" not in token and "NOT stored" in created.err
    assert token_cli("token", "create", "--principal", "tom", "--role", "trader", "--file", str(path)) == 0
    second = capsys.readouterr().out.strip()

    text = path.read_text()
    assert token not in text and second not in text
    assert hash_token(token) in text and hash_token(second) in text
    assert path.stat().st_mode & 0o077 == 0
    assert [(g.principal, g.role) for g in load_tokens(path)] == [("rita", "risk_officer"), ("tom", "trader")]

    assert token_cli("token", "list", "--file", str(path)) == 0
    listed = capsys.readouterr().out
    assert token not in listed and hash_token(token) not in listed
    rows = [line.split() for line in listed.splitlines()[1:]]
    assert rows == [["rita", "risk_officer", hash_token(token)[:8]], ["tom", "trader", hash_token(second)[:8]]]


def test_token_cli_when_role_unknown_then_usage_error_and_no_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    with pytest.raises(SystemExit) as info:
        token_cli("token", "create", "--principal", "x", "--role", "god", "--file", str(path))
    assert info.value.code == 2 and not path.exists()


def test_token_cli_when_file_has_plaintext_token_then_create_refuses_and_keeps_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    original = yaml.safe_dump({"tokens": [{"principal": "tom", "role": "trader", "token": "oops"}]})
    path.write_text(original)
    with pytest.raises(TokenFileError, match="plaintext"):
        run_token(argparse.Namespace(token_command="create", principal="rita", role="viewer", file=path))
    assert path.read_text() == original


def test_token_cli_when_token_created_then_it_authenticates_against_real_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens.yaml"
    token_cli("token", "create", "--principal", "rita", "--role", "risk_officer", "--file", str(path))
    risk_token = capsys.readouterr().out.strip()
    token_cli("token", "create", "--principal", "vera", "--role", "viewer", "--file", str(path))
    view_token = capsys.readouterr().out.strip()
    with serve_app_in_thread(create_paper_exchange_app(initial_cash=1_000_000.0)) as exchange:
        settings = GatewaySettings(risk=RiskOverlaysConfig(), audit_url=f"sqlite:///{tmp_path / 'audit.db'}",
                                   broker_base_url=exchange.url, api_tokens=load_tokens(path))
        with serve_app_in_thread(create_app(settings)) as gateway:
            assert httpx.get(gateway.url + "/v1/portfolio").status_code == 401
            assert httpx.get(gateway.url + "/v1/portfolio", headers=bearer(view_token)).status_code == 200
            body = {"principal": "vera", "reason": "not mine to pull"}
            assert httpx.post(gateway.url + "/v1/kill-switch", json=body, headers=bearer(view_token)).status_code == 403
            halted = httpx.post(gateway.url + "/v1/kill-switch", json={"principal": "rita", "reason": "drill"},
                                headers=bearer(risk_token))
            assert halted.status_code == 200 and halted.json()["trading_state"] == "HALTED"
            event = httpx.get(gateway.url + "/v1/audit", params={"kind": "state_change", "limit": 1},
                              headers=bearer(risk_token)).json()["events"][0]
            assert event["principal"] == "rita" and event["payload"]["reason"] == "drill"
