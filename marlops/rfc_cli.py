"""`marlops rfc list|show|approve|reject|code`: read deployment RFCs and decide on them.

    marlops rfc list [--json]
    marlops rfc show RFC-4-1a2b3c4d [--json]
    marlops rfc approve RFC-4-1a2b3c4d --comment "within limits" [--digest D] [--token-file F]
    marlops rfc reject RFC-4-1a2b3c4d --comment "drawdown too deep on paper" [--token-file F]
    marlops rfc code RFC-4-1a2b3c4d [--token-file F]      # a one-time code for the Dagster Launchpad

Only a risk_officer's token may approve or reject (admin may not): `--token-file` (default
`<MARLOPS_HOME>/tokens/risk_officer.token`), checked against the token store (`<MARLOPS_HOME>/auth/tokens.yaml`,
or `--token-store`); the recorded principal and role are the token's. `--digest` is the digest you reviewed
(`rfc show` prints it): if the RFC has changed since, the decision is refused. A decision is final. Every
refusal is recorded in the lifecycle event log. `code` prints a single-use approval code (30 minutes) to paste
into the Dagster Launchpad instead of a raw token (Dagster keeps run config in plain text).
Store: `--state-url`, else MARLOPS_STATE_URL, else `<MARLOPS_HOME>/state.db` (the routing table's database).
Exit codes: 0 done, 1 no such RFC (or the store cannot be read), 2 refused (nothing decided).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.token_file import TokenFileError, read_token_file
from marlops.lifecycle.approval import (
    DEFAULT_CODE_TTL_S,
    approval_status,
    decide,
    issue_approval_code,
)
from marlops.lifecycle.errors import (
    ApprovalRefusedError,
    LifecycleError,
    RfcNotFoundError,
)
from marlops.lifecycle.rfc import AGENT_ORDER, PLOT_LOCATION, render_markdown
from marlops.lifecycle.store import LifecycleStore, RfcSummary
from marlops.paths import StatePaths

EXIT_NOT_FOUND = 1
EXIT_REFUSED = 2


def add_rfc_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `rfc list|show|approve|reject|code` on the `marlops` subcommands; `func` runs them."""
    rfc = subparsers.add_parser("rfc", help="list, show, approve or reject deployment RFCs")
    actions = rfc.add_subparsers(dest="rfc_command", required=True)

    listing = actions.add_parser("list", help="every RFC, newest first: versions, status, created")
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    _store_argument(listing)

    show = actions.add_parser("show", help="the RFC (metrics, risk, rollback plan, artifacts), digest, decisions")
    show.add_argument("rfc_id", metavar="RFC-ID")
    show.add_argument("--json", action="store_true", help="print the RFC as JSON (the plot as its sha256)")
    _store_argument(show)

    for name, help_text in (("approve", "approve the RFC (risk_officer only; final)"),
                            ("reject", "reject the RFC with a reason (risk_officer only; final)")):
        decision = actions.add_parser(name, help=help_text)
        decision.add_argument("rfc_id", metavar="RFC-ID")
        decision.add_argument("--comment", required=True, help="why (recorded with the decision)")
        decision.add_argument("--digest", default=None,
                              help="the digest you reviewed (`rfc show`); refused if the RFC has changed since")
        _token_arguments(decision)

    code = actions.add_parser("code", help="a one-time approval code for the Dagster Launchpad (risk_officer only)")
    code.add_argument("rfc_id", metavar="RFC-ID")
    _token_arguments(code)

    rfc.set_defaults(func=run_rfc)
    return rfc


def _store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-url", default=None,
                        help="lifecycle store URL (default: MARLOPS_STATE_URL, else <MARLOPS_HOME>/state.db)")


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-file", type=Path, default=None,
                        help="raw token file (default <MARLOPS_HOME>/tokens/risk_officer.token)")
    parser.add_argument("--token-store", type=Path, default=None,
                        help="hashed token store (default <MARLOPS_HOME>/auth/tokens.yaml)")
    _store_argument(parser)


def run_rfc(args: argparse.Namespace) -> int:
    paths = StatePaths.from_env()
    command = f"marlops rfc {args.rfc_command}"
    try:
        with LifecycleStore(args.state_url or paths.state_url) as store:
            if args.rfc_command == "list":
                return _list(store, as_json=args.json)
            if args.rfc_command == "show":
                return _show(store, args.rfc_id, as_json=args.json)
            token_file = Path(args.token_file or paths.tokens_dir / "risk_officer.token")
            token_store = Path(args.token_store or paths.token_store)
            token = read_token_file(token_file) if token_file.is_file() else None
            if args.rfc_command == "code":
                return _code(store, args.rfc_id, token=token, token_store=token_store, token_file=token_file)
            return _decide(store, args, token=token, token_store=token_store, token_file=token_file)
    except ApprovalRefusedError as exc:
        print(f"{command}: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except TokenFileError as exc:
        print(f"{command}: refused: TOKEN_FILE: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except RfcNotFoundError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except LifecycleError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND


def _versions(versions: dict[str, str] | None) -> str:
    if versions is None:
        return "none"
    return "/".join(versions.get(agent, "-") for agent in AGENT_ORDER)


def summary_document(summary: RfcSummary) -> dict[str, Any]:
    return {"rfc_id": summary.rfc_id, "candidate_run_id": summary.candidate_run_id, "candidate": summary.candidate,
            "production": summary.production, "status": summary.status, "digest": summary.digest,
            "created_at": summary.created_at}


def _list(store: LifecycleStore, *, as_json: bool) -> int:
    summaries = store.list_rfcs()
    if as_json:
        print(json.dumps([summary_document(s) for s in summaries], indent=2))
        return 0
    if not summaries:
        print("no deployment RFCs yet")
        return 0
    header = "/".join(AGENT_ORDER)
    print(f"{'RFC':<20} {'candidate':<12} {'production':<12} {'status':<12} created   (versions: {header})")
    for s in summaries:
        print(f"{s.rfc_id:<20} {_versions(s.candidate):<12} {_versions(s.production):<12} {s.status:<12} {s.created_at}")
    return 0


def _show(store: LifecycleStore, rfc_id: str, *, as_json: bool) -> int:
    rfc = store.rfc(rfc_id)
    status = store.rfc_status(rfc_id)
    decisions = store.decisions(rfc_id)
    approved, reason = approval_status(store, rfc_id)
    if as_json:
        print(json.dumps({**rfc.as_dict(), "status": status, "approved": approved, "approval": reason,
                          "decisions": [d.__dict__ for d in decisions]}, indent=2))
        return 0
    print(render_markdown(rfc, inline_plot=False))
    print(f"status: {status}")
    print(f"digest: {rfc.digest}")
    if rfc.equity_plot_png is not None:
        print(f"plot: on {PLOT_LOCATION}")
    print("decisions:" if decisions else "decisions: none")
    for d in decisions:
        print(f"  {d.decided_at} {d.decision} by {d.principal} ({d.role}) via {d.channel} on digest "
              f"{d.rfc_digest[:12]}: {d.comment}")
    print(f"approval: {'approved' if approved else 'not approved'}: {reason}")
    return 0


def _decide(store: LifecycleStore, args: argparse.Namespace, *, token: str | None, token_store: Path,
            token_file: Path) -> int:
    decision = "approve" if args.rfc_command == "approve" else "reject"
    try:
        record = decide(store, args.rfc_id, decision=decision, token=token, token_store=token_store,
                        comment=args.comment, channel="cli", expected_digest=args.digest)
    except ApprovalRefusedError as exc:
        hint = f" (no token file {token_file}; pass --token-file)" if exc.code == "NO_TOKEN" else ""
        print(f"marlops rfc {args.rfc_command}: refused: {exc}{hint}", file=sys.stderr)
        return EXIT_REFUSED
    verb = "approved" if decision == "approve" else "rejected"
    print(f"{record.rfc_id} {verb} by {record.principal} ({record.role}) on digest {record.rfc_digest}")
    return 0


def _code(store: LifecycleStore, rfc_id: str, *, token: str | None, token_store: Path, token_file: Path) -> int:
    try:
        code = issue_approval_code(store, rfc_id, token=token, token_store=token_store)
    except ApprovalRefusedError as exc:
        hint = f" (no token file {token_file}; pass --token-file)" if exc.code == "NO_TOKEN" else ""
        print(f"marlops rfc code: refused: {exc}{hint}", file=sys.stderr)
        return EXIT_REFUSED
    minutes = DEFAULT_CODE_TTL_S // 60
    print(code)
    print(f"one-time approval code for {rfc_id}: single use, valid {minutes} minutes and only while the RFC keeps "
          "its digest.\nIn the Dagster UI, launch the RFC approval job for this RFC and paste it in the Launchpad run "
          "config as the approval credential (instead of a raw API token); the decision is recorded as yours.",
          file=sys.stderr)
    return 0
