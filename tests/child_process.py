"""Stopping a test's child process: SIGTERM, a grace period, then SIGKILL."""

import subprocess


def stop_child(proc: subprocess.Popen[bytes], term_timeout_s: float = 20.0, kill_timeout_s: float = 10.0) -> None:
    """SIGTERM and wait up to `term_timeout_s`; SIGKILL and wait up to `kill_timeout_s` if it is still running.
    Nothing when it has exited already."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=term_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=kill_timeout_s)
