"""A served hourly run: the `hourly-score` deployment run through `cricket serve`
against a Prefect API server, a local influxd and an MLflow SQLite store, on a synthetic
fleet at 10 s (`--hosts` series): where the run's time went, from Prefect's own records
of the run and its task runs, and how much of it was orchestration.

What it does:

1. starts influxd (the project's launcher), a Prefect API server (``prefect server``'s
   app in a subprocess, its own database) and, unless ``--keep DIR`` already holds them,
   writes the fleet and trains its champion in child processes (not timed);
2. starts ``cricket serve --no-schedules`` (a real process, as in production) and waits
   until it has registered the deployments;
3. runs ``hourly-score`` through ``run_deployment`` for the hour after the champion's
   training window (``--runs`` times; each run drops the scores, events and incidents of
   the one before, so every run writes and pages as the first did) and reads back the
   flow run, its states and its task runs.

Orchestration of a served run (``orchestration_s``) is the wall time of the run that is
not Cricket's own work, in three measured parts:

- ``start_s``: the runner took the run (Pending) -> the flow is Running: Prefect spawns a
  process for the run (multiprocessing "spawn"), which imports the flow's modules, and
  the engine sets the run up;
- ``end_s``: the flow body returned -> the run is Completed; the body's own wall time
  (``body_s``) is what the flow measured of itself (``summary["timings"]["flow"]``);
- ``in_body_s``: the body's wall time outside the task functions it waits on one after
  the other (load-model, discover-series, alert, publish-report, log-report-to-mlflow,
  write-data-missing: their run time as Prefect recorded it) and outside the batches
  (``timings["batches"]``: the wall time of reading, scoring and writing, batch tasks
  ``workers`` at a time). It holds the task runs' bookkeeping on the flow's thread and
  the flow's own code between tasks (building the report, finding missing data), so it
  over-counts orchestration a little; the bookkeeping of the batch tasks on the worker
  threads is inside ``batches`` and not counted (Prefect 3 runs tasks client-side: a
  few milliseconds each, 2 per batch).

``pickup_s`` (run created -> Pending) is reported apart: the runner polls the API every
``PREFECT_RUNNER_POLL_FREQUENCY`` seconds (here set to 1), and a scheduled run is fetched
before its scheduled time, so it is not part of a scheduled run's wall time.

    .venv/bin/python benchmarks/served_score.py --hosts 1000 --keep /tmp/served-1000

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from fleet import END, train_in_child, write_in_children  # noqa: E402

SELECTOR = {"measurement": "waveform", "field": "value", "group_by": ["host"], "every": "PT10S"}
TRAIN_HOURS = 4.0
#: the tasks the hourly flow waits on one after the other (the rest run in batches)
BATCH_TASKS = ("score-batch", "write-results")


def _free_port() -> int:
    from cricket.influx.server import find_free_port

    return find_free_port()


def _state_times(client, flow_run_id) -> dict[str, float]:  # noqa: ANN001
    """First timestamp (epoch seconds) of each state type of the flow run."""
    out: dict[str, float] = {}
    for st in sorted(client.read_flow_run_states(flow_run_id), key=lambda s: s.timestamp):
        out.setdefault(st.type.value, st.timestamp.timestamp())
    return out


def _task_runs(client, flow_run_id) -> dict:  # noqa: ANN001
    """The flow run's task runs, per task: how many, and their run time (Running ->
    Completed, the task function) summed."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
    )
    per_task: dict[str, dict] = {}
    for tr in runs:
        d = per_task.setdefault(tr.name.rsplit("-", 1)[0], {"runs": 0, "run_s": 0.0})
        d["runs"] += 1
        d["run_s"] = round(d["run_s"] + tr.total_run_time.total_seconds(), 3)
    return {"task_runs": len(runs), "per_task": per_task}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None,
                    help="folder that keeps the fleet and its champion between runs")
    args = ap.parse_args(argv)
    tmp = (args.keep or Path(tempfile.mkdtemp(prefix="cricket-served-bench-"))).absolute()
    tmp.mkdir(parents=True, exist_ok=True)
    home = tmp / "prefect"
    home.mkdir(exist_ok=True)
    for name in list(os.environ):
        if name.startswith(("CRICKET_", "PREFECT_")):
            del os.environ[name]
    os.environ.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    })
    from cricket.influx.server import InfluxServer

    influx = InfluxServer(port=_free_port(), data_dir=tmp / "influx").start(timeout=120)
    from prefect.server.api.server import SubprocessASGIServer

    api = SubprocessASGIServer(port=_free_port())
    api.start(timeout=300)
    serve = None
    stack = contextlib.ExitStack()
    result: dict = {"hosts": args.hosts, "cores": os.cpu_count(),
                    "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        cricket_env = {
            "CRICKET_STATE_DIR": str(tmp / "state"),
            "CRICKET_INFLUX_URL": influx.url,
            "CRICKET_INFLUX_DATABASE": "served_score",
            "CRICKET_MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
            "CRICKET_MODEL_NAME": "served-score",
            "CRICKET_REPORT_DIR": str(tmp / "reports"),
            "CRICKET_INFLUX_TIMEOUT_S": "300",
            "CRICKET_CONFIG": str(tmp / "no-cricket.toml"),
        }
        os.environ.update(cricket_env)
        os.environ["PREFECT_API_URL"] = api.api_url
        from cricket.config import Settings
        from cricket.influx.influxql import ensure_database

        settings = Settings()
        ensure_database(settings)
        marker = tmp / "version.json"
        if not marker.exists():
            start = END - pd.Timedelta(hours=2 + TRAIN_HOURS)
            write_in_children([(settings.model_dump_json(), args.hosts,
                                (END - start) / pd.Timedelta(days=1), str(start), 1,
                                str(END - pd.Timedelta(hours=2)))])
            version = train_in_child(dict(os.environ), {
                "train_window_h": TRAIN_HOURS, "end": str(END - pd.Timedelta(hours=2)),
                "n_clusters": None, "min_history_points": min(1000, int(TRAIN_HOURS * 216)),
            })
            marker.write_text(json.dumps({"version": version, "hosts": args.hosts}))
        version = json.loads(marker.read_text())["version"]

        env = {k: v for k, v in os.environ.items()}
        env.update(PREFECT_RUNNER_POLL_FREQUENCY="1",
                   # the flow's return value (its summary) is read back from the result
                   PREFECT_RESULTS_PERSIST_BY_DEFAULT="true",
                   PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        os.environ["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] = "true"
        log = (tmp / "serve.log").open("w")
        serve = subprocess.Popen([str(BIN / "cricket"), "serve", "--no-schedules"], cwd=tmp,
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # Prefect read its settings when it was imported: point this process at the server
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api.api_url}))
        t0 = time.perf_counter()
        with get_client(sync_client=True) as client:
            while True:
                if serve.poll() is not None:
                    raise SystemExit(f"cricket serve exited; see {tmp / 'serve.log'}")
                try:
                    client.read_deployment_by_name("hourly-score/hourly-score")
                    break
                except ObjectNotFound:
                    if time.perf_counter() - t0 > 300:
                        raise SystemExit("cricket serve did not register the deployments") from None
                    time.sleep(0.5)
        result["serve_ready_s"] = round(time.perf_counter() - t0, 1)
        import httpx

        runs = []
        for _ in range(args.runs):
            for m in ("cricket_score", "cricket_event", "cricket_incident"):
                httpx.post(f"{influx.url}/query", params={"db": "served_score",
                                                          "q": f'DROP MEASUREMENT "{m}"'},
                           timeout=300)
            load = [round(x, 2) for x in os.getloadavg()]
            t0 = time.perf_counter()
            fr = run_deployment(
                "hourly-score/hourly-score",
                parameters={"selector": SELECTOR, "window": "PT1H",
                            "at": (END - pd.Timedelta(hours=1)).isoformat(),
                            "model_version": version},
                timeout=3600,
            )
            wall = time.perf_counter() - t0
            if fr.state is None or not fr.state.is_completed():
                raise SystemExit(f"the served run ended {fr.state}; see {tmp / 'serve.log'}")
            summary = fr.state.result()
            with get_client(sync_client=True) as client:
                st = _state_times(client, fr.id)
                tasks = _task_runs(client, fr.id)
                artifacts = client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id])), limit=200)
            timings = summary["timings"]
            body = float(timings["flow"])
            start_s = st["RUNNING"] - st["PENDING"]
            run_s = st["COMPLETED"] - st["RUNNING"]
            end_s = max(0.0, run_s - body)
            # the body's time outside the task functions it waits on one after the other
            # and outside the batches (read, score, write: pipelined on the workers)
            sync = sum(d["run_s"] for name, d in tasks["per_task"].items()
                       if name not in BATCH_TASKS)
            in_body = max(0.0, body - sync - float(timings["batches"]))
            run = {
                "load_avg": load,
                "served_wall_s": round(wall, 2),
                "pickup_s": round(st["PENDING"] - st["SCHEDULED"], 2)
                if "SCHEDULED" in st else None,
                "start_s": round(start_s, 2),
                "run_s": round(run_s, 2),
                "body_s": round(body, 2),
                "end_s": round(end_s, 2),
                "in_body_s": round(in_body, 2),
                "task_runs": tasks["task_runs"],
                "per_task": tasks["per_task"],
                "artifacts_created": len(artifacts),
                "orchestration_s": round(start_s + end_s + in_body, 2),
                "series": summary["series"],
                "events": summary["events"],
                "timings": summary["timings"],
            }
            runs.append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
        result["runs"] = runs
        result["served_orchestration_1000_series_s"] = (
            min(r["orchestration_s"] for r in runs) if args.hosts == 1000 else None)
        result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        stack.close()
        if serve is not None:
            serve.terminate()
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
        api.stop()
        influx.stop()
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
