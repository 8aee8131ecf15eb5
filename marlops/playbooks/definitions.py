"""The playbooks. An alert rule names its playbook in the label `playbook` (monitoring/prometheus/alert_rules.yml);
tests/marlops/test_marlops_playbooks.py checks every such label names a playbook here and every playbook has a rule.

Steps (each one tightens; none loosens anything, so a duplicate or late run is harmless):
  safe_mode    gateway POST /v1/flatten: HALTED for new orders, positions closed gradually on the configured schedule
  kill_switch  gateway POST /v1/kill-switch: HALTED, no order of any kind
  unwind       gateway POST /v1/flatten with fraction_per_interval 1.0: every position closed at the next interval
  defensive    gateway POST /v1/defensive: the master's defensive mode forced, with the defensive preset's caps (no
               exposure increase: the action mask the policies were trained with under a defensive directive)
  rollback     production back to last-known-good (the SL fallback when there is none), only once the anomaly is
               confirmed from the recorded live bars (a false alert changes nothing)
"""

from __future__ import annotations

from dataclasses import dataclass

STEPS = ("safe_mode", "kill_switch", "unwind", "defensive", "rollback")
LABEL = "playbook"


@dataclass(frozen=True)
class Playbook:
    name: str
    summary: str
    steps: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown or not self.steps:
            raise ValueError(f"playbook {self.name}: unknown or no steps {unknown}")


PLAYBOOKS: dict[str, Playbook] = {p.name: p for p in (
    Playbook("latency_spike", "safe mode: halt new orders, close positions gradually", ("safe_mode",)),
    Playbook("cost_explosion", "master defensive mode and tightened action masks", ("defensive",)),
    Playbook("drawdown_breach", "kill switch and unwind", ("kill_switch", "unwind")),
    Playbook("feature_drift", "pause trading (halt; positions held)", ("kill_switch",)),
    Playbook("model_anomaly", "revert to last-known-good", ("rollback",)),
)}
