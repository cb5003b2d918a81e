"""The point model's pipeline end to end: real influxd, Prefect's test harness, a real
MLflow SQLite store, the synthetic multi-field fleet (anomalies that break the correlation
between fields while every field stays in range)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pandas as pd
import pytest
from fixtures.influx import settings_for
from fixtures.pipeline import apply_env

from cricket.influx.influxql import InfluxQLClient, InfluxQLSource
from cricket.multifield import PointSpec
from cricket.synth_points import make_point_fleet, write_point_fleet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(influx_server, tmp_path_factory, prefect_api):
    tmp = tmp_path_factory.mktemp("points")
    db = f"points_{uuid.uuid4().hex[:10]}"
    settings = settings_for(
        influx_server, db, tmp,
        mlflow_tracking_uri=f"sqlite:///{(tmp / 'mlflow.db').absolute()}",
        model_name="cricket-points-test", report_dir=tmp / "reports",
    )
    with InfluxQLClient(settings) as client:
        client.ensure_database(db)
    fleet = make_point_fleet(n_devices=6, days=2.5, step="5m", seed=5)
    write_point_fleet(fleet, settings)
    mp = pytest.MonkeyPatch()
    apply_env(mp, settings)
    from cricket.flows.points import points_retrain

    split = fleet.end - pd.Timedelta(hours=12)
    summary = points_retrain(
        selector=fleet.selector(), spec=PointSpec(n_clusters=6),
        train_window=(split - fleet.start).to_pytimedelta(), holdout=timedelta(hours=6),
        end=split.to_pydatetime(),
    )
    yield settings, fleet, summary, split
    mp.undo()


def test_retrain_registers_the_point_model_as_champion(trained):
    settings, fleet, summary, _ = trained
    assert summary["devices"] == len(fleet.devices) and summary["promoted"] is True
    from cricket.point_registry import load_points, point_registry

    reg = point_registry(settings)
    assert reg.name == "cricket-points-test-points"
    assert reg.alias_version() == summary["model_version"]
    bundle, version = load_points(settings)
    assert version == summary["model_version"]
    assert set(bundle.models) == set(fleet.devices)
    assert bundle.selector.fields == ["load", "power", "temp"]


def test_backfill_finds_the_broken_correlations_names_the_field_and_clean_devices_stay_quiet(
    trained,
):
    settings, fleet, _, split = trained
    from cricket.flows.points import points_backfill

    out = points_backfill(start=split.to_pydatetime(), end=fleet.end.to_pydatetime())
    events = pd.DataFrame(out["events"])
    assert len(events)
    events["start"] = pd.to_datetime(events["start"])
    events["end"] = pd.to_datetime(events["end"])
    for a in fleet.truth:
        mine = events[(events["device"] == str(a.key)) & (events["start"] < a.end)
                      & (events["end"] > a.start)]
        assert len(mine) == 1, a
        assert mine["contributor"].iloc[0] == a.kind
    clean = {str(d) for d in fleet.clean_devices()}
    assert clean and not set(events["device"]) & clean
    assert len(events) == len(fleet.truth)  # nothing false on dirty devices either

    # written back: events with the field named, under the point model's name
    with InfluxQLSource(settings) as src:
        for a in fleet.truth:
            back = src.read_events(a.key, split, fleet.end)
            assert list(back["model_name"].unique()) == ["cricket-points-test-points"]
            assert a.kind in set(back["contributor"])
    # the report names the fields and shows each event's point against its centroid
    html = open(out["report"]).read()
    for a in fleet.truth:
        assert str(a.key) in html
    assert html.count("class='contributor'") == len(fleet.truth)
    assert html.count("alt='scatter'") == len(fleet.truth)
    assert html.count("alt='per-feature bars'") == len(fleet.truth)
    assert "out of line with the other fields" in html
    # and a markdown artifact on the flow run names them too
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["cricket-points-backfill-events"])))
    assert arts and all(f"| {a.key} |" in arts[0].data and a.kind in arts[0].data
                        for a in fleet.truth)


def test_a_second_retrain_is_judged_against_the_champion(trained):
    settings, fleet, first, split = trained
    from cricket.flows.points import points_retrain

    again = points_retrain(
        selector=fleet.selector(), spec=PointSpec(n_clusters=6),
        train_window=(split - fleet.start).to_pytimedelta(), holdout=timedelta(hours=6),
        end=split.to_pydatetime(),
    )
    assert int(again["model_version"]) == int(first["model_version"]) + 1
    assert "vs champion" in again["decision"]
