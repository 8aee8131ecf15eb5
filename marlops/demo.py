"""`marlops demo`: materialize the spine through Dagster, then report the staging replay."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from marlops.errors import PipelineError
from marlops.paths import StatePaths

logger = logging.getLogger(__name__)

MANAGED_LOGGERS = ["marlops", "agents", "registry", "serving", "gateway", "features", "market_data", "data_checks"]
# Dagster events that are bookkeeping, not progress.
QUIET_EVENTS = ("LOADED_INPUT", "HANDLED_OUTPUT", "STEP_OUTPUT", "ASSET_MATERIALIZATION_PLANNED", "LOGS_CAPTURED",
                "STEP_INPUT", "RESOURCE_INIT", "ENGINE_EVENT", "STEP_WORKER", "RUN_ENQUEUED", "RUN_DEQUEUED",
                "RUN_STARTING", "ASSET_CHECK_EVALUATION_PLANNED", "Loading file", "No dagster instance")


# First line of every dagster.yaml marlops writes; a dagster.yaml without it is the user's, never touched.
DAGSTER_YAML_MARKER = "# marlops-managed dagster.yaml"


def is_marlops_dagster_yaml(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.readline().strip().startswith(DAGSTER_YAML_MARKER)
    except OSError:
        return False


def _is_legacy_marlops_yaml(path: Path, config: dict[str, Any]) -> bool:
    """A file written by marlops before the marker existed: exactly our config, nothing else."""
    try:
        return bool(yaml.safe_load(path.read_text(encoding="utf-8")) == config)
    except (OSError, yaml.YAMLError):
        return False


def write_dagster_instance(paths: StatePaths) -> Path:
    """The Dagster instance config in DAGSTER_HOME (the user's when set, else <MARLOPS_HOME>/dagster) so
    runs survive and show in the UI, with our loggers as Dagster logs. A dagster.yaml that marlops did not
    write (no marker line) is the user's: it is left exactly as it is and used as is."""
    paths.dagster_home.mkdir(parents=True, exist_ok=True)
    target = paths.dagster_home / "dagster.yaml"
    config = {
        "python_logs": {"python_log_level": "INFO", "managed_python_loggers": MANAGED_LOGGERS},
        "telemetry": {"enabled": False},
    }
    if target.exists() and not is_marlops_dagster_yaml(target) and not _is_legacy_marlops_yaml(target, config):
        logger.info("using the existing Dagster instance config %s as is (not written by marlops, so not changed; "
                    "marlops's loggers show in Dagster only if it lists them under python_logs)", target)
        return target
    text = (f"{DAGSTER_YAML_MARKER} (marlops/demo.py rewrites this file; delete this line to keep your edits)\n"
            + yaml.safe_dump(config, sort_keys=False))
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
    return target


def dagster_env(paths: StatePaths, environment: str = "dev") -> dict[str, str]:
    """The environment of a Dagster run: DAGSTER_HOME is paths.dagster_home (which is the user's DAGSTER_HOME
    when they set one)."""
    env = dict(os.environ)
    env.update({"DAGSTER_HOME": str(paths.dagster_home), "MARLOPS_HOME": str(paths.root), "MARLOPS_ENV": environment,
                "MARLOPS_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"})
    return env


def _show(line: str) -> bool:
    return bool(line.strip()) and not any(event in line for event in QUIET_EVENTS)


def materialize_spine(paths: StatePaths, run_config: dict[str, Any], *, environment: str = "dev") -> None:
    run_job(paths, "spine_job", run_config, environment=environment)


def run_job(paths: StatePaths, job: str, run_config: dict[str, Any], *, environment: str = "dev",
            allow_failure: bool = False, label: str = "") -> int:
    """`dagster job execute` of `job` on the project's Dagster instance (the runs show in the UI). A failed run
    raises PipelineError unless `allow_failure` (a gate that blocks is a failed run: the caller reads why)."""
    write_dagster_instance(paths)
    name = label or job
    config_path = paths.root / "demo" / f"run_config-{name}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(run_config, sort_keys=False))
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster), "job", "execute", "-m", "orchestration.definitions", "-j", job, "-c", str(config_path)]
    log_path = paths.logs_dir / f"demo-dagster-{name}.log"
    logger.info("Dagster %s (full log: %s)", job, log_path)
    tail: list[str] = []
    with log_path.open("w") as log, subprocess.Popen(
        cmd, cwd=paths.project_root, env=dagster_env(paths, environment), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line.rstrip()])[-40:]
            if _show(line):
                sys.stderr.write("  " + _shorten(line.rstrip()) + "\n")
        code = proc.wait()
    if code != 0 and not allow_failure:
        raise PipelineError(f"Dagster run failed (exit {code}); last lines:\n" + "\n".join(tail) + f"\nfull log: {log_path}")
    return code


def _shorten(line: str, width: int = 220) -> str:
    # Dagster prefixes every line with date, logger, job and run id; keep the informative tail.
    parts = line.split(" - ")
    if len(parts) >= 6:
        line = " - ".join([parts[0][11:19]] + parts[5:])
    return line if len(line) <= width else line[: width - 1] + "…"


def demo_summary(paths: StatePaths, replay: dict[str, Any] | None = None) -> dict[str, Any]:
    """The staging replay's figures (of `replay`, else the latest staging report) plus where Dagster keeps runs."""
    if replay is None:
        latest = paths.staging_dir / "latest.json"
        if not latest.is_file():
            raise PipelineError(f"{latest} missing: the staging replay did not report")
        replay = json.loads(latest.read_text())
    if not replay:
        return {"dagster_home": str(paths.dagster_home), "staging": "not run (the first candidate stopped earlier)"}
    replay = dict(replay)
    replay.pop("observation_checksums", None)
    replay["dagster_home"] = str(paths.dagster_home)
    return replay
