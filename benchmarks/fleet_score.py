"""The timed hourly score of ``fleet.py``: ``hourly_score`` of one hour, once per task
runner (each into a score database and state folder of its own; per run the wall time,
CPU, Prefect's task-seconds, the stages' shares, memory, and the stored results compared
with the first run's), then the I/O floor of the same hour measured bare
(``score_io_bound``, ``score_fraction_of_io_bound``)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from fleet_setup import END
from instruments import peak_rss_mb, reset_peak, rss_mb, shares


def io_bound(settings, selector, start, stop, written: list, batch: int) -> dict:  # noqa: ANN001
    """The I/O floor of an hourly score, measured bare: the raw-point queries of the
    window the pipeline read (every series in one query per chunk, MessagePack, decoded),
    and POSTs of the same score and event points, formatted before the clock starts
    (tagged ``model_version=bare``, so they add series as the pipeline's first write did)."""
    import httpx

    from cricket.influx import lineprotocol as lp
    from cricket.influx.influxql import InfluxQLSource, _unpack
    from cricket.series import SeriesKey

    src = InfluxQLSource(settings)
    every = int(pd.Timedelta(selector.every).value)
    s_ns, e_ns = pd.Timestamp(start).value, pd.Timestamp(stop).value
    g0 = (s_ns // every) * every
    chunk = max(every, int(pd.Timedelta(settings.influx_read_chunk).value) // every * every)
    queries, lo = [], s_ns
    while lo < e_ns:
        hi = min(e_ns, ((lo - g0) // chunk + 1) * chunk + g0)
        limit = -(-(hi - g0) // every) - (lo - g0) // every + 1
        queries.append(src.build_query(selector, lo, hi, raw_limit=limit))
        lo = hi
    src.close()
    lines: list[str] = []
    for _sink, results, _version in written:
        for r in results:
            key = r.series_key or SeriesKey.parse(str(r.key))
            if r.frame is not None and len(r.frame):
                lines += lp.score_lines(key, r.frame, "bare", settings.model_name)
            if r.events is not None and len(r.events):
                lines += lp.event_lines(key, r.events, "bare", settings.model_name)
    bodies = ["\n".join(lines[a:b]).encode() for a, b in lp.batches(lines, batch)]
    with httpx.Client(base_url=settings.influx_url, timeout=300) as bare:
        t0 = time.perf_counter()
        points = 0
        for q, params in queries:
            r = bare.get("/query", params={"db": settings.influx_database, "q": q, "epoch": "ns",
                                           "params": json.dumps(params)},
                         headers={"Accept": "application/x-msgpack"})
            r.raise_for_status()
            for res in _unpack(r.content).get("results", []):
                for ser in res.get("series", []) or []:
                    points += len(ser.get("values") or [])
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        for body in bodies:
            r = bare.post("/write", params={"db": settings.score_database, "precision": "ns"},
                          content=body)
            assert r.status_code == 204, r.text
        t_write = time.perf_counter() - t0
    return {"bare_read_s": round(t_read, 3), "bare_read_points": points,
            "bare_write_s": round(t_write, 3), "bare_write_points": len(lines)}


#: runners whose batch tasks run in this process's threads (the instruments see them)
LOCAL = ("threads", "threads-only")


def measure_score(result: dict, *, runners: list[str], dask_workers: int, batch_size: int,
                  selector: Any, version: str, s_score: Any, score_hosts: int,
                  settings_at: Callable[[str], Any], score_db: str, score_dbs: list[str],
                  scratch: Path, patches: list, workers: int) -> None:
    """Score the hour once per runner and put the figures in ``result`` (``dask``,
    ``score_runs``, the first run's ``score_*`` figures, ``score_io_bound``).
    ``settings_at(db)`` points the environment at the score fleet with scores going to
    ``db`` (each database made is added to ``score_dbs``, which the caller drops);
    ``patches`` are the instruments (prepare timer, write timer, write capture) wrapped
    around the flow's functions, taken off for runs whose tasks leave this process."""
    import runners as rn
    from cricket.flows.score import hourly_score
    from cricket.tasks import score_processes as sp
    from cricket.tasks.score import context_for

    from cricket.config import Settings
    from cricket.registry import Registry

    timer, writes, captured = patches
    score_at = END - pd.Timedelta(hours=1)  # score [END-2h, END-1h)
    cluster = client = None
    if "dask" in runners:
        cluster, client, result["dask"] = rn.start_cluster(dask_workers)
    bundle, _ = Registry(s_score).load_bundle(version=version)
    context = context_for(bundle, selector)
    if client is not None:  # what the Dask run ships to its workers
        from cricket.windows import batched

        keys = sorted(bundle.detectors)
        result["dask"]["shipping"] = rn.shipping(
            bundle, list(batched(keys, batch_size)), client)
    del bundle
    runs, io_from = [], None
    process_series = sp.PROCESS_SERIES
    for i, runner in enumerate(runners):
        db = f"{score_db}_{i}{runner}"
        score_dbs.append(db)
        s_run = settings_at(db)
        os.environ["CRICKET_STATE_DIR"] = str(scratch / f"state-{i}{runner}")
        # the hour before has decoded the champion into the state folder's model cache
        # (cricket.bundle_cache): what every hourly run after a promotion meets. Its
        # first load (a miss: decode and write the entry) is timed apart.
        t0 = time.perf_counter()
        Registry(Settings()).load_bundle(version=version)
        run_cache_s = round(time.perf_counter() - t0, 2)
        os.environ.pop("CRICKET_DASK_ADDRESS", None)
        os.environ.pop("CRICKET_TASK_RUNNER", None)
        if runner == "dask":
            os.environ["CRICKET_DASK_ADDRESS"] = cluster.scheduler_address
        elif runner not in LOCAL:
            os.environ["CRICKET_TASK_RUNNER"] = runner
        # threads-only: the flow's threads score every batch (no scoring processes)
        sp.PROCESS_SERIES = 10**9 if runner == "threads-only" else process_series
        if runner not in LOCAL:
            for p in patches[::-1]:  # a worker would be sent the wrappers
                p.restore()
        for p in patches:
            p.take()
        cpu0, ccpu0 = rn.flow_cpu(), rn.children_cpu()
        wcpu0 = rn.workers_cpu(client) if runner == "dask" else 0.0
        rss0 = rss_mb()
        reset_peak()
        t0 = time.perf_counter()
        state = hourly_score(selector=selector, at=score_at.to_pydatetime(),
                             model_version=version, return_state=True)
        wall = time.perf_counter() - t0
        summary = state.result()
        run: dict = {"runner": runner, "score_s": round(wall, 1),
                     "model_first_load_s": run_cache_s,
                     "ms_per_series": round(1000 * wall / score_hosts, 2),
                     "flow_cpu_s": round(rn.flow_cpu() - cpu0, 1)}
        if runner == "dask":
            run["workers_cpu_s"] = round(rn.workers_cpu(client) - wcpu0, 1)
        sp.PROCESS_SERIES = process_series
        if runner not in LOCAL:
            for p in patches:
                p.install()
        # a process pool's, the scoring processes, or the process that drew the report's
        # pictures ahead
        run["children_cpu_s"] = round(rn.children_cpu() - ccpu0, 1)
        prep = timer.take()
        t = dict(summary["timings"])
        t["write"] = sum(writes.take().values())
        run["task_seconds"] = rn.task_seconds(state.state_details.flow_run_id)
        if runner not in LOCAL:  # the wrappers saw nothing: Prefect's own record
            t["write"] = run["task_seconds"].get("write-results", {}).get("s", 0.0)
        stages = {
            "extract": t.get("extract", 0.0),
            "prepare": sum(prep.values()),
            "score": t.get("score", 0.0) - prep.get("score-batch", 0.0),
            "write": t["write"],
            "report": t.get("report", 0.0) * workers,
        }
        run.update({
            "seconds": {k: round(v, 2) for k, v in t.items()},
            "shares": shares(stages, wall, workers),
            "rss_at_start_mb": rss0, "peak_rss_mb": peak_rss_mb(),
            "events": summary["events"], "points_written": summary["points_written"],
            "load_avg": [round(x, 2) for x in os.getloadavg()],
        })
        if runner in LOCAL and io_from is None:
            io_from = (summary, captured.take(), wall, db)
        run["digest"] = rn.digest(s_run, s_run.score_database)
        runs.append(run)
        print(f"hourly score of {score_hosts} series on {runner}: {wall:.1f} s "
              f"(flow CPU {run['flow_cpu_s']} s)", file=sys.stderr, flush=True)
    os.environ.pop("CRICKET_DASK_ADDRESS", None)
    os.environ.pop("CRICKET_TASK_RUNNER", None)
    if client is not None:
        client.close()
        cluster.close()
    for run in runs[1:]:  # the same points stored, series by series?
        run["same_results_as_" + runs[0]["runner"]] = rn.compare(
            runs[0]["digest"], run["digest"])
    for run in runs:
        del run["digest"]
    first = runs[0]
    result["score_runs"] = runs
    result["score_runner"] = first["runner"]
    result["score_size"] = {"series": score_hosts, "hours": 1,
                            "points": first["points_written"]}
    wall = first["score_s"]
    result["score_s"] = wall
    result["score_ms_per_series"] = first["ms_per_series"]
    result["score_1000_series_s"] = wall if score_hosts == 1000 else None
    dask_runs = [r for r in runs if r["runner"] == "dask"]
    result["score_10000_series_s"] = (dask_runs or runs)[0]["score_s"] \
        if score_hosts == 10000 else None
    result["score_seconds"] = first["seconds"]
    result["score_shares"] = first["shares"]
    result["score_peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    result["score_events"] = first["events"]
    # the I/O floor of the same run: the window read (with the detectors' context)
    # and the points written, bare (from the first threads run: the points it wrote)
    if io_from is not None:
        summary, written_calls, io_wall, db = io_from
        s_run = settings_at(db)
        io = io_bound(s_run, selector, pd.Timestamp(summary["window_start"]) - context,
                      pd.Timestamp(summary["window_end"]), written_calls,
                      s_score.influx_write_batch)
        result["score_io_bound"] = io
        result["score_fraction_of_io_bound"] = round(
            (io["bare_read_s"] + io["bare_write_s"]) / io_wall, 3)

