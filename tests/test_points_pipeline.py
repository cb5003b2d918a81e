"""The point model's pipeline end to end: real influxd, Prefect's test harness, a real
MLflow SQLite store, the synthetic multi-field fleet (anomalies that break the correlation
between fields while every field stays in range). The nightly retrain given a point
selector registers one version holding the waveform model and the point model; the point
flows score with the point part of the champion, announce incidents (the field named)
and publish what waveform runs publish."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from fixtures.influx import settings_for
from fixtures.pipeline import apply_env
from receiver_support import Receiver

from cricket.config import DetectorSpec
from cricket.influx.influxql import InfluxQLClient, InfluxQLSource
from cricket.multifield import PointSpec
from cricket.synth_points import make_point_fleet, write_point_fleet

pytestmark = pytest.mark.slow
NAME = "cricket-points-test"


def retrain(fleet, split, **point_spec):  # noqa: ANN001, ANN201
    from cricket.flows.retrain import nightly_retrain

    selector = fleet.selector()
    return nightly_retrain(
        selector=selector.field_selector("power"),
        spec=DetectorSpec(segment_len=16, n_clusters=8),
        train_window=(split - fleet.start).to_pytimedelta(), holdout=timedelta(hours=6),
        end=split.to_pydatetime(), min_history_points=100,
        points=selector, point_spec=PointSpec(n_clusters=6, **point_spec),
    )


@pytest.fixture(scope="module")
def trained(influx_server, tmp_path_factory, prefect_api):
    tmp = tmp_path_factory.mktemp("points")
    db = f"points_{uuid.uuid4().hex[:10]}"
    receiver = Receiver()
    settings = settings_for(
        influx_server, db, tmp,
        mlflow_tracking_uri=f"sqlite:///{(tmp / 'mlflow.db').absolute()}",
        model_name=NAME, report_dir=tmp / "reports", alert_webhook_url=receiver.url + "/hook",
    )
    with InfluxQLClient(settings) as client:
        client.ensure_database(db)
    fleet = make_point_fleet(n_devices=6, days=2.5, step="5m", seed=5)
    write_point_fleet(fleet, settings)
    mp = pytest.MonkeyPatch()
    apply_env(mp, settings)
    mp.setenv("CRICKET_ALERT_WEBHOOK_URL", receiver.url + "/hook")
    split = fleet.end - pd.Timedelta(hours=12)
    summary = retrain(fleet, split)
    yield settings, fleet, summary, split, receiver
    mp.undo()
    receiver.close()


def test_one_version_holds_the_waveform_model_and_the_point_model(trained):
    settings, fleet, summary, _, _ = trained
    assert summary["points"]["devices"] == len(fleet.devices) and summary["promoted"] is True
    from cricket.point_registry import load_points
    from cricket.registry import Registry

    reg = Registry(settings)
    version = summary["model_version"]
    assert reg.alias_version() == version
    bundle, got = load_points(settings)  # the champion's point part
    assert got == version
    assert set(bundle.models) == set(fleet.devices)
    assert bundle.selector.fields == ["load", "power", "temp"]
    waveform, _ = reg.load_bundle(version=version)  # and its waveform part, same version
    assert waveform.selector.field == "power" and waveform.detectors
    mv = reg.client.get_model_version(NAME, version)
    # judged as a whole: the point part's held-out figures are on the version
    assert float(mv.tags["point_heldout_false_alarms"]) < 0.05
    assert float(mv.tags["point_probe_recall"]) >= 0.8 and int(mv.tags["point_probes"]) > 0
    assert "point model" in mv.tags["decision_reason"]
    assert "Point model (several fields per device, in this version)" in mv.description
    # no separate point model any more
    assert [m.name for m in reg.client.search_registered_models()] == [NAME]


def test_backfill_finds_the_broken_correlations_names_the_field_and_clean_devices_stay_quiet(
    trained,
):
    settings, fleet, summary, split, _ = trained
    from cricket.flows.points import points_backfill

    out = points_backfill(start=split.to_pydatetime(), end=fleet.end.to_pydatetime())
    assert out["model_version"] == summary["model_version"]
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
    assert out["alerts"]["paged"] is False  # a plain backfill announces nothing

    # written back: events with the field named, under the model's name and version
    with InfluxQLSource(settings) as src:
        for a in fleet.truth:
            back = src.read_events(a.key, split, fleet.end)
            assert list(back["model_name"].unique()) == [NAME]
            assert a.kind in set(back["contributor"])
    # the report names the fields and shows each event's point against its centroid
    html = open(out["report"]).read()
    for a in fleet.truth:
        assert str(a.key) in html
    assert html.count("class='contributor'") == len(fleet.truth)
    assert html.count("alt='scatter'") == len(fleet.truth)
    assert html.count("alt='per-feature bars'") == len(fleet.truth)
    assert "out of line with the other fields" in html
    # ... and links the waveform model's report of the same window and version: the
    # waveform backfill of that range writes exactly that file next to it
    from cricket.flows.backfill import backfill

    wave = backfill(start=split.to_pydatetime(), end=fleet.end.to_pydatetime(),
                    chunk=timedelta(hours=6), selector=fleet.selector().field_selector("power"))
    assert wave["model_version"] == out["model_version"]
    assert Path(wave["report"]).parent == Path(out["report"]).parent
    assert f"<a href='{Path(wave['report']).name}'>" in html
    # what a waveform run publishes: table, markdown and link artifacts, an MLflow run
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    ids = out["artifacts"]  # this run's own (other tests' runs share the Prefect API)
    with get_client(sync_client=True) as client:
        def art(what: str, key: str):  # noqa: ANN202
            found = client.read_artifacts(artifact_filter=ArtifactFilter(
                id=ArtifactFilterId(any_=[ids[what]])))
            assert len(found) == 1 and found[0].key == key, (what, found)
            return found[0]

        table = art("table", "cricket-points-backfill-events")
        assert table.type == "table"
        rows = table.data if isinstance(table.data, list) else __import__("json").loads(table.data)
        assert {(r["device"], r["field"]) for r in rows} == {(str(a.key), a.kind)
                                                             for a in fleet.truth}
        summary_md = art("markdown", "cricket-points-backfill-summary")
        assert all(f"| {a.key} |" in summary_md.data for a in fleet.truth)
        link = art("link", "cricket-points-backfill-report")
        assert out["mlflow_run"] in link.data
    from cricket.registry import Registry

    run = Registry(settings).client.get_run(out["mlflow_run"])
    assert run.data.params["kind"] == "points-backfill"
    assert run.data.metrics["events"] == len(fleet.truth)
    names = [f.path for f in Registry(settings).client.list_artifacts(run.info.run_id, "report")]
    assert names == [f"report/{Path(out['report']).name}"]


def test_point_events_page_once_with_the_field_named_and_answers_apply(trained):
    settings, fleet, _, split, receiver = trained
    from cricket.flows.points import points_backfill

    from cricket.feedback import make_label
    from cricket.influx.answers import AnswerStore

    first = fleet.truth[0]
    with AnswerStore(settings) as store:  # someone answered: this one is a real anomaly
        store.save_label(make_label(str(first.key), "anomaly", first.start, first.end,
                                    "ops", "psu swapped"))
    out = points_backfill(start=split.to_pydatetime(), end=fleet.end.to_pydatetime(),
                          alert=True)
    opened = receiver.posts("/hook")
    devices = {str(a.key) for a in fleet.truth}
    assert out["alerts"]["opened"] == len(opened) >= 1
    text = "\n".join(doc["text"] for doc in opened)
    for a in fleet.truth:  # every anomalous device is in an incident, its field named
        assert f"{a.key} (anomaly, field {a.kind})" in text
    assert {s for doc in opened for s in doc["series"]} == devices  # clean ones quiet
    # the label shows in the run's answers and in the report
    assert any(r["series"] == str(first.key) and r["what"] == "label: anomaly"
               for r in out["alerts"]["answers"])
    assert "psu swapped" in open(out["report"]).read()
    # once per problem: the same range again pages nobody
    again = points_backfill(start=split.to_pydatetime(), end=fleet.end.to_pydatetime(),
                            alert=True)
    assert again["alerts"]["opened"] == 0 and len(receiver.posts("/hook")) == len(opened)


def test_a_version_whose_point_part_is_worse_is_not_promoted(trained):
    settings, fleet, first, split, _ = trained
    from cricket.registry import Registry

    # the same waveform part, but a point part that fires on normal rows
    worse = retrain(fleet, split, percentile=60.0, threshold_margin=1.0)
    assert int(worse["model_version"]) > int(first["model_version"])
    assert worse["promoted"] is False
    assert "point model" in worse["decision"] and "more false alarms" in worse["decision"]
    assert Registry(settings).alias_version() == first["model_version"]
    # an equal one is promoted, judged against the champion's point part
    again = retrain(fleet, split)
    assert again["promoted"] is True and "vs champion" in again["points"]["check"]["reason"]


def test_a_version_without_a_point_part_does_not_replace_a_champion_that_has_one(trained):
    """A retrain run without the point selector (an ad hoc `cricket retrain`) would end
    point scoring if promoted: it is registered, the champion stays, and the decision
    says why and what to do."""
    settings, fleet, _, split, _ = trained
    from cricket.flows.retrain import nightly_retrain

    from cricket.point_registry import load_points
    from cricket.registry import Registry

    reg = Registry(settings)
    champion = reg.alias_version()
    waveform_only = nightly_retrain(
        selector=fleet.selector().field_selector("power"),
        spec=DetectorSpec(segment_len=16, n_clusters=8),
        train_window=(split - fleet.start).to_pytimedelta(), holdout=timedelta(hours=6),
        end=split.to_pydatetime(), min_history_points=100,
    )
    assert waveform_only["promoted"] is False
    assert "point model" in waveform_only["decision"]
    assert "cricket retrain --points" in waveform_only["decision"]
    assert reg.alias_version() == champion
    assert load_points(settings)[1] == champion  # point scoring goes on
    mv = reg.client.get_model_version(NAME, waveform_only["model_version"])
    assert mv.tags["point_part"] == "missing"


def test_devices_that_send_nothing_are_data_missing_events(trained):
    """A device the point model knows that sends no row in the window is an event of its
    own (data_missing), written with the others, listed in the summary and the report,
    as a waveform series that stops reporting is."""
    settings, fleet, summary, _, _ = trained
    from cricket.flows.points import points_backfill

    start = fleet.end + pd.Timedelta(hours=1)  # nothing was written after the fleet's end
    out = points_backfill(start=start.to_pydatetime(), end=(start + pd.Timedelta(hours=1))
                          .to_pydatetime())
    devices = sorted(str(d) for d in fleet.devices)
    assert [m.split(": ")[0] for m in out["data_missing"]] == devices
    assert all(m.endswith("no data (expected 12 points)") for m in out["data_missing"])
    assert out["written"]["data_missing"] > 0 and out["events"] == []
    with InfluxQLClient(settings) as client:
        rows = client.query(
            'SELECT "received", "expected", "peak" FROM "cricket_event" '
            "WHERE event_kind = 'data_missing' GROUP BY \"series\"",
        )
    got = {s["tags"]["series"]: list(s["values"][0][1:]) for s in rows}
    assert got == {d: [0, 12, 100.0] for d in devices}, rows
    html = Path(out["report"]).read_text()
    assert "Devices missing data" in html and all(d in html for d in devices)


def test_old_separate_point_models_and_versions_without_points_say_so(trained):
    settings, *_ = trained
    from cricket.point_registry import NoPointModelError, load_points
    from cricket.registry import Registry

    client = Registry(settings).client
    client.create_registered_model(f"{NAME}-points", tags={"model_kind": "points"})
    old = settings.model_copy(update={"model_name": f"{NAME}-points"})
    with pytest.raises(NoPointModelError) as info:
        load_points(old)
    text = str(info.value)
    assert "\n" not in text and "no longer read" in text and f"CRICKET_MODEL_NAME={NAME}" in text
    client.delete_registered_model(f"{NAME}-points")


def test_a_retrain_keeps_labelled_anomalies_out_and_checks_it_still_finds_them(trained):
    settings, fleet, _, _, _ = trained
    from cricket.influx.answers import AnswerStore

    with AnswerStore(settings) as store:  # the answer given in the paging test above
        labelled = [lab for lab in store.labels() if lab.label == "anomaly"]
    assert len(labelled) == 1
    first = labelled[0]
    end = fleet.end  # a window that now holds the labelled stretch
    holdout_start = end - pd.Timedelta(hours=6)
    out = retrain(fleet, end)
    check = out["points"]["check"]
    assert (check["labelled"], check["labelled_found"]) == (1, 1)
    rows = pd.date_range(first.start, first.end, freq=fleet.step)
    assert out["points"]["labelled_out"] == int((rows < holdout_start).sum())


def test_a_stretch_labelled_normal_is_learnt_by_the_point_model(trained):
    """Someone answers that a flagged combination of fields is normal for the device (a
    maintenance mode, say): the next retrain learns those rows as centroids of their own,
    so they no longer fire, while the other anomalies are still found."""
    settings, fleet, _, split, _ = trained
    from cricket.flows.points import points_backfill

    from cricket.feedback import make_label
    from cricket.influx.answers import AnswerStore

    # the retrain below trains on all but the last 6 hours: what it has not seen is there
    held_out = [a for a in fleet.truth if a.start >= fleet.end - pd.Timedelta(hours=6)]
    said = next(a for a in held_out if a.key != fleet.truth[0].key)  # [0]: labelled anomaly
    assert len(held_out) >= 3
    with AnswerStore(settings) as store:
        store.save_label(make_label(str(said.key), "normal", said.start, said.end,
                                    "ops", "calibration run"))
    out = retrain(fleet, fleet.end)
    assert out["points"]["normal_learnt"] >= 1
    scored = points_backfill(start=split.to_pydatetime(), end=fleet.end.to_pydatetime(),
                             model_version=out["model_version"])
    events = pd.DataFrame(scored["events"])
    events["start"] = pd.to_datetime(events["start"])
    events["end"] = pd.to_datetime(events["end"])
    for a in held_out:  # the one said to be normal is quiet, the others still fire
        hit = events[(events["device"] == str(a.key)) & (events["start"] < a.end)
                     & (events["end"] > a.start)]
        assert len(hit) == (0 if a is said else 1), (a, hit)
