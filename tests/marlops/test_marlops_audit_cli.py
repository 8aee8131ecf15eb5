"""`marlops audit ...` run in-process through its argv, against real SQLite and PostgreSQL trails."""

import gzip
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from contracts.audit import AuditEvent
from gateway.audit.store import AuditStore
from marlops.audit_cli import main

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO = Path(__file__).resolve().parents[2]
OLD = datetime(2010, 1, 4, 21, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Trail:
    store: AuditStore
    url: str
    table: str

    def argv(self, command: str, *extra: str) -> list[str]:
        return ["audit", command, "--audit-url", self.url, "--table", self.table, *extra]




@pytest.fixture(params=["sqlite", "postgresql"])
def trail(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Trail]:
    if request.param == "sqlite":
        url, table = f"sqlite:///{tmp_path / 'audit.db'}", "gateway_audit"
    else:
        request.getfixturevalue("postgres_url")
        url, table = PG_URL, f"gateway_audit_cli_{uuid.uuid4().hex[:12]}"
    store = AuditStore(url, table=table)
    store.append_many([AuditEvent(kind="order" if i % 2 else "fill", occurred_at=OLD + timedelta(days=i),
                                  principal="gateway", payload={"n": i}) for i in range(1, 7)])
    yield Trail(store, url, table)
    if request.param == "postgresql":
        store.drop()
    store.close()


def _delete_row(trail: Trail, seq: int) -> None:
    t = trail.table
    guard = (f'DROP TRIGGER IF EXISTS "{t}_no_delete"' if trail.store.dialect == "sqlite"
             else f'DROP TRIGGER IF EXISTS "{t}_append_only" ON "{t}"')
    engine = sa.create_engine(trail.url)
    with engine.begin() as conn:
        conn.execute(sa.text(guard))
        conn.execute(sa.text(f"DELETE FROM {t} WHERE seq = {seq}"))
    engine.dispose()


def test_verify_when_trail_intact_then_exit_zero_and_says_intact(trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(trail.argv("verify")) == 0
    assert "audit trail intact: 6 rows" in capsys.readouterr().out


def test_verify_when_row_deleted_then_exit_one_and_prints_problem(trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    _delete_row(trail, 6)
    assert main(trail.argv("verify")) == 1
    assert "chain ends at seq 5 but the head record says 6" in capsys.readouterr().out
    assert main(trail.argv("verify", "--json")) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["first_broken_seq"]) == (False, 6)


def test_verify_when_store_unreachable_then_exit_two_with_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["audit", "verify", "--audit-url", "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1"])
    assert code == 2
    assert "audit store unavailable" in capsys.readouterr().err


def test_verify_when_sqlite_file_missing_then_exit_two_and_no_file_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    assert main(["audit", "verify", "--audit-url", f"sqlite:///{missing}"]) == 2
    assert "no audit database" in capsys.readouterr().err
    assert not missing.exists()


def test_verify_when_no_url_then_uses_state_dir_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MARLOPS_HOME", str(tmp_path / "home"))
    store = AuditStore(f"sqlite:///{tmp_path / 'home' / 'gateway' / 'audit.db'}")
    store.append(AuditEvent(kind="order", occurred_at=OLD, principal="g", payload={}))
    store.close()
    assert main(["audit", "verify"]) == 0
    assert "1 rows" in capsys.readouterr().out


def test_export_anchor_then_verify_with_anchor_catches_later_deletion(
    trail: Trail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anchor = tmp_path / "anchors" / "a.json"
    assert main(trail.argv("export-anchor", "--out", str(anchor))) == 0
    assert json.loads(anchor.read_text())["seq"] == 6
    assert main(trail.argv("verify", "--anchor", str(anchor))) == 0
    _delete_row(trail, 3)
    capsys.readouterr()
    assert main(trail.argv("verify", "--anchor", str(anchor))) == 1
    assert "seq 3 missing (row deleted)" in capsys.readouterr().out
    assert main(trail.argv("export-anchor", "--out", str(tmp_path / "b.json"))) == 1
    assert not (tmp_path / "b.json").exists()


def test_prune_when_dry_run_then_reports_and_keeps_rows_else_archives(
    trail: Trail, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "archive"
    assert main(trail.argv("prune", "--retention-days", "30", "--archive-dir", str(archive), "--dry-run")) == 0
    assert json.loads(capsys.readouterr().out)["pruned"] == 6
    assert trail.store.count() == 6
    assert main(trail.argv("prune", "--retention-days", "30", "--archive-dir", str(archive))) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["pruned"], result["last_seq"]) == (6, 6)
    with gzip.open(result["archive"], "rt") as handle:
        assert [json.loads(line)["seq"] for line in handle] == [1, 2, 3, 4, 5, 6]
    assert trail.store.count() == 0
    assert main(trail.argv("verify")) == 0


def test_tail_when_kind_and_limit_then_latest_rows_oldest_first(trail: Trail, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(trail.argv("tail", "--kind", "order", "--limit", "2")) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["seq"], r["kind"]) for r in rows] == [(3, "order"), (5, "order")]
    assert main(trail.argv("tail", "--limit", "0")) == 2


def test_module_when_run_as_subprocess_then_exit_code_reflects_trail(tmp_path: Path) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    store.append(AuditEvent(kind="order", occurred_at=OLD, principal="g", payload={}))
    store.close()
    done = subprocess.run(
        [sys.executable, "-m", "marlops.audit_cli", "audit", "verify", "--audit-url", f"sqlite:///{tmp_path / 'audit.db'}",
         "--json"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["head_seq"] == 1
