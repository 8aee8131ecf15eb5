"""Start Alertmanager on monitoring/alertmanager/alertmanager.yml, pointed at this deployment's context webhook.

    MARLOPS_ALERT_CONTEXT_URL=http://127.0.0.1:9095 \\
    MARLOPS_ALERT_CONTEXT_TOKEN_FILE=/etc/marlops/alert_context.token \\
    python -m monitoring.alertmanager_launcher [--listen 127.0.0.1:9093] [--run-dir DIR] [--dry-run]

The checked-in configuration holds no secret and a default webhook URL. This renders a copy into the run
directory (default <MARLOPS_HOME>/alertmanager, 0700) with the webhook base URL replaced and every
receiver's `credentials_file` set to the absolute path of the token file the webhook also reads (the same
0600 file, so the token is never on a command line, in the config or in a log), checks it with
`amtool check-config` when amtool is installed, and execs Alertmanager on it (HA clustering off: one
instance per deployment). `--dry-run` prints the rendered config path and the command instead.
Slack and PagerDuty credentials are not Alertmanager's business: the context webhook holds them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

TEMPLATE = Path(__file__).resolve().parent / "alertmanager" / "alertmanager.yml"
DEFAULT_CONTEXT_URL = "http://127.0.0.1:9095"
DEFAULT_PLAYBOOKS_URL = "http://127.0.0.1:9096"  # marlops/playbooks/service.py
PLAYBOOKS_RECEIVER = "marlops-playbooks"
BINARIES = ("alertmanager", "prometheus-alertmanager")  # upstream name, Debian's name


class LaunchError(RuntimeError):
    pass


def find_alertmanager() -> str | None:
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


def _base(url: str, what: str) -> Any:
    base = urlsplit(url)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise LaunchError(f"{what} {url!r} is not an http(s) URL")
    return base


def render_config(context_url: str, token_file: Path, template: Path = TEMPLATE,
                  playbooks_url: str = DEFAULT_PLAYBOOKS_URL) -> dict[str, Any]:
    """The template with each webhook's base URL replaced (its path kept) by `context_url`, or by `playbooks_url`
    for the playbook runner's receiver, and its bearer credentials read from `token_file` (absolute): both
    marlops webhooks check the same token."""
    bases = {"context": _base(context_url, "MARLOPS_ALERT_CONTEXT_URL"),
             PLAYBOOKS_RECEIVER: _base(playbooks_url, "MARLOPS_PLAYBOOKS_URL")}
    config = yaml.safe_load(template.read_text())
    for receiver in config.get("receivers", []):
        base = bases[PLAYBOOKS_RECEIVER if receiver.get("name") == PLAYBOOKS_RECEIVER else "context"]
        for hook in receiver.get("webhook_configs", []):
            path = urlsplit(hook["url"]).path
            hook["url"] = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}{path}"
            hook.setdefault("http_config", {}).setdefault("authorization", {"type": "Bearer"})
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file.resolve())
    return config


def write_config(config: dict[str, Any], run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    path = run_dir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def alertmanager_command(binary: str, config: Path, storage: Path, listen: str) -> list[str]:
    return [binary, f"--config.file={config}", f"--storage.path={storage}", f"--web.listen-address={listen}",
            "--cluster.listen-address="]


def _check_token_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise LaunchError(f"token file {path} cannot be read: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise LaunchError(f"token file {path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m monitoring.alertmanager_launcher",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:9093", help="Alertmanager's web listen address")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="rendered config and storage (default <MARLOPS_HOME>/alertmanager)")
    parser.add_argument("--dry-run", action="store_true", help="render and check, print the command, do not start")
    args = parser.parse_args(argv)
    try:
        token_env = os.environ.get("MARLOPS_ALERT_CONTEXT_TOKEN_FILE")
        if not token_env:
            raise LaunchError("MARLOPS_ALERT_CONTEXT_TOKEN_FILE is not set: the bearer token file Alertmanager "
                              "presents to the context webhook")
        token_file = Path(token_env)
        _check_token_file(token_file)
        run_dir = args.run_dir or Path(os.environ.get("MARLOPS_HOME", ".marlops")).resolve() / "alertmanager"
        config = write_config(render_config(os.environ.get("MARLOPS_ALERT_CONTEXT_URL", DEFAULT_CONTEXT_URL),
                                            token_file,
                                            playbooks_url=os.environ.get("MARLOPS_PLAYBOOKS_URL",
                                                                         DEFAULT_PLAYBOOKS_URL)), run_dir)
        if (amtool := shutil.which("amtool")) is not None:
            check = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True)
            if check.returncode != 0:
                raise LaunchError(f"amtool check-config {config} failed:\n{check.stdout}{check.stderr}")
        binary = find_alertmanager()
        if binary is None:
            raise LaunchError("alertmanager is not installed: run scripts/install_monitoring.sh")
    except LaunchError as exc:
        raise SystemExit(f"alertmanager launcher: {exc}") from None
    command = alertmanager_command(binary, config, run_dir / "data", args.listen)
    if args.dry_run:
        print(" ".join(command))
        return
    sys.stdout.flush()
    os.execv(binary, command)


if __name__ == "__main__":
    main()
