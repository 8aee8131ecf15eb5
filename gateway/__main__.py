"""Run the execution gateway standalone (directives arrive over HTTP at POST /v1/directives).

    python -m gateway --host 127.0.0.1 --port 8080 --broker-url http://127.0.0.1:5100 \
        --audit-url sqlite:///.marlops/gateway/audit.db --risk-config config/rl/risk_overlays.yaml

Broker keys come from --key-id/--secret-key or APCA_API_KEY_ID/APCA_API_SECRET_KEY.
"""

import argparse
import logging
import os
from pathlib import Path

import uvicorn
import yaml

from contracts.config import load_risk
from gateway.app import create_app
from gateway.settings import GatewaySettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="marlops execution gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--broker-url", required=True, help="server root, e.g. http://127.0.0.1:5100 (no /v2)")
    parser.add_argument("--audit-url", default="sqlite:///.marlops/gateway/audit.db")
    parser.add_argument("--audit-table", default="gateway_audit")
    parser.add_argument("--tokens-file", type=Path, default=None,
                        help="hashed API tokens (marlops token create); without it authentication is OFF")
    parser.add_argument("--sectors-file", type=Path, default=None, help="YAML/JSON mapping symbol -> sector")
    parser.add_argument("--reconcile-interval-s", type=float, default=30.0)
    parser.add_argument("--risk-config", type=Path, default=None, help="default: config/rl/risk_overlays.yaml")
    parser.add_argument("--key-id", default=os.environ.get("APCA_API_KEY_ID", "marlops-paper"))
    parser.add_argument("--secret-key", default=os.environ.get("APCA_API_SECRET_KEY", "marlops-paper-secret"))
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tokens = ()
    if args.tokens_file is not None:
        from gateway.token_file import load_tokens

        tokens = load_tokens(args.tokens_file)
    sectors: dict[str, str] = {}
    if args.sectors_file is not None:
        data = yaml.safe_load(args.sectors_file.read_text()) or {}
        if not isinstance(data, dict):
            parser.error(f"{args.sectors_file}: must map symbol -> sector")
        sectors = {str(k): str(v) for k, v in data.items()}
    settings = GatewaySettings(
        risk=load_risk(args.risk_config),
        audit_url=args.audit_url,
        audit_table=args.audit_table,
        api_tokens=tokens,
        sectors=sectors,
        reconcile_interval_s=args.reconcile_interval_s,
        broker_base_url=args.broker_url,
        broker_key_id=args.key_id,
        broker_secret_key=args.secret_key,
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
