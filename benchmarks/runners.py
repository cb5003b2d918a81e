"""The hourly score on each task runner, measured side by side (used by ``fleet.py
--runners``): a Dask LocalCluster and its warm-up, the task-seconds Prefect recorded for
a flow run (the same measure on every runner), the CPU seconds of the flow's process and
of the Dask workers, what a run ships to the workers, and the stored results of two runs
compared series by series."""

from __future__ import annotations

import json
import os
import pickle
import time
from collections import defaultdict
from typing import Any

#: the modules a score batch needs on a worker (imported once per worker process)
WORKER_IMPORTS = ("cricket.flows.score", "cricket.tasks.score", "cricket.tasks.publish")


def _import_modules(names: tuple[str, ...]) -> float:
    import importlib

    t0 = time.perf_counter()
    for name in names:
        importlib.import_module(name)
    return time.perf_counter() - t0


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def start_cluster(workers: int) -> tuple[Any, Any, dict]:
    """A LocalCluster of ``workers`` processes with one thread each (the shape
    docs/scaling.md recommends), a client on it, and how long starting and warming took:
    ``start_s`` (processes up) and ``worker_import_s`` (each worker importing the flow's
    modules, in parallel; a long-lived cluster pays it once, not per run)."""
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                           dashboard_address=":0", silence_logs=40)
    client = Client(cluster)
    started = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_worker = client.run(_import_modules, WORKER_IMPORTS)
    return cluster, client, {
        "workers": workers,
        "start_s": round(started, 2),
        "worker_import_s": round(time.perf_counter() - t0, 2),
        "worker_import_s_each": sorted(round(v, 2) for v in per_worker.values()),
    }


def workers_cpu(client: Any) -> float:
    """CPU seconds the cluster's worker processes have used so far, summed."""
    return sum(client.run(_process_cpu).values())


def flow_cpu() -> float:
    """CPU seconds of this process (the flow's; with a LocalCluster also its scheduler)."""
    return _process_cpu()


def children_cpu() -> float:
    """CPU seconds of this process's finished child processes (a process pool's, once
    the flow run that started it has ended)."""
    t = os.times()
    return t.children_user + t.children_system


def task_seconds(flow_run_id: Any) -> dict[str, dict[str, float]]:
    """Per task name: how many task runs the flow run had and their run seconds summed,
    as Prefect recorded them (Running -> Completed), whichever runner ran them."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        while True:  # the API answers at most 200 at a time
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                limit=200, offset=len(runs))
            runs += page
            if len(page) < 200:
                break
    out: dict[str, Any] = defaultdict(lambda: {"runs": 0, "s": 0.0})
    t0 = min((r.start_time for r in runs if r.start_time), default=None)
    # (task, start, end): seconds after the first task started
    out["timeline"] = sorted(
        [(r.name, round((r.start_time - t0).total_seconds(), 2),
          round((r.end_time - t0).total_seconds(), 2))
         for r in runs if r.start_time and r.end_time], key=lambda x: x[1])
    for run in runs:
        name = run.name.rsplit("-", 1)[0]  # "score-batch-1a2" -> "score-batch"
        out[name]["runs"] += 1
        out[name]["s"] = round(out[name]["s"] + run.total_run_time.total_seconds(), 3)
    return dict(out)


def shipping(bundle: Any, batches: list[list[Any]], client: Any = None) -> dict:
    """What a score run sends to its workers besides code: each batch's sub-bundle
    (``cricket.tasks.score.sub_bundle``), pickled. ``pickle_s``: the flow's time to pickle
    them all; with a Dask ``client``, ``round_trip_s``: one sub-bundle sent to a worker
    and its size sent back (transfer + unpickling there), times the number of batches."""
    from cricket.tasks.score import sub_bundle

    sizes, t_pickle = [], 0.0
    one = None
    for batch in batches:
        part = sub_bundle(bundle, batch)
        t0 = time.perf_counter()
        blob = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
        t_pickle += time.perf_counter() - t0
        sizes.append(len(blob))
        one = one or part
    out = {"batches": len(batches), "sub_bundle_mb_each": round(max(sizes) / 2**20, 2),
           "sub_bundles_mb": round(sum(sizes) / 2**20, 1), "pickle_s": round(t_pickle, 2)}
    if client is not None and one is not None:
        t0 = time.perf_counter()
        for _ in range(3):
            client.submit(_pickled_len, one, pure=False).result()
        out["round_trip_s_each"] = round((time.perf_counter() - t0) / 3, 3)
        out["round_trip_s"] = round(out["round_trip_s_each"] * len(batches), 2)
    return out


def _pickled_len(obj: Any) -> int:
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


# ---------------------------------------------------------------- same results?
def digest(settings: Any, database: str) -> dict[str, list[float]]:
    """Per stored series of ``database`` (scores and events): counts and sums of every
    field, read back from InfluxDB. Two runs that stored the same points have the same
    digest (to float summation order)."""
    import httpx

    out: dict[str, list[float]] = {}
    with httpx.Client(base_url=settings.influx_url, timeout=600) as http:
        for measurement, fields in (
            ("cricket_score", ("value", "reconstruction", "error", "score", "anomalous")),
            ("cricket_event", ("start", "end", "peak", "mean", "duration_s")),
        ):
            sel = ", ".join(f'count("{f}"), sum("{f}")' for f in fields)
            r = http.get("/query", params={
                "db": database, "q": f'SELECT {sel} FROM "{measurement}" GROUP BY "series"'})
            r.raise_for_status()
            for res in r.json().get("results", []):
                for ser in res.get("series", []) or []:
                    row = ser["values"][0][1:]
                    out[f"{measurement}/{ser['tags']['series']}"] = [
                        float("nan") if v is None else float(v) for v in row]
    return out


def compare(a: dict[str, list[float]], b: dict[str, list[float]], rel: float = 1e-9) -> dict:
    """How two digests differ: series only in one, and series whose counts or sums differ
    by more than ``rel`` (relative)."""
    import math

    only = sorted(set(a) ^ set(b))
    differ = []
    for k in sorted(set(a) & set(b)):
        for x, y in zip(a[k], b[k], strict=True):
            if math.isnan(x) and math.isnan(y):
                continue
            if not math.isclose(x, y, rel_tol=rel, abs_tol=1e-9):
                differ.append(k)
                break
    return {"series": len(a), "identical": not only and not differ,
            "only_in_one": only[:10], "differ": differ[:10], "n_differ": len(differ)}


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
