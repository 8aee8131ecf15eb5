"""`marlops route show|set|clear`: read and change the routing table (symbol -> policy variant).

    marlops route show [--json]
    marlops route set --policy production=symbol_agent/3 --policy master=master_agent/2 --reason "release 3"
    marlops route set AAPL MSFT --variant candidate [--shadow production|none] --reason "canary on v4"
    marlops route set '*' --variant production --shadow candidate --reason "shadow v4 everywhere"
    marlops route clear AAPL MSFT --reason "canary over"

Each command is ONE atomic change (one revision, one audit row). Changing routing needs a token of
role risk_officer or admin: `--token-file` (default `<MARLOPS_HOME>/tokens/risk_officer.token`),
checked against the token store (`<MARLOPS_HOME>/auth/tokens.yaml`, or `--token-store`); the audited
principal is the token's. Store: `--state-url`, else MARLOPS_STATE_URL, else `<MARLOPS_HOME>/state.db`.
Exit codes: 0 done, 2 refused (no/unknown token, role not allowed, invalid change; nothing written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.token_file import TokenFileError, load_tokens, read_token_file
from gateway.tokens import grant_for
from marlops.errors import RoutingError
from marlops.paths import StatePaths
from marlops.routing import (
    DEFAULT_ROUTE,
    POLICY_SLOTS,
    SYMBOL_VARIANTS,
    PolicyRef,
    RoutingChange,
    RoutingTable,
)
from marlops.routing_store import RoutingStore

ROUTING_ROLES = ("risk_officer", "admin")
EXIT_REFUSED = 2


def add_route_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `route show|set|clear` on the `marlops` subcommands; `func` runs them."""
    route = subparsers.add_parser("route", help="show or change the routing table (symbol -> policy variant)")
    actions = route.add_subparsers(dest="route_command", required=True)

    show = actions.add_parser("show", help="policies, routes and revision of the routing table")
    show.add_argument("--json", action="store_true", help="print the table as JSON")
    show.add_argument("--history", type=int, default=0, metavar="N", help="also list the last N audited changes")
    _store_arguments(show)

    change = actions.add_parser(
        "set", help="route symbols to a variant and/or set policy slots (one atomic change)",
        description="Route SYMBOLs ('*' = every symbol not listed) to --variant, and/or set policy slots "
                    "with --policy SLOT=MODEL/VERSION (SLOT=none clears it). One revision, one audit row.")
    change.add_argument("symbols", nargs="*", metavar="SYMBOL")
    change.add_argument("--variant", choices=SYMBOL_VARIANTS, help="the variant that trades for SYMBOLs")
    change.add_argument("--shadow", default="none", metavar="VARIANT|none",
                        help=f"a variant scored but not traded for SYMBOLs ({', '.join(SYMBOL_VARIANTS)}, none)")
    change.add_argument("--policy", action="append", default=[], metavar="SLOT=MODEL/VERSION",
                        help=f"point a slot ({', '.join(POLICY_SLOTS)}) at a Triton model version; repeatable")
    _change_arguments(change)

    clear = actions.add_parser("clear", help="remove the routes of SYMBOLs (they follow the default route again)")
    clear.add_argument("symbols", nargs="+", metavar="SYMBOL")
    _change_arguments(clear)

    route.set_defaults(func=run_route)
    return route


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-url", default=None,
                        help="routing store URL (default: MARLOPS_STATE_URL, else <MARLOPS_HOME>/state.db)")


def _change_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why (audited with the change)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="raw token file (default <MARLOPS_HOME>/tokens/risk_officer.token)")
    parser.add_argument("--token-store", type=Path, default=None,
                        help="hashed token store (default <MARLOPS_HOME>/auth/tokens.yaml)")
    _store_arguments(parser)


def run_route(args: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    url = args.state_url or paths.state_url
    if args.route_command == "show":
        with RoutingStore(url) as store:
            return _show(store, as_json=args.json, history=args.history)
    try:
        principal = _authorize(args, paths)
        change = _change_from(args)
    except (RoutingError, TokenFileError) as exc:
        print(f"marlops route {args.route_command}: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        with RoutingStore(url) as store:
            table = store.apply(change, principal=principal, reason=args.reason)
    except RoutingError as exc:
        print(f"marlops route {args.route_command}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"routing revision {table.revision} written by {principal}", file=sys.stderr)
    print(format_table(table))
    return 0


def _authorize(args: argparse.Namespace, paths: StatePaths) -> str:
    """The principal of the token, if its role may change routing; RoutingError otherwise."""
    token_file = args.token_file or paths.tokens_dir / "risk_officer.token"
    token_store = args.token_store or paths.token_store
    if not Path(token_file).is_file():
        raise RoutingError(f"changing routing needs a token: no token file {token_file} (pass --token-file)")
    token = read_token_file(Path(token_file))
    if not Path(token_store).is_file():
        raise RoutingError(f"no token store {token_store} to check the token against (pass --token-store)")
    grant = grant_for(load_tokens(token_store), token)
    if grant is None:
        raise RoutingError(f"the token in {token_file} is not in the token store {token_store}")
    if grant.role not in ROUTING_ROLES:
        raise RoutingError(
            f"{grant.principal} has role {grant.role}; changing routing needs role {' or '.join(ROUTING_ROLES)}"
        )
    return grant.principal


def _symbols(raw: list[str]) -> list[str]:
    return [DEFAULT_ROUTE if s.strip() == DEFAULT_ROUTE else s.strip().upper() for s in raw]


def _change_from(args: argparse.Namespace) -> RoutingChange:
    if not args.reason.strip():
        raise RoutingError("--reason must not be blank")
    if args.route_command == "clear":
        return RoutingChange(routes={symbol: None for symbol in _symbols(args.symbols)})
    policies: dict[str, PolicyRef | None] = {}
    for item in args.policy:
        slot, sep, ref = item.partition("=")
        slot = slot.strip()
        if not sep or not slot:
            raise RoutingError(f"--policy {item!r} must look like SLOT=MODEL/VERSION (or SLOT=none)")
        if slot not in POLICY_SLOTS:
            raise RoutingError(f"--policy {item!r}: unknown slot {slot!r} (slots: {', '.join(POLICY_SLOTS)})")
        if slot in policies:
            raise RoutingError(f"--policy names slot {slot!r} twice")
        policies[slot] = None if ref.strip().lower() == "none" else PolicyRef.parse(ref)
    symbols = _symbols(args.symbols)
    if symbols and args.variant is None:
        raise RoutingError("routing symbols needs --variant " + "|".join(SYMBOL_VARIANTS))
    if args.variant is not None and not symbols:
        raise RoutingError(f"--variant needs at least one SYMBOL (or {DEFAULT_ROUTE!r} for the default route)")
    shadow = None if args.shadow.strip().lower() == "none" else args.shadow.strip()
    if shadow is not None and shadow not in SYMBOL_VARIANTS:
        raise RoutingError(f"--shadow {args.shadow!r}: not a variant ({', '.join(SYMBOL_VARIANTS)}, none)")
    if not symbols and not policies:
        raise RoutingError("nothing to change: give SYMBOLs with --variant and/or --policy SLOT=MODEL/VERSION")
    if len(set(symbols)) != len(symbols):
        raise RoutingError("a SYMBOL is named twice")
    return RoutingChange(policies=policies, routes={symbol: (args.variant, shadow) for symbol in symbols})


def _show(store: RoutingStore, *, as_json: bool, history: int) -> int:
    table = store.read()
    if as_json:
        document = table_document(table)
        if history:
            document["history"] = store.history(history)
        print(json.dumps(document, indent=2, sort_keys=False))
        return 0
    print(format_table(table))
    if history:
        print("history:")
        for row in store.history(history):
            print(f"  #{row['seq']} rev {row['revision']} {row['at']} {row['principal']}: {row['reason']}")
    return 0


def table_document(table: RoutingTable) -> dict[str, Any]:
    """`route show --json`: the table's to_dict() plus `served` (model -> sorted versions)."""
    return {**table.to_dict(), "served": {m: sorted(v) for m, v in sorted(table.served().items())}}


def format_table(table: RoutingTable) -> str:
    lines = [f"routing revision {table.revision}", "policies:"]
    for slot in POLICY_SLOTS:
        ref = table.policies.get(slot)
        lines.append(f"  {slot:<12} {ref if ref is not None else '(unset)'}")
    lines.append("routes:")
    rows = table.to_dict()["routes"]
    if DEFAULT_ROUTE not in rows:
        lines.append(f"  {DEFAULT_ROUTE:<12} production (implicit: no default row)")
    for symbol, row in rows.items():
        shadow = f"  shadow {row['shadow']}" if row["shadow"] else ""
        lines.append(f"  {symbol:<12} {row['variant']}{shadow}")
    served = ", ".join(f"{m} {sorted(v)}" for m, v in sorted(table.served().items())) or "(nothing)"
    lines.append(f"served: {served}")
    return "\n".join(lines)
