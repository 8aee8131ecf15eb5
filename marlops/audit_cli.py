"""`marlops audit`: verify, anchor, prune and read the gateway's audit trail.

Exit codes: 0 done / trail intact, 1 trail broken (the problem is printed), 2 store unreachable or
bad input (the reason is printed).
"""

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gateway.audit.retention import prune_audit
from gateway.audit.store import AuditStore
from gateway.audit.verify import VerifyReport, verify_audit
from gateway.errors import AuditError
from gateway.settings import GatewaySettings
from marlops.paths import StatePaths

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_UNAVAILABLE = 2
DEFAULT_TABLE = str(GatewaySettings.model_fields["audit_table"].default)
DEFAULT_RETENTION_DAYS = int(GatewaySettings.model_fields["audit_retention_days"].default)


def _store_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--audit-url", default=None,
                         help="SQLAlchemy URL of the audit trail (default: the marlops state dir's "
                              "sqlite:///.marlops/gateway/audit.db)")
    command.add_argument("--table", default=DEFAULT_TABLE, help=f"audit table (default {DEFAULT_TABLE})")


def add_audit_parser(subparsers: Any) -> None:
    """Register `audit` and its sub-commands on the `marlops` sub-parsers."""
    audit = subparsers.add_parser("audit", help="verify, anchor, prune or read the gateway's audit trail")
    commands = audit.add_subparsers(dest="audit_command", required=True)

    verify = commands.add_parser("verify", help="prove the trail intact (exit 0) or name the first broken row (exit 1)")
    _store_arguments(verify)
    verify.add_argument("--anchor", default=None, help="anchor file from `export-anchor`: the chain must contain it")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    anchor = commands.add_parser("export-anchor", help="write the chain's end {seq, hash, at} to a file kept elsewhere")
    _store_arguments(anchor)
    anchor.add_argument("--out", required=True, help="anchor file to write")

    prune = commands.add_parser("prune", help="archive rows older than the retention period, then remove them")
    _store_arguments(prune)
    prune.add_argument("--retention-days", type=int, default=DEFAULT_RETENTION_DAYS,
                       help=f"keep this many days (default {DEFAULT_RETENTION_DAYS}, 7 years)")
    prune.add_argument("--archive-dir", default=None,
                       help="where archives go (default: <state dir>/gateway/audit_archive)")
    prune.add_argument("--dry-run", action="store_true", help="report what would be pruned; change nothing")

    tail = commands.add_parser("tail", help="the most recent rows as JSON lines, oldest first")
    _store_arguments(tail)
    tail.add_argument("--kind", default=None, help="only rows of this kind (order, fill, state_change...)")
    tail.add_argument("--limit", type=int, default=20)

    audit.set_defaults(func=run_audit)


def _open(args: argparse.Namespace) -> AuditStore:
    url = args.audit_url or StatePaths.from_env().audit_url
    # Inspection must not create an empty trail at a mistyped URL and call it intact.
    return AuditStore(url, table=args.table, create=False)


def _print_verify(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), sort_keys=True))
        return
    if report.ok:
        print(f"audit trail intact: {report.rows} rows after checkpoint seq {report.checkpoint_seq}, "
              f"ends at seq {report.head_seq} ({report.head_hash[:16]}...)")
    else:
        print(f"audit trail BROKEN at seq {report.first_broken_seq}: {report.problem}")
    for note in report.notes:
        print(f"note: {note}")


def _verify(store: AuditStore, args: argparse.Namespace) -> int:
    report = verify_audit(store, anchor=args.anchor)
    _print_verify(report, args.json)
    return EXIT_OK if report.ok else EXIT_BROKEN


def _export_anchor(store: AuditStore, args: argparse.Namespace) -> int:
    report = verify_audit(store)
    if not report.ok:
        # Anchoring a tampered chain would certify it.
        print(f"refusing to anchor a broken trail: {report.problem}", file=sys.stderr)
        return EXIT_BROKEN
    print(json.dumps(store.export_anchor(Path(args.out)), sort_keys=True))
    return EXIT_OK


def _prune(store: AuditStore, args: argparse.Namespace) -> int:
    report = verify_audit(store)
    if not report.ok:
        print(f"refusing to prune a broken trail: {report.problem}", file=sys.stderr)
        return EXIT_BROKEN
    archive_dir = Path(args.archive_dir) if args.archive_dir else StatePaths.from_env().root / "gateway" / "audit_archive"
    result = prune_audit(store, args.retention_days, archive_dir, now=datetime.now(timezone.utc), dry_run=args.dry_run)
    print(json.dumps(result.as_dict(), sort_keys=True))
    return EXIT_OK


def _tail(store: AuditStore, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise AuditError(f"--limit must be at least 1, got {args.limit}")
    for row in reversed(store.list(kind=args.kind, limit=args.limit)):
        print(json.dumps(row, sort_keys=True))
    return EXIT_OK


_COMMANDS: dict[str, Callable[[AuditStore, argparse.Namespace], int]] = {
    "verify": _verify, "export-anchor": _export_anchor, "prune": _prune, "tail": _tail,
}


def run_audit(args: argparse.Namespace) -> int:
    try:
        store = _open(args)
    except AuditError as exc:
        print(f"audit store unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        return _COMMANDS[args.audit_command](store, args)
    except AuditError as exc:
        print(f"audit {args.audit_command} failed: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marlops-audit")
    add_audit_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
