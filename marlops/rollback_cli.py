"""`marlops rollback`: every symbol back to last-known-good (default) or to the SL fallback, within one bar.

    marlops rollback --reason "p&l off since 10:30" [--to last-known-good|sl_fallback] [--token-file F]

One routing change (the trading service applies it at its next bar) and, for last-known-good, the MLflow
`production` alias of every agent moves back; both are audited with the token's principal and the reason.
Needs a risk_officer or admin token: `--token-file` (default <MARLOPS_HOME>/tokens/risk_officer.token), checked
against the token store. Exit codes: 0 done, 2 refused (token, role, nothing to roll back to; nothing changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from contracts.config import load_rl_config
from marlops.context import PipelineContext
from marlops.errors import RoutingError
from marlops.lifecycle.context import lifecycle_context
from marlops.lifecycle.errors import LifecycleError
from marlops.lifecycle.rollback import TARGETS, rollback
from marlops.paths import StatePaths
from marlops.route_cli import EXIT_REFUSED, _authorize
from registry.errors import RegistryError


def add_rollback_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("rollback", help="every symbol back to last-known-good (or the SL fallback) "
                                                    "within one bar")
    parser.add_argument("--to", choices=TARGETS, default="last-known-good")
    parser.add_argument("--reason", required=True, help="why (audited)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="raw token file (default <MARLOPS_HOME>/tokens/risk_officer.token)")
    parser.add_argument("--token-store", type=Path, default=None,
                        help="hashed token store (default <MARLOPS_HOME>/auth/tokens.yaml)")
    parser.add_argument("--state-url", default=None, help="state store URL (default: MARLOPS_STATE_URL, else "
                                                           "<MARLOPS_HOME>/state.db)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_rollback)
    return parser


def run_rollback(args: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    if args.state_url:
        paths = replace(paths, state_store_url=args.state_url)
    try:
        principal = _authorize(args, paths)
    except (RoutingError, OSError) as exc:
        print(f"marlops rollback: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    ctx = PipelineContext.create(paths, load_rl_config(Path(args.config_dir)))
    try:
        with lifecycle_context(ctx) as lc:
            result = rollback(lc, to=args.to, principal=principal, reason=args.reason)
    except (LifecycleError, RoutingError, RegistryError) as exc:
        print(f"marlops rollback: refused, nothing changed: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, sort_keys=True))
    else:
        print(f"rolled back to {result.to} by {result.principal}: routing revision {result.routing_revision} is in "
              f"force from the next bar" + (f"; production now {result.versions}" if result.versions else ""))
    return 0
