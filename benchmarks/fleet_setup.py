"""The untimed set-up of ``fleet.py``: the synthetic fleets written from child processes
(the writer's memory is not the benchmark's), the scoring champion trained in a child,
what a ``--keep`` folder already holds, and the warm-up of Prefect's API and the MLflow
store before anything is timed."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd

#: the end of every fleet's data; the scored hour is [END-2h, END-1h)
END = pd.Timestamp("2026-11-20T00:00:00Z")


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
    """Write each job's fleet from a spawned child, all at once; what each wrote, in the
    order they finished."""
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
