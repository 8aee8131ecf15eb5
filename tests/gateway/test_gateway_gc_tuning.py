"""The process entry points tune the garbage collector once after start-up (gateway/gc_tuning.py)."""

import subprocess
import sys


def test_tune_gc_when_called_then_startup_objects_frozen_and_young_collections_rarer() -> None:
    # In a child process: freezing the test process's heap would outlive this test.
    code = ("import gc; before = gc.get_threshold()[0]\n"
            "from gateway.gc_tuning import GEN0_THRESHOLD, tune_gc_for_latency\n"
            "tune_gc_for_latency()\n"
            "print(before, gc.get_threshold()[0], GEN0_THRESHOLD, gc.get_freeze_count())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    before, after, expected, frozen = (int(x) for x in done.stdout.split())
    assert before != expected and after == expected
    assert frozen > 1000  # the interpreter's and the gateway's modules, at least
