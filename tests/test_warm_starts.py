"""Served runs forked from the warm process (cricket.deployments.warm_starts), against a
real Prefect API: each run is a real flow run (states, task runs, logs in the API) in a
process of its own, forked from the fork server (not spawned), with the lazily imported
modules already there and NumPy's global generator reseeded; a cancelled run ends Cancelled and its process is gone; a run
whose process dies is reported Crashed; nothing one run leaves in its process is seen by
the next; and `cricket serve --cold-starts` keeps Prefect's own way.

The served program is tests/warm_serve_support.py: the same serving code as `cricket
serve` (``serve_flows`` under ``warm_starts``) with flows that can be made to sleep or
die."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_support import (
    children,
    own_prefect_api,
    run_processes,
    serve_env,
    served,
    stop,
    tail,
    wait_for_deployments,
)

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    with own_prefect_api() as url:
        yield url


@pytest.fixture(scope="module")
def warm_server(api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("warm")
    (tmp / "home").mkdir()
    env = serve_env(api, tmp / "home", PYTHONPATH=str(HERE))
    log = tmp / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, str(HERE / "warm_serve_support.py")],
                                cwd=tmp, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for_deployments([f"warm-{n}/{n}" for n in ("probe", "sleeper", "crasher")],
                             proc, log, timeout=300)
        yield proc, log
    finally:
        stop(proc)


def _wait_final(flow_run_id: Any, proc: subprocess.Popen, log: Path, timeout: float) -> Any:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            assert proc.poll() is None, f"the server exited:\n{tail(log)}"
            time.sleep(0.5)
    raise AssertionError(f"run not final after {timeout}s: {run.state}\n{tail(log)}")


def _logs(flow_run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[flow_run_id])))
    return [entry.message for entry in logs]


def _wait_log(flow_run_id: Any, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in _logs(flow_run_id):
            if text in message:
                return message
        time.sleep(0.5)
    raise AssertionError(f"no log with {text!r}: {_logs(flow_run_id)}")


def test_warm_runs_are_flow_runs_in_processes_of_their_own_forked_from_the_warm_server(
    api: str, warm_server: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    proc, log = warm_server
    results = []
    for tag in ("first", "second"):
        run = run_deployment("warm-probe/probe", parameters={"tag": tag}, timeout=180)
        assert run.state is not None and run.state.is_completed(), f"{run.state}\n{tail(log)}"
        message = _wait_log(run.id, f"probe {tag} ran: ")
        results.append((run, json.loads(message.split(" ran: ", 1)[1])))
        with get_client(sync_client=True) as client:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        assert [t.name.rsplit("-", 1)[0] for t in tasks] == ["where"]
        assert tasks[0].state is not None and tasks[0].state.is_completed()

    forkserver = {p for p in children(proc.pid) if _is_forkserver(p)}
    assert len(forkserver) == 1, f"one fork server, a child of the server: {children(proc.pid)}"
    for _run, out in results:
        assert out["pid"] != proc.pid
        assert out["ppid"] in forkserver, out  # forked from the warm process, not spawned
        assert out["preloaded"] == {"mlflow": True, "sklearn.cluster": True}, out
    (_, first), (_, second) = results
    assert first["pid"] != second["pid"]
    assert first["mark_before"] == [] and second["mark_before"] == [], (
        "a run saw what an earlier run left in its process")
    assert first["draw"] != second["draw"], "two forked runs drew the same random numbers"


def test_a_cancelled_warm_run_ends_cancelled_and_its_process_is_gone(
    api: str, warm_server: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    proc, log = warm_server
    run = run_deployment("warm-sleeper/sleeper", parameters={"seconds": 300}, timeout=0)
    message = _wait_log(run.id, "sleeper running in process")
    pid = int(message.rsplit(" ", 1)[1])
    assert pid in run_processes(proc.pid)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    final = _wait_final(run.id, proc, log, timeout=120)
    assert final.state.is_cancelled(), f"{final.state}\n{tail(log)}"
    deadline = time.monotonic() + 30
    while pid in run_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pid not in run_processes(proc.pid), "the cancelled run's process still runs"
    assert proc.poll() is None, "cancelling a run stopped the server"


def test_a_warm_run_whose_process_dies_is_reported_crashed(api: str, warm_server: Any) -> None:
    from prefect.deployments import run_deployment

    proc, log = warm_server
    run = run_deployment("warm-crasher/crasher", timeout=0)
    final = _wait_final(run.id, proc, log, timeout=120)
    assert final.state.is_crashed(), f"{final.state}\n{tail(log)}"
    assert "9" in (final.state.message or ""), final.state.message  # the exit status
    # the server and its fork server live on and serve the next run
    again = run_deployment("warm-probe/probe", parameters={"tag": "after"}, timeout=180)
    assert again.state is not None and again.state.is_completed(), f"{again.state}\n{tail(log)}"


def test_cricket_serve_cold_starts_keeps_prefects_own_process_start(
    tmp_path: Path, api: str
) -> None:
    """`--cold-starts`: no fork server; the runs' processes are the server's children."""
    (tmp_path / "home").mkdir()
    env = serve_env(api, tmp_path / "home")
    log = tmp_path / "serve.log"
    with served(tmp_path, env, log, "--cold-starts") as proc:
        wait_for_deployments(["hourly-score/hourly-score"], proc, log, timeout=300)
        assert not [p for p in children(proc.pid) if _is_forkserver(p)], tail(log)
    assert "warm process" not in log.read_text()


def _is_forkserver(pid: int) -> bool:
    try:
        return b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
