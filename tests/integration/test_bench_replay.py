"""The replay-throughput bench (marlops.bench_replay) at a tiny size: 1-minute bars through the real services, and
a report whose figures agree with each other. The 5-minute target is reported, never asserted."""

from pathlib import Path

import pytest

from contracts.config import load_rl_config
from marlops.bench_replay import TARGET_SYMBOL_DECISIONS, replay_throughput
from marlops.paths import StatePaths

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_replay_throughput_when_tiny_then_figures_are_consistent_and_target_is_extrapolated(tmp_path: Path) -> None:
    paths = StatePaths(root=tmp_path / ".marlops", project_root=tmp_path).ensure()
    report = replay_throughput(paths, load_rl_config(REPO / "config" / "rl"), n_symbols=3, days=1, minutes_per_day=40,
                               history_days=4, seed=5, profile_bars=10, profile_top=8)

    assert report["symbols"] == 3 and report["trading_days"] == 1 and report["minutes_per_day"] == 40
    assert report["bars"] == report["bars_replayed"] == 40  # every replayed minute decided
    assert report["symbol_decisions"] == report["symbols"] * report["bars"]
    assert report["wall_s"] > 0
    assert report["symbol_decisions_per_s"] == pytest.approx(report["symbol_decisions"] / report["wall_s"])
    assert report["bars_per_s"] == pytest.approx(report["bars"] / report["wall_s"])
    assert report["ms_per_bar"] == pytest.approx(1000 * report["wall_s"] / report["bars"])
    assert report["decision_latency_ms"]["p50"] > 0
    # The loop's wall time is at least the bars' own decision latencies (it holds them, plus the source's work).
    assert report["wall_s"] * 1000 >= report["decision_latency_ms"]["mean"] * report["bars"] * 0.99

    assert report["target_s"] == 300 and report["target_symbol_decisions"] == TARGET_SYMBOL_DECISIONS == 1_170_000
    assert report["full_size"] is False and report["met_basis"].startswith("EXTRAPOLATED")
    assert report["projected_full_size_s"] == pytest.approx(TARGET_SYMBOL_DECISIONS / report["symbol_decisions_per_s"],
                                                            rel=1e-3, abs=0.1)
    assert report["met"] == (report["projected_full_size_s"] <= report["target_s"])

    assert report["profile_bars"] == 10  # profiled after the timed bars, not counted in them
    assert report["profile"] and len(report["profile"]) <= 8
    assert any(row["function"].startswith("marlops/trading.py") for row in report["profile"])
    cumulative = [row["cumtime_s"] for row in report["profile"]]
    assert cumulative == sorted(cumulative, reverse=True)
    assert report["profile_self"] and report["profile_self"][0]["tottime_s"] >= report["profile_self"][-1]["tottime_s"]
    sampled = report["gateway_profile"]
    assert sampled["busy_samples"] + sampled["idle_samples"] > 0 and "top_inclusive_project_code" in sampled
    assert all(Path(f).is_file() for f in report["profile_files"].values())
    assert report["cpu_s_during_loop"].get("trading loop (main thread)", 0) > 0
    assert "symbol-decisions" in report["definition"]
