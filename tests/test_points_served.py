"""The point model from a served deployment: `cricket serve` (a real process) against a
real Prefect API, a real influxd holding the synthetic multi-field fleet and a real MLflow
SQLite store. The served nightly-retrain, given a point selector, registers one version
holding the waveform and the point model; the served points-backfill finds the
correlation-breaking anomalies (every field in range), names the field, and leaves the
clean devices quiet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from serve_support import own_prefect_api, serve_env, served, tail, wait_for_deployments

pytestmark = pytest.mark.slow
END = pd.Timestamp("2026-01-08T00:00:00Z")


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """A Prefect API server of this module's own, so its deployments meet no other test's."""
    with own_prefect_api() as url:
        yield url


def _run(name: str, parameters: dict[str, Any], log: Path) -> Any:
    from prefect.deployments import run_deployment

    run = run_deployment(name, parameters=parameters, timeout=420)
    assert run.state is not None and run.state.is_completed(), (
        f"{name} ended {run.state}; serve log:\n{tail(log)}"
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
    env = serve_env(
        prefect_api, home,
        CRICKET_INFLUX_URL=influx_settings.influx_url, CRICKET_INFLUX_SOURCE="influxql",
        CRICKET_INFLUX_DATABASE=influx_settings.influx_database,
        CRICKET_STATE_DIR=str(mlflow_settings.state_dir),
        CRICKET_MLFLOW_TRACKING_URI=mlflow_settings.tracking_uri,
        CRICKET_MODEL_NAME=mlflow_settings.model_name,
        CRICKET_REPORT_DIR=str(tmp_path / "reports"),
    )
    log_path = tmp_path / "serve.log"
    points = {"measurement": "psu", "fields": ["load", "power", "temp"], "group_by": ["host"],
              "every": "PT5M"}
    with served(tmp_path, env, log_path) as proc:
        wait_for_deployments(["nightly-retrain/nightly-retrain", "points-backfill/points-backfill"],
                             proc, log_path, timeout=180)
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
