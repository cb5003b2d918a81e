"""Two hourly runs at once, as the product runs them (issue 8): the served ``hourly-score``
deployment (deployments/serve.py, concurrency limit 1, collision strategy CANCEL_NEW)
is given two runs of the same window, and the Prefect server lets exactly one run.

How Prefect 3.9 enforces it: the served runner moves each run it picks up from
Scheduled to Pending (``prefect/runner/_state_proposer.py::propose_pending``); the
server's ``SecureFlowConcurrencySlots`` rule (``prefect/server/orchestration/core_policy.py``)
takes a slot of the deployment's concurrency limit on that transition, and when none is
left, rejects it with ``Cancelled("Deployment concurrency limit reached.")`` under
CANCEL_NEW. The runner then drops the run without starting a process. The slot is given
back when the admitted run reaches a final state.

To make the collision certain rather than a race, both runs are created while nothing
serves the deployment; ``cricket serve`` is then started and picks up both in its first
poll, proposing Pending for both within milliseconds while the first flow process is
still starting (seconds).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fixtures.pipeline import settings_env
from reliability_support import (
    END,
    SELECTOR,
    duplicates,
    pipeline_settings_for,
    score_rows,
    tiny_pipeline,
)
from serve_support import serve_env, served, wait_no_children

pytestmark = pytest.mark.slow

HOSTS = 3
POINTS_PER_HOUR = HOSTS * 360  # 10 s steps
DEPLOYMENT = "hourly-score/hourly-score"


def _serve_env(settings: Any, home: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return serve_env(str(PREFECT_API_URL.value()), home, **settings_env(settings))


def _wait_final(ids: list[Any], proc: subprocess.Popen, log: Path, timeout: float) -> list[Any]:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = [client.read_flow_run(i) for i in ids]
            if all(r.state is not None and r.state.is_final() for r in runs):
                return runs
            assert proc.poll() is None, f"cricket serve exited early:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
    states = [(r.id, r.state) for r in runs]
    raise AssertionError(f"runs not final after {timeout}s: {states}\n{log.read_text()[-4000:]}")


def test_two_served_hourly_runs_of_one_window_one_completes_the_other_is_cancelled_nothing_written_twice(
    influx_server, prefect_api, tmp_path, monkeypatch
):
    from cricket.deployments.serve import build_deployments
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    pipe = tiny_pipeline(pipeline_settings_for(influx_server, tmp_path), monkeypatch, hosts=HOSTS)
    settings = pipe.settings

    # Register the deployment exactly as `cricket serve` does (it re-applies the same
    # definitions by name on start, keeping the id), but serve nothing yet.
    hourly = next(d for d in build_deployments(schedules=False) if d.name == "hourly-score")
    hourly.apply()
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(DEPLOYMENT)
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
    assert dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert dep.global_concurrency_limit.active_slots == 0, "a run of another test holds the slot"

    params = {"selector": SELECTOR.model_dump(mode="json"), "window": "PT1H",
              "at": END.isoformat(), "model_version": None}
    first = run_deployment(DEPLOYMENT, parameters=params, timeout=0)
    second = run_deployment(DEPLOYMENT, parameters=params, timeout=0)
    assert first.state.is_scheduled() and second.state.is_scheduled()

    home = tmp_path / "prefect-home"
    home.mkdir()
    log_path = tmp_path / "serve.log"
    t0 = time.monotonic()
    with served(tmp_path, _serve_env(settings, home), log_path) as proc:
        _wait_final([first.id, second.id], proc, log_path, timeout=150)
        final_s = time.monotonic() - t0
        # Stopping `cricket serve` while a finished run's process is still exiting
        # makes Prefect's runner force that run to Cancelled ("Runner is shutting
        # down."), COMPLETED or not: wait for the flow process to be gone first.
        linger_s = wait_no_children(proc.pid, timeout=60)
    served_log = log_path.read_text()
    with get_client(sync_client=True) as client:  # as recorded after serve stopped
        runs = [client.read_flow_run(i) for i in (first.id, second.id)]

    by_type = {r.state.type.value: r for r in runs}
    assert sorted(by_type) == ["CANCELLED", "COMPLETED"], (
        f"states {[(r.name, r.state) for r in runs]}; serve log:\n{served_log[-4000:]}"
    )
    done, cancelled = by_type["COMPLETED"], by_type["CANCELLED"]
    assert "concurrency limit" in (cancelled.state.message or "").lower(), cancelled.state
    # The cancelled run never started: no process, no task, nothing it could have written.
    # (Prefect stamps start_time on any final state, so look at the state history.)
    assert cancelled.run_count == 0, cancelled
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        history = [s.type.value for s in client.read_flow_run_states(cancelled.id)]
        assert history == ["SCHEDULED", "CANCELLED"], history
        admitted = [s.type.value for s in client.read_flow_run_states(done.id)]
        assert admitted == ["SCHEDULED", "PENDING", "PENDING", "RUNNING", "COMPLETED"], admitted
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[cancelled.id]))
        )
        assert tasks == [], f"the cancelled run ran tasks: {[t.name for t in tasks]}"
        # And the slot is free again once the admitted run is done.
        limit = client.read_deployment_by_name(DEPLOYMENT).global_concurrency_limit
        assert limit is not None and limit.active_slots == 0, limit

    # One point per series per 10 s step in the window, all from the one run.
    rows = score_rows(settings, END - pd.Timedelta(hours=1), END)
    assert len(rows) == POINTS_PER_HOUR, (len(rows), served_log[-2000:])
    assert duplicates(rows) == 0
    assert rows.reset_index().groupby("series").size().eq(360).all()
    assert rows["model_version"].nunique() == 1 and str(rows["model_version"].iloc[0]) == pipe.version

    # One scoring record in MLflow, not two.
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    exp = client.get_experiment_by_name(f"{settings.model_name}-scoring")
    assert exp is not None
    assert len(client.search_runs([exp.experiment_id])) == 1
    print(f"served collision: both runs final {final_s:.1f}s after `cricket serve` started; "
          f"flow process gone {linger_s:.1f}s later")

