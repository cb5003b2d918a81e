"""The point model from a served deployment: `cricket serve` (a real process) against a
real Prefect API, a real influxd holding the synthetic multi-field fleet and a real MLflow
SQLite store. The served nightly-retrain, given a point selector, registers one version
holding the waveform and the point model; the served points-backfill finds the
correlation-breaking anomalies (every field in range), names the field, and leaves the
clean devices quiet."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
END = pd.Timestamp("2026-01-08T00:00:00Z")


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """A Prefect API server on a free port with a throwaway database; yields its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield str(PREFECT_API_URL.value())


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text()[-n:]
    except OSError:
        return "(no log)"


def _wait_for(names: list[str], proc: subprocess.Popen, timeout: float) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "cricket serve exited early"
            try:
                for n in names:
                    client.read_deployment_by_name(n)
                return
            except ObjectNotFound:
                time.sleep(1)
    raise AssertionError(f"cricket serve did not register {names} within {timeout}s")


def _run(name: str, parameters: dict[str, Any], log: Path) -> Any:
    from prefect.deployments import run_deployment

    run = run_deployment(name, parameters=parameters, timeout=420)
    assert run.state is not None and run.state.is_completed(), (
        f"{name} ended {run.state}; serve log:\n{_tail(log)}"
    )
    return run


def test_served_points_backfill_finds_the_broken_correlations(
    prefect_api: str, influx_settings: Any, mlflow_settings: Any, tmp_path: Path
) -> None:
    from cricket.influx.influxql import InfluxQLSource
    from cricket.point_registry import load_points
    from cricket.registry import Registry
    from cricket.synth_points import make_point_fleet, write_point_fleet

    fleet = make_point_fleet(n_devices=5, days=2.5, step="5m", end=END, seed=11)
    write_point_fleet(fleet, influx_settings)
    split = END - pd.Timedelta(hours=12)
    assert fleet.truth and fleet.clean_devices()

    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CRICKET_"))}
    env.update(
        PREFECT_API_URL=prefect_api, PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
        CRICKET_CONFIG=str(home / "no-cricket.toml"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        CRICKET_INFLUX_URL=influx_settings.influx_url, CRICKET_INFLUX_SOURCE="influxql",
        CRICKET_INFLUX_DATABASE=influx_settings.influx_database,
        CRICKET_STATE_DIR=str(mlflow_settings.state_dir),
        CRICKET_MLFLOW_TRACKING_URI=mlflow_settings.tracking_uri,
        CRICKET_MODEL_NAME=mlflow_settings.model_name,
        CRICKET_REPORT_DIR=str(tmp_path / "reports"),
    )
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen([str(BIN / "cricket"), "serve", "--no-schedules"], cwd=tmp_path,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    points = {"measurement": "psu", "fields": ["load", "power", "temp"], "group_by": ["host"],
              "every": "PT5M"}
    try:
        _wait_for(["nightly-retrain/nightly-retrain", "points-backfill/points-backfill"],
                  proc, timeout=180)
        _run("nightly-retrain/nightly-retrain", {
            "selector": {"measurement": "psu", "field": "power", "group_by": ["host"],
                         "every": "PT5M"},
            "spec": {"segment_len": 16, "n_clusters": 8},
            "train_window": "PT48H", "holdout": "PT6H", "end": split.isoformat(),
            "min_history_points": 100,
            "points": points, "point_spec": {"n_clusters": 6},
        }, log_path)
        _run("points-backfill/points-backfill",
             {"start": split.isoformat(), "end": END.isoformat()}, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    # one MLflow version holds the waveform model and the point model
    settings = mlflow_settings
    version = Registry(settings).alias_version()
    assert version is not None
    waveform, _ = Registry(settings).load_bundle(version=version)
    bundle, got = load_points(settings)
    assert got == version and waveform.detectors
    assert set(bundle.models) == set(fleet.devices)

    # the events the served run wrote: each anomaly found once, its field named; every
    # field of every anomalous row stays inside its training range; clean devices quiet
    with InfluxQLSource(influx_settings) as src:
        found = {str(d): src.read_events(d, split, END) for d in fleet.devices}
    for a in fleet.truth:
        ev = found[str(a.key)]
        hit = ev[(ev["start"] < a.end) & (ev["end"] > a.start)]
        assert len(hit) == 1, a
        assert a.kind in set(hit["contributor"]), a
        for f in bundle.selector.fields:  # in range: not a single-field outlier
            values = fleet.series[a.key.__class__.make("psu", f, a.key.tag_dict)]
            train = values[values.index < split]
            inside = values[(values.index >= a.start) & (values.index < a.end)]
            assert inside.between(train.min(), train.max()).all(), (a, f)
    for dev in fleet.clean_devices():
        assert found[str(dev)].empty, dev
    assert sum(len(e) for e in found.values()) == len(fleet.truth)
