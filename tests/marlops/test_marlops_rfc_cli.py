"""`marlops rfc list|show|approve|reject|code` as a user runs it, against a temporary MARLOPS_HOME.

Two calls go through a real `python -m marlops.cli` process (the wiring, exit codes and streams of the entry point);
the rest call the same `marlops.cli.main` in this process with the same environment, working directory and argv:
a process start costs about 10 s of imports, and 12 of them made this the suite's slowest unit-level module."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.token_file import bootstrap_token_store, read_token_file
from marlops.lifecycle.approval import approval_status, decide_with_credential
from marlops.lifecycle.rfc import DeploymentRFC, build_rfc
from marlops.lifecycle.store import LifecycleStore

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Home:
    root: Path
    work: Path
    url: str
    rfc: DeploymentRFC
    tokens: dict[str, str]

    def run_process(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m marlops.cli rfc ARGS` in a process of its own."""
        env = {k: v for k, v in os.environ.items() if k != "MARLOPS_STATE_URL"}
        env["MARLOPS_HOME"] = str(self.root)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        return subprocess.run([sys.executable, "-m", "marlops.cli", "rfc", *args], cwd=self.work, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`marlops.cli.main(["rfc", *ARGS])` in this process, with the environment and cwd of `run_process`."""
        from marlops.cli import main

        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            mp.delenv("MARLOPS_STATE_URL", raising=False)
            mp.setenv("MARLOPS_HOME", str(self.root))
            mp.chdir(self.work)
            try:
                code = main(["rfc", *args])
            except SystemExit as exc:  # argparse and sys.exit paths, as the process would exit
                code = exc.code if isinstance(exc.code, int) else 1
        return subprocess.CompletedProcess(["marlops", "rfc", *args], code, out.getvalue(), err.getvalue())


def _rfc(run_id: str, version: str) -> DeploymentRFC:
    return build_rfc(
        candidate_run_id=run_id, candidate={"symbol_agent": version, "master_agent": version, "sl_fallback": version},
        production={"symbol_agent": "3", "master_agent": "3", "sl_fallback": "3"},
        metrics={"paper": {"candidate": {"total_return": 0.03}, "production": {"total_return": 0.01}}},
        risk={"drift": "ok"}, rollback_plan=["route every symbol to production"],
        artifacts={"symbol_agent": {"sha256": "a" * 64, "signature": "sig", "key_id": "k1", "artifact": "x.ptc"}},
        equity_plot_png=b"\x89PNG fake plot")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    root = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    result = bootstrap_token_store(root / "auth" / "tokens.yaml", root / "tokens")
    tokens = {role: read_token_file(path) for role, path in result.token_files.items()}
    url = f"sqlite:///{root / 'state.db'}"
    with LifecycleStore(url) as store:
        rfc = store.save_rfc(_rfc("run-aaa", "4"))
    return Home(root=root, work=work, url=url, rfc=rfc, tokens=tokens)


def _no_token_printed(home: Home, *outputs: subprocess.CompletedProcess[str]) -> None:
    for out in outputs:
        for token in home.tokens.values():
            assert token not in out.stdout and token not in out.stderr


def test_rfc_list_when_rfcs_stored_then_one_line_each_with_versions_and_status(home: Home) -> None:
    with LifecycleStore(home.url) as store:
        newer = store.save_rfc(_rfc("run-bbb", "5"))
    out = home.run_process("list")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("RFC-")]
    assert len(lines) == 2 and lines[0].startswith(newer.rfc_id) and lines[1].startswith(home.rfc.rfc_id)
    assert "5/5/5" in lines[0] and "3/3/3" in lines[0] and "pending" in lines[0]
    listed = home.run("list", "--json")
    assert listed.returncode == 0
    document = json.loads(listed.stdout)
    assert [d["rfc_id"] for d in document] == [newer.rfc_id, home.rfc.rfc_id]
    assert document[1]["candidate"] == {"symbol_agent": "4", "master_agent": "4", "sl_fallback": "4"}


def test_rfc_approve_when_trader_token_or_no_token_then_exit_2_and_nothing_decided(home: Home) -> None:
    trader = home.run_process("approve", home.rfc.rfc_id, "--comment", "ok",
                      "--token-file", str(home.root / "tokens" / "trader.token"))
    assert trader.returncode == 2
    assert "ROLE_NOT_ALLOWED" in trader.stderr and "local-trader has role trader" in trader.stderr
    missing = home.run("approve", home.rfc.rfc_id, "--comment", "ok", "--token-file", str(home.work / "none.token"))
    assert missing.returncode == 2 and "NO_TOKEN" in missing.stderr and "none.token" in missing.stderr
    _no_token_printed(home, trader, missing)
    with LifecycleStore(home.url) as store:
        assert store.decisions(home.rfc.rfc_id) == []
        assert [e.detail["code"] for e in store.events(kind="approval_refused")] == ["ROLE_NOT_ALLOWED", "NO_TOKEN"]


def test_rfc_approve_when_risk_officer_default_token_then_exit_0_and_show_lists_the_decision(home: Home) -> None:
    stale = home.run("approve", home.rfc.rfc_id, "--comment", "ok", "--digest", "0" * 64)
    assert stale.returncode == 2 and "STALE_DIGEST" in stale.stderr
    approved = home.run("approve", home.rfc.rfc_id, "--comment", "within limits", "--digest", home.rfc.digest)
    assert approved.returncode == 0, approved.stderr
    assert f"{home.rfc.rfc_id} approved by local-risk-officer (risk_officer)" in approved.stdout
    shown = home.run("show", home.rfc.rfc_id)
    assert shown.returncode == 0
    assert f"digest: {home.rfc.digest}" in shown.stdout and "status: approved" in shown.stdout
    assert "approve by local-risk-officer (risk_officer) via cli" in shown.stdout and "within limits" in shown.stdout
    assert "base64" not in shown.stdout and "Dagster UI" in shown.stdout
    again = home.run("reject", home.rfc.rfc_id, "--comment", "second thoughts")
    assert again.returncode == 2 and "RFC_CLOSED" in again.stderr
    _no_token_printed(home, stale, approved, shown, again)
    with LifecycleStore(home.url) as store:
        assert approval_status(store, home.rfc.rfc_id)[0]


def test_rfc_reject_when_comment_blank_or_rfc_unknown_then_refused_else_rejected(home: Home) -> None:
    blank = home.run("reject", home.rfc.rfc_id, "--comment", " ")
    assert blank.returncode == 2 and "EMPTY_COMMENT" in blank.stderr
    unknown = home.run("reject", "RFC-9-00000000", "--comment", "no")
    assert unknown.returncode == 1 and "no deployment RFC 'RFC-9-00000000'" in unknown.stderr
    assert home.rfc.rfc_id in unknown.stderr
    rejected = home.run("reject", home.rfc.rfc_id, "--comment", "costs too high")
    assert rejected.returncode == 0 and "rejected by local-risk-officer" in rejected.stdout
    with LifecycleStore(home.url) as store:
        assert approval_status(store, home.rfc.rfc_id) == (
            False, "rejected by local-risk-officer (risk_officer): costs too high")


def test_rfc_code_when_risk_officer_then_prints_single_use_code_that_approves(home: Home) -> None:
    out = home.run("code", home.rfc.rfc_id)
    assert out.returncode == 0, out.stderr
    code = out.stdout.strip()
    assert code.startswith("apc_") and "Launchpad" in out.stderr and "single use" in out.stderr
    _no_token_printed(home, out)
    with LifecycleStore(home.url) as store:
        decision = decide_with_credential(store, home.rfc.rfc_id, decision="approve", credential=code,
                                          token_store=home.root / "auth" / "tokens.yaml", comment="from the UI",
                                          channel="dagster")
        assert decision.principal == "local-risk-officer"
        assert code not in json.dumps([e.detail for e in store.events()])
