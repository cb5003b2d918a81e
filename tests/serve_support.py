"""Helpers for the tests that run a real `cricket serve` process against a real Prefect API:
the environment it gets, starting and stopping it, waiting for its deployments, and the tail
of its log for failure messages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


@contextmanager
def own_prefect_api() -> Iterator[str]:
    """A Prefect API server of its own (Prefect's test harness, throwaway database) for a
    test module whose deployments and runs must not meet another module's; yields its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield str(PREFECT_API_URL.value())


def serve_env(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any PREFECT_*/CRICKET_* setting, pointed at
    ``api_url`` with its own Prefect home and no cricket.toml, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CRICKET_"))}
    env.update(
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        CRICKET_CONFIG=str(home / "no-cricket.toml"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def tail(path: Path, n: int = 4000) -> str:
    """The last ``n`` characters of a log file, for an assertion message."""
    try:
        return path.read_text()[-n:]
    except OSError:
        return "(no log)"


def children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid``."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _helper(pid: int) -> bool:
    """Whether ``pid`` is one of multiprocessing's long-lived helpers (the fork server the
    warm starts fork runs from, its resource tracker), not a flow run's process."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"multiprocessing.forkserver" in cmd or b"multiprocessing.resource_tracker" in cmd


def run_processes(pid: int) -> list[int]:
    """The flow runs' processes of the serving process ``pid``: its children (a cold start
    spawns them) and the fork server's (a warm start forks them there)."""
    out = []
    for kid in children(pid):
        out += children(kid) if _helper(kid) else [kid]
    return out


def wait_no_children(pid: int, timeout: float) -> float:
    """Wait until the serving process ``pid`` has no flow run's process left; returns the
    seconds waited."""
    t0 = time.monotonic()
    while run_processes(pid):
        assert time.monotonic() - t0 < timeout, f"flow processes still alive: {run_processes(pid)}"
        time.sleep(0.2)
    return time.monotonic() - t0


@contextmanager
def served(cwd: Path, env: dict[str, str], log_path: Path,
           *options: str) -> Iterator[subprocess.Popen]:
    """A `cricket serve --no-schedules [options]` process writing to ``log_path``; stopped
    on exit.

    Stopping `cricket serve` while a finished run's flow process is still exiting makes
    Prefect's runner force that run to Cancelled, so the flow processes are given up to
    30 s to end before the server is stopped."""
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(BIN / "cricket"), "serve", "--no-schedules", *options], cwd=cwd,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            deadline = time.monotonic() + 30
            while proc.poll() is None and run_processes(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Terminate ``proc``; kill it if it has not ended 30 s later."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_deployments(names: list[str], proc: subprocess.Popen, log_path: Path,
                         timeout: float) -> None:
    """Wait until the served process has registered every "flow/deployment" in ``names``."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"cricket serve exited early:\n{tail(log_path)}"
            try:
                for n in names:
                    client.read_deployment_by_name(n)
                return
            except ObjectNotFound:
                time.sleep(1)
    raise AssertionError(f"cricket serve did not register {names} within {timeout}s:\n"
                         f"{tail(log_path)}")
