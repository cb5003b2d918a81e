"""Fleet scale: hourly scoring and nightly retrain through the real flows, against a real
local InfluxDB, with a synthetic fleet at 10 s.

What it does, in one run:

1. starts its own influxd (the project's launcher, a temporary folder, a free port), an
   MLflow SQLite store and a Prefect home in the same folder (Prefect's ephemeral API);
2. writes two synthetic fleets (each from a child process, so the writer's memory is
   not counted): ``--score-hosts`` series of ``--score-train-hours`` + 2 hours for
   scoring, and ``--retrain-hosts`` series of ``--train-days`` days for the retrain;
3. **score**: a champion for the score fleet is trained on a short window in a child
   process (not timed, its memory not counted), then ``hourly_score`` of the hour
   after it is timed end to end (load model, discover, extract the hour plus one
   segment of context, score, write scores and events, the HTML report):
   ``score_1000_series_s`` when ``--score-hosts`` is 1000. Then, in the same run, the
   I/O floor of that hour (``score_io_bound``): a bare read of the same points (the raw
   MessagePack queries of the window with its context, every series at once, decoded)
   and a bare write of the same score and event points (formatted before the clock
   starts); ``score_fraction_of_io_bound`` = (bare read + bare write) / pipeline wall
   time (target >= 0.5);
4. **retrain**: ``nightly_retrain`` over ``--train-days`` (last day held out) of the
   retrain fleet: ``retrain_s`` at that size, and ``retrain_1000_series_s_extrapolated``
   = retrain_s x 1000 / hosts (labelled: per-series fitting dominates and is linear in
   the number of series; the measured size is in ``retrain_size``);
   ``retrain_1000_series_s`` is measured when ``--retrain-hosts 1000``.

Before timing, Prefect's ephemeral API is started and the MLflow tables are created
(``warm_up_s``): scheduled runs meet both already running.

Shares of time (``*_shares``): each stage's task-seconds (summed over batch tasks,
which run ``workers`` at a time) divided by ``workers x wall``; steps that run alone
(fleet library, MLflow register, held-out evaluation, the report) count their wall time
x ``workers`` (the held-out evaluation made inside the train batches,
``evaluate_batches``, is task-seconds). ``orchestration`` is the rest: Prefect task and flow bookkeeping, idle
worker slots, the flow's own work (discovery, loading the model). Retrain: ``fit``
includes the fleet library, ``score`` is the held-out evaluation of challenger and
champion, ``write`` is logging and registering in MLflow. Score: ``write`` is writing
scores and events to InfluxDB, ``report`` the HTML report and its artifacts.
``prepare`` (validation, gap filling) and the InfluxDB writes are timed by wrapping
``cricket.series.prepare`` (as scoring calls it) and ``cricket.tasks.publish.write_with_sink`` in this process
(measurement only); prepare is taken out of fit/score.
``peak_rss_mb``: this process's peak resident memory during each phase (VmHWM, reset
between phases); influxd and Prefect's API server are separate processes
(``influxd_peak_rss_mb`` is reported apart).

Usage::

    .venv/bin/python benchmarks/fleet.py            # 1000 series scored, 20 x 7 d retrained
    .venv/bin/python benchmarks/fleet.py --quick    # 100 series scored, 5 x 2 d retrained
    .venv/bin/python benchmarks/fleet.py --retrain-hosts 1000   # the full target (~15 min)
    .venv/bin/python benchmarks/fleet.py --keep /tmp/fleet-kept ...   # reuse data and champion
    .venv/bin/python benchmarks/fleet.py --runners threads,dask --skip-retrain --keep DIR
        # the hourly score on threads, then on a dask LocalCluster (--dask-workers 2),
        # figures side by side in score_runs (score_10000_series_s with --score-hosts 10000)

``--keep DIR`` keeps the InfluxDB data, the MLflow store and the scoring champions in DIR
and reuses them on the next run with the same folder: a fleet of the same size (hosts,
hours or days) is not written again and the scoring champion of the same fleet and spec
is not retrained (both untimed set-up, minutes at 1,000 series). What is timed is the
same: each run scores into a fresh score database (dropped at the end) and Prefect's home
is fresh. One difference: the retrain's model (one per retrain fleet size) keeps its
versions, so from the second run on the retrain has a champion to evaluate against, as a
nightly run does (``retrain_champion`` says which version, or null);
``--retrain-without-champion`` registers into a model of its own instead (no champion).

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

END = pd.Timestamp("2026-11-20T00:00:00Z")


# ---------------------------------------------------------------- memory
def _status_kb(field: str, pid: str = "self") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) so each phase reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if not kb:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)


# ---------------------------------------------------------------- stage timing
class Timed:
    """Wraps ``module.attr`` (looked up at call time by its callers) and sums its
    seconds per Prefect task name (``flow`` outside tasks). Measurement only: the
    wrapped function runs unchanged."""

    def __init__(self, module: object, attr: str) -> None:
        self.module, self.attr = module, attr
        self.original = getattr(module, attr)
        self.seconds: dict[str, float] = defaultdict(float)
        self.lock = threading.Lock()
        original = self.original

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                name = "flow"
                try:
                    from prefect.context import TaskRunContext

                    ctx = TaskRunContext.get()
                    if ctx is not None:
                        name = ctx.task.name
                except Exception:  # noqa: BLE001
                    pass
                with self.lock:
                    self.seconds[name] += dt

        self.wrapper = timed
        setattr(module, attr, timed)

    def restore(self) -> None:
        """Put the original back (a Dask worker would be sent the wrapper, with its lock)."""
        setattr(self.module, self.attr, self.original)

    def install(self) -> None:
        setattr(self.module, self.attr, self.wrapper)

    def take(self) -> dict[str, float]:
        with self.lock:
            out = dict(self.seconds)
            self.seconds.clear()
        return out


class Captured:
    """Wraps ``module.attr`` and keeps the arguments of every call (measurement only)."""

    def __init__(self, module: object, attr: str) -> None:
        self.calls: list[tuple] = []
        self.lock = threading.Lock()
        self.module, self.attr = module, attr
        self.original = original = getattr(module, attr)

        def captured(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            with self.lock:
                self.calls.append(args)
            return original(*args, **kwargs)

        self.wrapper = captured
        setattr(module, attr, captured)

    restore = Timed.restore
    install = Timed.install

    def take(self) -> list[tuple]:
        with self.lock:
            out, self.calls = self.calls, []
        return out


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


def warm_up(settings_uri: str) -> float:
    """Start Prefect's ephemeral API and create the MLflow tables before timing
    anything: a nightly or hourly run meets both already running."""
    from mlflow import MlflowClient
    from prefect import flow

    @flow(name="warm-up")
    def _noop() -> int:
        return 1

    t0 = time.perf_counter()
    _noop()
    MlflowClient(tracking_uri=settings_uri).search_registered_models()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- data
def _write_fleet(settings_json: str, hosts: int, days: float, start: str, seed: int,
                 anomaly_from: str, out: mp.Queue) -> None:
    from cricket.config import Settings
    from cricket.synth import make_fleet, write_fleet

    settings = Settings.model_validate_json(settings_json)
    t0 = time.perf_counter()
    fleet = make_fleet(hosts=hosts, days=days, step="10s", start=start, seed=seed,
                       anomaly_window=(anomaly_from, END))
    n = write_fleet(fleet, settings)
    out.put({"points": n, "seconds": time.perf_counter() - t0, "hosts": hosts, "days": days,
             "database": settings.influx_database})


def write_in_children(jobs: list[tuple]) -> list[dict]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_write_fleet, args=(*job, q)) for job in jobs]
    for p in procs:
        p.start()
    got = [q.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"a fleet writer exited with code {p.exitcode}")
    return got


def _train_child(env: dict, kw: dict, out: mp.Queue) -> None:
    os.environ.clear()
    os.environ.update(env)
    from cricket.flows.retrain import nightly_retrain

    from cricket.config import DetectorSpec, SeriesSelector

    summary = nightly_retrain(
        selector=SeriesSelector(measurement="waveform", field="value", group_by=["host"]),
        spec=DetectorSpec(**({} if kw["n_clusters"] is None else {"n_clusters": kw["n_clusters"]})),
        train_window=timedelta(hours=kw["train_window_h"]), holdout=timedelta(hours=1),
        end=pd.Timestamp(kw["end"]).to_pydatetime(),
        min_history_points=kw["min_history_points"],
    )
    out.put(summary["model_version"])


def train_in_child(env: dict, kw: dict) -> str:
    """Train the scoring champion in a child process: its memory is not the score's."""
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_train_child, args=(env, kw, q))
    p.start()
    version = q.get(timeout=7200)
    p.join()
    return version


class Kept:
    """What a ``--keep`` folder already holds: fleets written (by database) and scoring
    champions (by model name). Without a folder it holds nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data = {"fleets": {}, "champions": {}}
        if path is not None and path.exists():
            self.data = json.loads(path.read_text())

    def has(self, database: str) -> bool:
        return database in self.data["fleets"]

    def add(self, database: str, written: dict) -> None:
        self.data["fleets"][database] = written
        self._save()

    def champion(self, model: str) -> str | None:
        return self.data["champions"].get(model)

    def set_champion(self, model: str, version: str) -> None:
        self.data["champions"][model] = version
        self._save()

    def _save(self) -> None:
        if self.path is not None:
            self.path.write_text(json.dumps(self.data, indent=1))


def retrain_champion(settings) -> str | None:  # noqa: ANN001
    """The version holding the retrain model's champion alias before the timed retrain
    (only a kept folder has one), or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        mv = MlflowClient(tracking_uri=settings.tracking_uri).get_model_version_by_alias(
            settings.model_name, "champion")
    except MlflowException:
        return None
    return str(mv.version)


# ---------------------------------------------------------------- shares
def shares(stage_seconds: dict[str, float], wall: float, workers: int) -> dict[str, float]:
    capacity = max(wall * workers, 1e-9)
    out = {k: round(v / capacity, 4) for k, v in stage_seconds.items()}
    out["orchestration"] = round(max(0.0, 1.0 - sum(out.values())), 4)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small fleet (100 scored, 5 x 2 d retrained)")
    ap.add_argument("--score-hosts", type=int, default=None)
    ap.add_argument("--score-train-hours", type=float, default=4.0,
                    help="history the scoring champion is trained on (not timed)")
    ap.add_argument("--retrain-hosts", type=int, default=None)
    ap.add_argument("--train-days", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--n-clusters", type=int, default=None,
                    help="shapes per library (default: DetectorSpec's, what production runs)")
    ap.add_argument("--skip-retrain", action="store_true")
    ap.add_argument("--copies", type=int, default=1, metavar="K",
                    help="score K copies of the --score-hosts fleet (K x hosts series, the "
                         "same data and detector per copy: per-series costs compare "
                         "directly across sizes; see benchmarks/replicate.py)")
    ap.add_argument("--setup-only", action="store_true",
                    help="with --keep: write the fleets and train the scoring champion, then "
                         "stop (10,000 series take tens of minutes: do it once, ahead)")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="keep the fleets' data and the scoring champion in DIR and reuse "
                         "them on later runs with the same DIR (set-up only; see above)")
    ap.add_argument("--runners", default="threads", metavar="LIST",
                    help="score once on each of these task runners, in this order "
                         "(comma-separated: threads, dask, processes); the top-level score "
                         "figures are the first run's, each run's are in score_runs")
    ap.add_argument("--dask-workers", type=int, default=2, metavar="N",
                    help="worker processes (one thread each) of the dask LocalCluster the "
                         "'dask' runner uses, reached through CRICKET_DASK_ADDRESS as "
                         "production would be (the retrain stays on threads)")
    ap.add_argument("--retrain-without-champion", action="store_true",
                    help="with --keep: retrain into a new model, so it has no champion")
    args = ap.parse_args(argv)
    score_hosts = args.score_hosts or (100 if args.quick else 1000)
    score_runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    unknown = set(score_runners) - {"threads", "dask", "processes"}
    if unknown or not score_runners:
        ap.error(f"--runners: unknown {sorted(unknown)}; use threads, dask, processes")
    retrain_hosts = args.retrain_hosts or (5 if args.quick else 20)
    train_days = args.train_days or (2.0 if args.quick else 7.0)

    scratch = Path(tempfile.mkdtemp(prefix="cricket-fleet-bench-"))
    tmp = scratch if args.keep is None else args.keep.absolute()
    tmp.mkdir(parents=True, exist_ok=True)
    kept = Kept(tmp / "kept.json" if args.keep is not None else None)
    os.environ.update({
        "PREFECT_HOME": str(scratch / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    })
    for name in list(os.environ):
        if name.startswith("CRICKET_"):
            del os.environ[name]

    from cricket.config import DetectorSpec, SeriesSelector, Settings
    from cricket.influx.influxql import ensure_database
    from cricket.influx.server import InfluxServer, find_free_port

    server = InfluxServer(port=find_free_port(), data_dir=tmp / "influx").start(timeout=60)
    result: dict = {
        "cores": os.cpu_count(),
        "spec": None,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "batch_size": args.batch_size,
    }
    score_db = f"fleet_score_out_{os.getpid()}"
    score_dbs = [score_db]
    try:
        def settings_for(db: str, model: str, score_db: str = score_db) -> Settings:
            env = {
                "CRICKET_STATE_DIR": str(tmp / "state"),
                "CRICKET_INFLUX_URL": server.url,
                "CRICKET_INFLUX_DATABASE": db,
                "CRICKET_MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
                "CRICKET_MODEL_NAME": model,
                "CRICKET_REPORT_DIR": str(tmp / "reports"),
                "CRICKET_BATCH_SIZE": str(args.batch_size),
                "CRICKET_INFLUX_TIMEOUT_S": "300",
            }
            if args.keep is not None or score_db != score_dbs[0]:
                # the kept fleet stays as written, and each runner scores apart
                env["CRICKET_INFLUX_SCORE_DATABASE"] = score_db
            os.environ.update(env)
            s = Settings()
            ensure_database(s)  # and the score database
            return s

        selector = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
        spec = DetectorSpec(**({} if args.n_clusters is None else {"n_clusters": args.n_clusters}))
        result["spec"] = spec.model_dump(mode="json")
        score_at = END - pd.Timedelta(hours=1)  # score [END-2h, END-1h)
        score_start = END - pd.Timedelta(hours=2 + args.score_train_hours)
        retrain_start = END - pd.Timedelta(days=train_days)

        # one database per fleet size, so a kept folder can hold several
        score_fleet = f"fleet_score_{score_hosts}x{args.score_train_hours:g}h"
        retrain_fleet = f"fleet_retrain_{retrain_hosts}x{train_days:g}d"
        score_model = f"fleet-score-{score_hosts}x{args.score_train_hours:g}h-k{args.n_clusters or 'd'}"
        retrain_model = f"fleet-retrain-{retrain_hosts}x{train_days:g}d" + (
            f"-{os.getpid()}" if args.retrain_without_champion else "")
        s_score = settings_for(score_fleet, score_model)
        s_retrain = settings_for(retrain_fleet, retrain_model)
        jobs = []
        if not kept.has(score_fleet):
            jobs.append((s_score.model_dump_json(), score_hosts,
                         (END - score_start) / pd.Timedelta(days=1), str(score_start), 1,
                         str(END - pd.Timedelta(hours=2))))
        if not args.skip_retrain and not kept.has(retrain_fleet):
            jobs.append((s_retrain.model_dump_json(), retrain_hosts, train_days,
                         str(retrain_start), 2, str(END - pd.Timedelta(hours=12))))
        t0 = time.perf_counter()
        written = write_in_children(jobs) if jobs else []
        for w in written:  # in the order the writers finished
            kept.add(w["database"], w)
        result["write_fleet"] = {"seconds": round(time.perf_counter() - t0, 1),
                                 "points": sum(w["points"] for w in written),
                                 "kept": args.keep is not None and not jobs}
        print(f"wrote {result['write_fleet']['points']:,} points in "
              f"{result['write_fleet']['seconds']} s", file=sys.stderr, flush=True)

        # ------------------------------------------------ the scoring champion (not timed)
        settings_for(score_fleet, score_model)
        t0 = time.perf_counter()
        version = kept.champion(score_model)
        if version is None:
            version = train_in_child(dict(os.environ), {
                "train_window_h": args.score_train_hours,
                "end": str(END - pd.Timedelta(hours=2)), "n_clusters": args.n_clusters,
                "min_history_points": min(1000, int(args.score_train_hours * 360 * 0.6)),
            })
            kept.set_champion(score_model, version)
        result["score_model_train_s"] = round(time.perf_counter() - t0, 1)
        print(f"trained the scoring champion in {result['score_model_train_s']} s",
              file=sys.stderr, flush=True)
        if args.copies > 1:  # score K copies of that fleet, with copies of its champion
            import replicate

            src = settings_for(score_fleet, score_model)
            score_fleet, score_model = f"{score_fleet}_x{args.copies}", f"{score_model}-x{args.copies}"
            s_score = settings_for(score_fleet, score_model)
            score_hosts *= args.copies
            t0 = time.perf_counter()
            if not kept.has(score_fleet):
                n = replicate.copy_fleet(src, s_score, selector, args.copies, score_start, END)
                kept.add(score_fleet, {"points": n, "seconds": time.perf_counter() - t0,
                                       "hosts": score_hosts, "copies": args.copies,
                                       "database": score_fleet})
            if kept.champion(score_model) is None:
                kept.set_champion(score_model, replicate.copy_champion(
                    src, s_score, version, args.copies))
            version = kept.champion(score_model)
            result["copies"] = {"of": score_fleet.rsplit("_x", 1)[0], "copies": args.copies,
                                "seconds": round(time.perf_counter() - t0, 1)}
            print(f"copied the fleet and its champion x{args.copies} in "
                  f"{result['copies']['seconds']} s", file=sys.stderr, flush=True)
        if args.setup_only:
            return result

        import cricket.tasks.publish

        import cricket.scoring

        timer = Timed(cricket.scoring, "prepare")
        writes = Timed(cricket.tasks.publish, "write_with_sink")
        captured = Captured(cricket.tasks.publish, "write_with_sink")
        patches = [timer, writes, captured]  # in the order they wrap
        result["warm_up_s"] = round(warm_up(s_score.tracking_uri), 1)
        from cricket.flows.retrain import nightly_retrain
        from cricket.flows.runtime import default_workers
        from cricket.flows.score import hourly_score

        workers = default_workers()
        result["workers"] = workers

        # ------------------------------------------------ hourly score of the fleet
        # once per runner, each into a score database and state folder of its own
        import runners as rn

        cluster = client = None
        if "dask" in score_runners:
            cluster, client, result["dask"] = rn.start_cluster(args.dask_workers)
        from cricket.tasks.score import context_for

        from cricket.registry import Registry

        bundle, _ = Registry(s_score).load_bundle(version=version)
        context = context_for(bundle, selector)
        if client is not None:  # what the Dask run ships to its workers
            from cricket.windows import batched

            keys = sorted(bundle.detectors)
            result["dask"]["shipping"] = rn.shipping(
                bundle, list(batched(keys, args.batch_size)), client)
        del bundle
        runs, io_from = [], None
        for i, runner in enumerate(score_runners):
            db = f"{score_db}_{i}{runner}"
            score_dbs.append(db)
            s_run = settings_for(score_fleet, score_model, score_db=db)
            os.environ["CRICKET_STATE_DIR"] = str(scratch / f"state-{i}{runner}")
            os.environ.pop("CRICKET_DASK_ADDRESS", None)
            os.environ.pop("CRICKET_TASK_RUNNER", None)
            if runner == "dask":
                os.environ["CRICKET_DASK_ADDRESS"] = cluster.scheduler_address
            elif runner != "threads":
                os.environ["CRICKET_TASK_RUNNER"] = runner
            if runner != "threads":
                for p in patches[::-1]:  # a worker would be sent the wrappers
                    p.restore()
            for p in patches:
                p.take()
            cpu0, ccpu0 = rn.flow_cpu(), rn.children_cpu()
            wcpu0 = rn.workers_cpu(client) if runner == "dask" else 0.0
            rss0 = round(_status_kb("VmRSS") / 1024, 1)
            reset_peak()
            t0 = time.perf_counter()
            state = hourly_score(selector=selector, at=score_at.to_pydatetime(),
                                 model_version=version, return_state=True)
            wall = time.perf_counter() - t0
            summary = state.result()
            run: dict = {"runner": runner, "score_s": round(wall, 1),
                         "ms_per_series": round(1000 * wall / score_hosts, 2),
                         "flow_cpu_s": round(rn.flow_cpu() - cpu0, 1)}
            if runner == "dask":
                run["workers_cpu_s"] = round(rn.workers_cpu(client) - wcpu0, 1)
            if runner != "threads":
                for p in patches:
                    p.install()
                run["children_cpu_s"] = round(rn.children_cpu() - ccpu0, 1)
            prep = timer.take()
            t = dict(summary["timings"])
            t["write"] = sum(writes.take().values())
            run["task_seconds"] = rn.task_seconds(state.state_details.flow_run_id)
            if runner != "threads":  # the wrappers saw nothing: Prefect's own record
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
            if runner == "threads" and io_from is None:
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
            s_run = settings_for(score_fleet, score_model, score_db=db)
            io = io_bound(s_run, selector, pd.Timestamp(summary["window_start"]) - context,
                          pd.Timestamp(summary["window_end"]), written_calls,
                          s_score.influx_write_batch)
            result["score_io_bound"] = io
            result["score_fraction_of_io_bound"] = round(
                (io["bare_read_s"] + io["bare_write_s"]) / io_wall, 3)

        # ------------------------------------------------ nightly retrain
        if not args.skip_retrain:
            settings_for(retrain_fleet, retrain_model)
            result["retrain_champion"] = retrain_champion(s_retrain)
            timer.take()
            result["retrain_rss_at_start_mb"] = round(_status_kb("VmRSS") / 1024, 1)
            reset_peak()
            t0 = time.perf_counter()
            summary = nightly_retrain(
                selector=selector, spec=spec, train_window=timedelta(days=train_days),
                holdout=timedelta(hours=24), end=END.to_pydatetime(), min_history_points=1000,
            )
            wall = time.perf_counter() - t0
            prep = timer.take()
            t = summary["timings"]
            # fit_fleet, register and evaluate run alone (one task): they hold the whole
            # machine for their wall time, hence x workers in task-seconds.
            stages = {
                "extract": t.get("extract", 0.0),
                "prepare": sum(prep.values()),
                "fit": t.get("fit", 0.0) - prep.get("train-batch", 0.0)
                + t.get("fit_fleet", 0.0) * workers,
                "score": (t.get("evaluate", 0.0) + t.get("evaluate_new", 0.0)) * workers
                + t.get("evaluate_batches", 0.0)  # task-seconds, in the train batches
                - prep.get("evaluate-and-promote", 0.0) - prep.get("evaluate-batch", 0.0),
                "write": t.get("register", 0.0) * workers,
            }
            result["retrain_size"] = {"series": retrain_hosts, "days": train_days,
                                      "points": retrain_hosts * int(train_days * 8640)}
            result["retrain_s"] = round(wall, 1)
            result["retrain_1000_series_s"] = round(wall, 1) if retrain_hosts == 1000 else None
            result["retrain_1000_series_s_extrapolated"] = round(wall * 1000 / retrain_hosts, 1)
            result["retrain_seconds"] = {k: round(v, 2) for k, v in t.items()}
            result["retrain_shares"] = shares(stages, wall, workers)
            result["retrain_peak_rss_mb"] = peak_rss_mb()
            result["retrain_series_models"] = summary["series_models"]
            print(f"retrain {retrain_hosts} x {train_days} d: {wall:.1f} s", file=sys.stderr,
                  flush=True)

        result["peak_rss_mb"] = max(result.get("retrain_peak_rss_mb", 0.0),
                                    result["score_peak_rss_mb"])
        result["influxd_peak_rss_mb"] = round(_status_kb("VmHWM", str(server.pid)) / 1024, 1)
        result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        result["targets"] = {
            "score_1000_series_s<=8": None if result["score_1000_series_s"] is None
            else result["score_1000_series_s"] <= 8,
            "score_fraction_of_io_bound>=0.5": None if "score_fraction_of_io_bound" not in result
            else result["score_fraction_of_io_bound"] >= 0.5,
            # measured when 1000 series were retrained, else the labelled extrapolation
            "retrain_1000_series_s<=300" + (
                "" if result.get("retrain_1000_series_s") is not None else " (extrapolated)"):
                None if "retrain_s" not in result
                else (result["retrain_1000_series_s"]
                      or result["retrain_1000_series_s_extrapolated"]) <= 300,
            "retrain_peak_rss_mb<=1500": None if "retrain_peak_rss_mb" not in result
            else result["retrain_peak_rss_mb"] <= 1500,
            "peak_rss_mb<=2000": result["peak_rss_mb"] <= 2000,
        }
    finally:
        if args.keep is not None:
            try:
                from cricket.influx.influxql import InfluxQLClient

                with InfluxQLClient(s_score) as influx:
                    for db in score_dbs:
                        influx.drop_database(db)
            except Exception as exc:  # noqa: BLE001
                print(f"could not drop {score_dbs}: {exc}", file=sys.stderr)
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return result


if __name__ == "__main__":
    out = main()
    print(json.dumps(out))
