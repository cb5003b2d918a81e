"""A served hourly run: the `hourly-score` deployment run through `cricket serve`
against a Prefect API server, a local influxd and an MLflow SQLite store, on a synthetic
fleet at 10 s (`--hosts` series): where the run's time went, from Prefect's own records
of the run and its task runs, and how much of it was orchestration.

What it does:

1. starts influxd (the project's launcher), a Prefect API server (``prefect server``'s
   app in a subprocess, its own database) and, unless ``--keep DIR`` already holds them,
   writes the fleet and trains its champion in child processes (not timed);
2. measures apart what a cold start pays before its engine runs (``cold_imports``: a fresh
   interpreter starting, and importing what a run imports), then, for each entry of
   ``--starts`` in turn, starts ``cricket serve --no-schedules`` (a real process, as in
   production; ``warm``: as shipped, runs forked from a warm fork server; ``cold``:
   ``--cold-starts``, Prefect's own new process per run; ``--dask-workers N`` passed on)
   and waits until it has registered the deployments;
3. runs ``hourly-score`` through ``run_deployment`` for the hour after the champion's
   training window (``--runs`` times per served process; each run drops the scores, events
   and incidents of the one before, so every run writes and pages as the first did) and
   reads back the flow run, its states and its task runs. ``--starts cold,warm,cold,warm``
   compares both side by side in one run (``by_starts``).

Orchestration of a served run (``orchestration_s``) is the wall time of the run that is
not Cricket's own work, in three measured parts:

- ``start_s``: the runner took the run (Pending) -> the flow is Running: ``submit_s`` the
  runner proposing Submitting, then ``process_start_s`` the run's process starting (cold:
  a new interpreter importing Prefect and the flow's modules; warm: a fork of the warm
  process) and the engine setting the run up (settings, API client, Running);
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
``load_model_s`` (the load-model task) is the run's own work, not orchestration, but a cold
start pays importing MLflow in it. ``served_orchestration_1000_series_s``: the least
orchestration of the warm runs (what ``cricket serve`` ships), at 1,000 series.

    .venv/bin/python benchmarks/served_score.py --hosts 1000 --keep /tmp/served-1000
    .venv/bin/python benchmarks/served_score.py --hosts 1000 --starts cold,warm,cold,warm \
        --keep /tmp/served-1000         # warm against cold starts, back to back
    .venv/bin/python benchmarks/served_score.py --hosts 1000 --dask-workers 2 --keep ...

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

from fleet_setup import END, train_in_child, write_in_children  # noqa: E402

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
        if st.type.value == "PENDING":  # the runner's Pending, then its Submitting
            out["SUBMITTING"] = st.timestamp.timestamp()
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


def _stop(serve: subprocess.Popen) -> None:
    serve.terminate()
    try:
        serve.wait(timeout=30)
    except subprocess.TimeoutExpired:
        serve.kill()
        serve.wait()


def _wait_ready(serve: subprocess.Popen, log: Path) -> float:
    """Seconds until the served process has registered the hourly deployment."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    t0 = time.perf_counter()
    with get_client(sync_client=True) as client:
        while True:
            if serve.poll() is not None:
                raise SystemExit(f"cricket serve exited; see {log}")
            try:
                client.read_deployment_by_name("hourly-score/hourly-score")
                return round(time.perf_counter() - t0, 1)
            except ObjectNotFound:
                if time.perf_counter() - t0 > 300:
                    raise SystemExit("cricket serve did not register the deployments") from None
                time.sleep(0.5)


def cold_imports() -> dict[str, float]:
    """What a cold start pays before the engine runs, measured apart in fresh
    interpreters: starting Python, and importing what a run imports (the served
    program's CLI, the flows, MLflow's stores, k-means; as ``cricket serve`` preloads)."""
    from cricket.deployments.serve import deployment_configs
    from cricket.deployments.warm_starts import preload_modules

    mods = [m for m in preload_modules(c["entrypoint"] for c in deployment_configs())
            if m != "__main__"]
    out = {}
    for name, code in (("python_s", "pass"),
                       ("imports_s", "import cricket.cli; " + "; ".join(f"import {m}" for m in mods))):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        out[name] = round(time.perf_counter() - t0, 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=1, help="runs per served process")
    ap.add_argument("--starts", default="warm", metavar="LIST",
                    help="serve once per entry, in this order (comma-separated: warm = "
                         "`cricket serve` as shipped, cold = `--cold-starts`): e.g. "
                         "cold,warm,cold,warm for a side-by-side comparison")
    ap.add_argument("--dask-workers", type=int, default=0, metavar="N",
                    help="serve with `--dask-workers N` (a LocalCluster held by the server)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="folder that keeps the fleet and its champion between runs")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.starts.split(",") if m.strip()]
    if not modes or set(modes) - {"warm", "cold"}:
        ap.error("--starts: a comma-separated list of warm, cold")
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
    result: dict = {"hosts": args.hosts, "cores": os.cpu_count(), "starts": modes,
                    "dask_workers": args.dask_workers,
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
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # Prefect read its settings when it was imported: point this process at the server
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api.api_url}))
        import httpx

        result["cold_imports"] = cold_imports()
        runs = []
        result["serve_ready_s"] = []
        for i, mode in enumerate(modes):
            cmd = [str(BIN / "cricket"), "serve", "--no-schedules",
                   "--warm-starts" if mode == "warm" else "--cold-starts"]
            if args.dask_workers:
                cmd += ["--dask-workers", str(args.dask_workers)]
            log_path = tmp / f"serve-{i}{mode}.log"
            with log_path.open("w") as log:
                serve = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
            result["serve_ready_s"].append(_wait_ready(serve, log_path))
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
                    raise SystemExit(f"the served run ended {fr.state}; see {log_path}")
                summary = fr.state.result()
                with get_client(sync_client=True) as client:
                    st = _state_times(client, fr.id)
                    tasks = _task_runs(client, fr.id)
                    artifacts = client.read_artifacts(
                        artifact_filter=ArtifactFilter(
                            flow_run_id=ArtifactFilterFlowRunId(any_=[fr.id])), limit=200)
                run = {"starts": mode, "load_avg": load, "served_wall_s": round(wall, 2),
                       **_orchestration(st, tasks, summary),
                       "task_runs": tasks["task_runs"], "per_task": tasks["per_task"],
                       "artifacts_created": len(artifacts),
                       "series": summary["series"], "events": summary["events"],
                       "timings": summary["timings"]}
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
            _stop(serve)
            serve = None
        result["runs"] = runs
        result["by_starts"] = {
            mode: {k: [r[k] for r in runs if r["starts"] == mode]
                   for k in ("start_s", "orchestration_s", "load_model_s", "body_s")}
            for mode in dict.fromkeys(modes)}
        shipped = [r for r in runs if r["starts"] == "warm"] or runs
        result["served_orchestration_1000_series_s"] = (
            min(r["orchestration_s"] for r in shipped) if args.hosts == 1000 else None)
        result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        stack.close()
        if serve is not None:
            _stop(serve)
        api.stop()
        influx.stop()
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _orchestration(st: dict[str, float], tasks: dict, summary: dict) -> dict:
    """A run's time split from Prefect's records (see the module's docstring)."""
    timings = summary["timings"]
    body = float(timings["flow"])
    start_s = st["RUNNING"] - st["PENDING"]
    run_s = st["COMPLETED"] - st["RUNNING"]
    end_s = max(0.0, run_s - body)
    # the body's time outside the task functions it waits on one after the other
    # and outside the batches (read, score, write: pipelined on the workers)
    sync = sum(d["run_s"] for name, d in tasks["per_task"].items() if name not in BATCH_TASKS)
    in_body = max(0.0, body - sync - float(timings["batches"]))
    return {
        "pickup_s": round(st["PENDING"] - st["SCHEDULED"], 2) if "SCHEDULED" in st else None,
        "start_s": round(start_s, 2),
        # the runner proposing Submitting; then the run's process starting the engine
        "submit_s": round(st["SUBMITTING"] - st["PENDING"], 2),
        "process_start_s": round(st["RUNNING"] - st["SUBMITTING"], 2),
        "run_s": round(run_s, 2),
        "body_s": round(body, 2),
        "end_s": round(end_s, 2),
        "in_body_s": round(in_body, 2),
        "load_model_s": tasks["per_task"].get("load-model", {}).get("run_s"),
        "orchestration_s": round(start_s + end_s + in_body, 2),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
