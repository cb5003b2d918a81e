"""The hourly score's scoring processes (``cricket.tasks.score_processes``): what they
leave behind. (That they store what the threads store: tests/test_pipeline.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

CHILD = """
import sys
from cricket.tasks.score_processes import ScoringProcesses
procs = ScoringProcesses(None, None, None, 2)
print(*(p for p in procs.pool._processes), flush=True)
sys.stdin.read()  # until killed
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked only on Linux")
def test_scoring_processes_end_with_a_killed_flow_process():
    """A flow run killed (cancelled, out of memory) while its scoring processes wait for
    work must not leave them behind, each holding the model: they end with it."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in pids if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
    for p in left:  # do not leave them to the rest of the suite either
        os.kill(p, signal.SIGKILL)
    assert not left, f"scoring processes {left} outlived the flow's process"
