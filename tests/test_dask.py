"""The flows on a real Dask cluster: a ``distributed.LocalCluster`` with two worker
processes, reached through ``CRICKET_DASK_ADDRESS`` as a production cluster would be.

The same small fleet is written to two databases; the retrain and the hourly score run
once on the local thread runner and once through Dask, and must give the same model
(series, centroids, thresholds) and the same scores and events in InfluxDB.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from fixtures.influx import settings_for
from fixtures.pipeline import apply_env

from cricket.config import DetectorSpec, SeriesSelector
from cricket.influx.influxql import InfluxQLClient, InfluxQLSource
from cricket.synth import make_fleet, write_fleet

pytestmark = pytest.mark.slow

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
SPEC = DetectorSpec(n_clusters=16)
END = pd.Timestamp("2026-11-20T00:00:00Z")
HOURS = 8
TRAIN_END = END - pd.Timedelta(hours=2)
HOSTS = 4


#: Dask's nanny starts workers with OMP/MKL/OPENBLAS_NUM_THREADS=1; this process may use
#: more BLAS threads, so sums can differ in the last bits (seen: 1e-15 relative in a
#: threshold). Equal means equal to that order, and every flag and event identical.
RTOL = 1e-9


def assert_close(a, b, where: str) -> None:
    """Equal JSON-like structures, floats to RTOL."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert b == pytest.approx(a, rel=RTOL, abs=1e-12, nan_ok=True), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0",
        silence_logs=40,
    ) as c, distributed.Client(c) as client:
        yield c, client


def run_pipeline(settings, monkeypatch, dask_address: str | None) -> dict:
    """Retrain on the hours before TRAIN_END, then score the hour after it."""
    apply_env(monkeypatch, settings)
    if dask_address:
        monkeypatch.setenv("CRICKET_DASK_ADDRESS", dask_address)
    from cricket.flows.retrain import nightly_retrain
    from cricket.flows.score import hourly_score

    trained = nightly_retrain(
        selector=SELECTOR, spec=SPEC, train_window=timedelta(hours=HOURS - 2),
        holdout=timedelta(hours=2), end=TRAIN_END.to_pydatetime(), min_history_points=200,
    )
    scored = hourly_score(
        selector=SELECTOR, at=(TRAIN_END + pd.Timedelta(hours=1)).to_pydatetime(),
        model_version=trained["model_version"],
    )
    return {"trained": trained, "scored": scored}


def results(settings, run: dict) -> tuple:
    from cricket.registry import Registry

    bundle, _ = Registry(settings).load_bundle(run["trained"]["model_version"])
    a, b = TRAIN_END, TRAIN_END + pd.Timedelta(hours=1)
    with InfluxQLSource(settings) as src:
        scores = src.read_scores(SELECTOR, a, b).drop(columns=["model_version"])
        events = src.read_events(SELECTOR, a, b).drop(columns=["model_version"])
    return bundle, scores.reset_index(), events.reset_index()


def test_flows_on_a_two_process_dask_cluster_equal_the_local_runner(
    influx_server, prefect_api, cluster, tmp_path, monkeypatch
):
    from distributed import get_task_stream

    dask_cluster, client = cluster
    fleet = make_fleet(hosts=HOSTS, days=HOURS / 24, step="10s", start=END - pd.Timedelta(hours=HOURS),
                       seed=11, anomaly_window=(TRAIN_END, END))
    runs = {}
    for mode in ("local", "dask"):
        db = f"dask_{mode}_{uuid.uuid4().hex[:8]}"
        settings = settings_for(
            influx_server, db, tmp_path / mode,
            mlflow_tracking_uri=f"sqlite:///{(tmp_path / 'mlflow.db').absolute()}",
            model_name=f"cricket-dask-{mode}", report_dir=tmp_path / mode / "reports",
            batch_size=1,  # one task per series: the cluster gets several tasks per flow
        )
        with InfluxQLClient(settings) as c:
            c.ensure_database(db)
        write_fleet(fleet, settings)
        if mode == "dask":
            with get_task_stream(client) as stream:
                run = run_pipeline(settings, monkeypatch, dask_cluster.scheduler_address)
            ran_on = {t["worker"] for t in stream.data}
            assert len(stream.data) >= 2 * HOSTS, "train and score batches should run on Dask"
            assert ran_on <= set(dask_cluster.scheduler_info["workers"])
        else:
            run = run_pipeline(settings, monkeypatch, None)
        runs[mode] = (settings, run)
        monkeypatch.undo()

    (s_local, local), (s_dask, dask) = runs["local"], runs["dask"]
    assert local["trained"]["series_models"] == dask["trained"]["series_models"] == HOSTS
    assert local["scored"]["scored"] == dask["scored"]["scored"] == HOSTS
    assert local["scored"]["points_written"] == dask["scored"]["points_written"] > 0
    assert local["scored"]["anomalous_series"] == dask["scored"]["anomalous_series"]

    b_local, scores_local, events_local = results(s_local, local)
    b_dask, scores_dask, events_dask = results(s_dask, dask)
    assert b_local.series_keys == b_dask.series_keys == sorted(str(k) for k in fleet.keys)
    for key in b_local.series_keys:
        m_local, arr_local = b_local.detectors[key].get_state()
        m_dask, arr_dask = b_dask.detectors[key].get_state()
        assert_close(m_local, m_dask, key)
        assert sorted(arr_local) == sorted(arr_dask)
        for name in arr_local:
            np.testing.assert_allclose(arr_local[name], arr_dask[name], rtol=RTOL, atol=1e-12,
                                       err_msg=f"{key} {name}")
    assert (b_local.fleet is None) == (b_dask.fleet is None)

    assert len(scores_local) == len(scores_dask) > 0
    # The two runs register under their own model names (results carry the name as a tag).
    assert set(scores_local["model_name"]) == {s_local.model_name}
    assert set(scores_dask["model_name"]) == {s_dask.model_name}
    for a, b in ((scores_local, scores_dask), (events_local, events_dask)):
        a, b = a.drop(columns="model_name"), b.drop(columns="model_name")
        pd.testing.assert_frame_equal(
            a.sort_values(["series", "time"]).reset_index(drop=True),
            b.sort_values(["series", "time"]).reset_index(drop=True),
            check_exact=False, rtol=RTOL, atol=1e-9,
        )
    assert len(events_local) > 0, "the anomalies after TRAIN_END should raise events"


def _runs_a_prefect_server() -> bool:
    """On a worker: whether this process started a temporary Prefect API server."""
    module = sys.modules.get("prefect.server.api.server")
    if module is None:
        return False
    return any(server.running for server in module.SubprocessASGIServer._instances.values())


def test_dask_tasks_report_to_the_flows_temporary_api(prefect_api, cluster):
    """With no PREFECT_API_URL (the CLI's temporary server), the tasks sent to Dask carry
    the URL of the API the flow uses: their runs are recorded there, and no worker starts
    a Prefect server of its own (each did, on its first task: 25-40 s on 2 busy cores,
    and several servers writing one database)."""
    from cricket.flows.runtime import SettingsTaskRunner
    from prefect import flow, get_client, task
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    dask_cluster, client = cluster

    @task
    def where(i: int) -> int:
        return os.getpid()

    @flow(task_runner=SettingsTaskRunner(dask_cluster.scheduler_address))
    def fan_out() -> list[int]:
        return [f.result() for f in [where.submit(i) for i in range(4)]]

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not PREFECT_API_URL.value()  # the flow finds the running server itself
        state = fan_out(return_state=True)
    assert set(state.result()) <= set(client.run(os.getpid).values()), "ran on the workers"
    assert not any(client.run(_runs_a_prefect_server).values())
    with get_client(sync_client=True) as api:
        runs = api.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert len(runs) == 4 and all(r.state.is_completed() for r in runs)


def test_serve_holds_a_warm_local_cluster_for_its_runs(monkeypatch):
    """`cricket serve --dask-workers N`: a LocalCluster whose workers have imported the
    flows, named by CRICKET_DASK_ADDRESS for the runs the server starts, and only while
    serving."""
    from cricket.deployments.serve import local_cluster
    from cricket.flows.runtime import resolve_task_runner
    from distributed import Client
    from prefect_dask import DaskTaskRunner

    monkeypatch.delenv("CRICKET_DASK_ADDRESS", raising=False)
    with local_cluster(1) as address:
        assert address and os.environ["CRICKET_DASK_ADDRESS"] == address
        runner = resolve_task_runner()
        assert isinstance(runner, DaskTaskRunner) and runner.address == address
        with Client(address) as client:
            loaded = client.run(lambda: "cricket.flows.score" in sys.modules)
        assert list(loaded.values()) == [True]
    assert "CRICKET_DASK_ADDRESS" not in os.environ
    with local_cluster(0) as none:
        assert none is None and "CRICKET_DASK_ADDRESS" not in os.environ


def test_batches_in_flight_on_dask_follow_the_cluster_size(prefect_api, cluster, monkeypatch):
    """Two batches per worker thread are kept submitted (each holds its sub-bundle in the
    scheduler until it runs), not a fixed 64: 4 on the two single-thread workers."""
    from cricket.flows.runtime import SettingsTaskRunner, in_flight_limit
    from prefect import flow

    from cricket.config import Settings

    dask_cluster, _ = cluster
    monkeypatch.setenv("CRICKET_DASK_ADDRESS", dask_cluster.scheduler_address)

    @flow(task_runner=SettingsTaskRunner())
    def limit() -> int:
        return in_flight_limit(Settings())

    assert limit() == 4
