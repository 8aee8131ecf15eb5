"""`marlops token create|list`: API tokens of the marlops services, kept hashed in the token store.

    marlops token create --principal rita --role risk_officer     # -> <MARLOPS_HOME>/auth/tokens.yaml
    marlops token list
    python -m gateway ...                                         # reads the same store by default

`--file F` uses another tokens file instead. `create` prints the token once, on stdout (so a script
can capture it); only its SHA-256 is stored.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.settings import ROLES
from gateway.token_file import append_token, load_tokens
from gateway.tokens import new_token
from marlops.paths import StatePaths


def default_token_store() -> Path:
    """The marlops token store, <MARLOPS_HOME>/auth/tokens.yaml."""
    return StatePaths.from_env().token_store


def add_token_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `token create` and `token list` on the `marlops` subcommands; `func` runs them."""
    token = subparsers.add_parser("token", help="create or list gateway API tokens (stored hashed)")
    actions = token.add_subparsers(dest="token_command", required=True)
    create = actions.add_parser("create", help="create a token, append its hash to the file, print it once")
    create.add_argument("--principal", required=True, help="who the token speaks for (audited on every action)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--file", type=Path, default=None,
                        help="tokens file (YAML, or JSON by .json; created); default: the token store "
                             "<MARLOPS_HOME>/auth/tokens.yaml")
    listing = actions.add_parser("list", help="principal, role and hash prefix of each token in the file")
    listing.add_argument("--file", type=Path, default=None, help="default: the token store")
    token.set_defaults(func=run_token)
    return token


def run_token(args: argparse.Namespace) -> int:
    path: Path = args.file if getattr(args, "file", None) is not None else default_token_store()
    if args.token_command == "create":
        if not args.principal.strip() or len(args.principal) > 200:
            print("--principal must be 1-200 characters, not blank", file=sys.stderr)
            return 2
        token, grant = new_token(args.principal, args.role)
        append_token(path, grant)
        print(token)
        print(f"token for {grant.principal} ({grant.role}) added to {path} as SHA-256 "
              f"{grant.token_sha256[:8]}...; the token itself is NOT stored: copy it now, it cannot be shown again",
              file=sys.stderr)
        return 0
    if not path.exists():
        print(f"no tokens file at {path} (the gateway creates the token store on its first start; "
              "or run `marlops token create`)", file=sys.stderr)
        return 1
    grants = load_tokens(path)
    width = max((len(g.principal) for g in grants), default=9)
    print(f"{'principal':<{width}}  {'role':<12}  sha256")
    for grant in grants:
        print(f"{grant.principal:<{width}}  {grant.role:<12}  {grant.token_sha256[:8]}")
    return 0
