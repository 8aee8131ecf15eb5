"""Run the execution gateway standalone (directives arrive at POST /v1/directives, or over a Redis bus).

    python -m gateway --broker-url http://127.0.0.1:5100 [--port 8080] [--directive-bus redis://127.0.0.1:6379/0]

Secure by default: API tokens come from the marlops token store `<MARLOPS_HOME>/auth/tokens.yaml`
(or --tokens-file); an absent or empty store is bootstrapped on first start with an admin, a
risk_officer and a trader token, the raw tokens written owner-only to `<MARLOPS_HOME>/tokens/<role>.token`.
Only `--insecure-no-auth` runs the API without authentication (warned at every start).

Every flag has an environment variable (MARLOPS_GATEWAY_<FLAG>, also read from `.env`); see
gateway/process_settings.py and .env.example. Broker keys come ONLY from the environment or `.env`
(APCA_API_KEY_ID, APCA_API_SECRET_KEY): a secret on a command line is visible to every local user
(ps, /proc) and lands in shell history.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import uvicorn
import yaml
from pydantic import ValidationError

from contracts.config import load_risk
from contracts.errors import ConfigError
from contracts.logs import configure_logging
from contracts.urls import redact_url
from gateway.app import create_app
from gateway.gc_tuning import tune_gc_for_latency
from gateway.errors import GatewayError
from gateway.process_settings import GatewayProcessSettings
from gateway.settings import ApiToken, GatewaySettings
from gateway.token_file import bootstrap_token_store, load_tokens

logger = logging.getLogger("gateway.main")

INSECURE_WARNING = ("authentication is OFF (--insecure-no-auth): anyone who can reach this gateway may trade, "
                    "kill-switch and resume. Use this for local paper trading only")

# Flags that would put a secret on the command line; refused, with where the secret goes instead.
_SECRET_FLAGS = {"--secret-key": "APCA_API_SECRET_KEY", "--key-id": "APCA_API_KEY_ID"}


class _RefuseSecret(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> NoReturn:
        env = _SECRET_FLAGS.get(option_string or "", "the environment")
        parser.error(f"{option_string} is not accepted: broker keys never go on a command line (visible to every "
                     f"local user in ps and /proc, kept in shell history). Set {env} in the environment or in .env")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway", description="marlops execution gateway",
        epilog="Every flag also reads MARLOPS_GATEWAY_<FLAG> (e.g. MARLOPS_GATEWAY_PORT) from the environment "
               "or .env; broker keys only from APCA_API_KEY_ID / APCA_API_SECRET_KEY. Flags win over the "
               "environment, the environment over .env.")
    # default=None everywhere: an absent flag leaves the environment/.env/default in force.
    parser.add_argument("--host", default=None, help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default 8080")
    parser.add_argument("--broker-url", default=None,
                        help="broker server root, e.g. http://127.0.0.1:5100 (no /v2); env APCA_API_BASE_URL")
    parser.add_argument("--audit-url", default=None, help="default sqlite:///<MARLOPS_HOME>/gateway/audit.db")
    parser.add_argument("--audit-table", default=None, help="default gateway_audit")
    parser.add_argument("--tokens-file", type=Path, default=None,
                        help="hashed API tokens; default the marlops token store <MARLOPS_HOME>/auth/tokens.yaml, "
                             "bootstrapped (admin, risk_officer, trader) when absent or empty")
    parser.add_argument("--tokens-dir", type=Path, default=None,
                        help="where bootstrapped raw tokens go (0600 files); default <MARLOPS_HOME>/tokens")
    parser.add_argument("--insecure-no-auth", action="store_const", const=True, default=None,
                        help="run WITHOUT authentication (local paper trading only; warned at every start)")
    parser.add_argument("--directive-bus", dest="directive_bus_url", default=None, metavar="URL",
                        help="subscribe to master directives on this bus, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--directive-channel", default=None, help="default master-directives")
    parser.add_argument("--sectors-file", type=Path, default=None, help="YAML/JSON mapping symbol -> sector")
    parser.add_argument("--reconcile-interval-s", type=float, default=None, help="default 30")
    parser.add_argument("--risk-config", type=Path, default=None, help="default: config/rl/risk_overlays.yaml")
    parser.add_argument("--log-level", default=None, help="default info")
    for flag in _SECRET_FLAGS:
        parser.add_argument(flag, action=_RefuseSecret, nargs="?", help=argparse.SUPPRESS)
    return parser


def load_process_settings(argv: list[str] | None = None,
                          parser: argparse.ArgumentParser | None = None) -> GatewayProcessSettings:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}  # the secret flags never get a value
    try:
        return GatewayProcessSettings(**overrides)
    except ValidationError as exc:
        # Only names and messages: the input values may hold secrets.
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        parser.error(f"invalid gateway settings: {problems}")


def resolve_tokens(process: GatewayProcessSettings) -> tuple[ApiToken, ...]:
    """The API tokens in force; () only with insecure_no_auth. Raises GatewayError when there are none."""
    if process.insecure_no_auth:
        logger.warning(INSECURE_WARNING)
        return ()
    store = process.token_store
    if process.tokens_file is None or not store.exists():
        bootstrap_token_store(store, process.raw_tokens_dir)
    tokens = load_tokens(store)
    if not tokens:
        raise GatewayError(
            f"{store} holds no API tokens, and the gateway does not run open by default. Create one with "
            f"`marlops token create --principal P --role admin --file {store}`, delete the empty file to have "
            "admin, risk_officer and trader tokens generated, or pass --insecure-no-auth for local paper "
            "trading without authentication")
    logger.info("authentication ON: %d API token(s) from %s", len(tokens), store)
    return tokens


def gateway_settings(process: GatewayProcessSettings, tokens: tuple[ApiToken, ...]) -> GatewaySettings:
    sectors: dict[str, str] = {}
    if process.sectors_file is not None:
        data = yaml.safe_load(process.sectors_file.read_text()) or {}
        if not isinstance(data, dict):
            raise GatewayError(f"{process.sectors_file}: must map symbol -> sector")
        sectors = {str(k): str(v) for k, v in data.items()}
    assert process.broker_url is not None
    return GatewaySettings(
        risk=load_risk(process.risk_config),
        audit_url=process.effective_audit_url,
        audit_table=process.audit_table,
        api_tokens=tokens,
        sectors=sectors,
        reconcile_interval_s=process.reconcile_interval_s,
        broker_base_url=process.broker_url,
        broker_key_id=process.apca_api_key_id.get_secret_value(),
        broker_secret_key=process.apca_api_secret_key.get_secret_value(),
        directive_bus_url=process.directive_bus_url,
        directive_channel=process.directive_channel,
        alertmanager_url=process.alertmanager_url or None,
        state_url=process.state_url or None,
    )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    process = load_process_settings(argv, parser)
    try:  # JSON lines off a terminal (`make up`: a log file), text on one; MARLOPS_LOG_FORMAT overrides
        configure_logging(process.log_level, service="gateway")
    except ConfigError as exc:
        parser.error(str(exc))
    if not process.broker_url:
        parser.error("no broker: pass --broker-url or set APCA_API_BASE_URL (e.g. http://127.0.0.1:5100 for the "
                     "local paper exchange)")
    try:
        tokens = resolve_tokens(process)
        settings = gateway_settings(process, tokens)
    except (GatewayError, ConfigError) as exc:
        logger.error("%s", exc)
        sys.exit(2)
    except ValidationError as exc:
        # Names and messages only: the input values may include the broker secret.
        logger.error("invalid gateway settings: %s", "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
        sys.exit(2)
    logger.info("gateway on %s:%d, broker %s, audit %s, directive bus %s", process.host, process.port,
                redact_url(process.broker_url), redact_url(settings.audit_url),
                redact_url(process.directive_bus_url) if process.directive_bus_url else "none (HTTP only)")
    app = create_app(settings)
    tune_gc_for_latency()
    # log_config=None: uvicorn's own lines (startup, errors, access) go through the same handler and format.
    uvicorn.run(app, host=process.host, port=process.port, log_level=process.log_level, log_config=None)


if __name__ == "__main__":
    main()
