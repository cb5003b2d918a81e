"""Several fields of one device judged together: the synth family, the point model, and
the fields read back from a real influxd and aligned per device and step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cricket.errors import CricketValueError
from cricket.multifield import PointBundle, PointModel, PointSelector, PointSpec, point_events
from cricket.series import SeriesKey
from cricket.synth_points import FIELDS, make_point_fleet, write_point_fleet


@pytest.fixture(scope="module")
def fleet():
    return make_point_fleet(n_devices=6, days=2.0, seed=4)


def frames_of(fleet) -> dict[SeriesKey, pd.DataFrame]:
    return {
        dev: pd.DataFrame({f: fleet.series[SeriesKey.make(dev.measurement, f, dev.tag_dict)]
                           for f in FIELDS})
        for dev in fleet.devices
    }


def test_anomalies_break_the_correlation_while_every_field_stays_in_range(fleet):
    assert fleet.truth and fleet.clean_devices()
    split = fleet.end - pd.Timedelta(hours=12)
    for a in fleet.truth:
        host = a.key.tag_dict
        for f in FIELDS:
            s = fleet.series[SeriesKey.make("psu", f, host)]
            normal, bad = s[s.index < split], s[(s.index >= a.start) & (s.index < a.end)]
            assert bad.min() >= normal.min() and bad.max() <= normal.max(), (a, f)
        # the broken field no longer follows the load the way it did in training
        load = fleet.series[SeriesKey.make("psu", "load", host)]
        broken = fleet.series[SeriesKey.make("psu", a.kind, host)]
        train = load.index < split
        fit = np.polyfit(load[train], broken[train], 1)
        inside = (load.index >= a.start) & (load.index < a.end)
        resid = np.abs(broken[inside] - np.polyval(fit, load[inside]))
        normal_resid = np.abs(broken[train] - np.polyval(fit, load[train]))
        assert resid.min() > 5 * normal_resid.quantile(0.99)


def test_point_models_find_the_anomalies_name_the_field_and_keep_clean_devices_quiet(fleet):
    frames = frames_of(fleet)
    spec = PointSpec()
    split = fleet.end - pd.Timedelta(hours=12)
    bundle, skipped = PointBundle.train(
        fleet.selector(), spec, {k: f[f.index < split] for k, f in frames.items()}
    )
    assert not skipped and set(bundle.models) == set(fleet.devices)
    events = {}
    for dev, model in bundle.models.items():
        scored = model.score(frames[dev][frames[dev].index >= split])
        events[dev] = point_events(scored, spec, fleet.step)
    for a in fleet.truth:
        ev = events[a.key]
        hit = ev[(ev["start"] < a.end) & (ev["end"] > a.start)]
        assert len(hit) == 1, (a, ev)
        assert hit["contributor"].iloc[0] == a.kind
    for dev in fleet.clean_devices():
        assert events[dev].empty, (dev, events[dev])


def test_state_round_trips_and_scores_the_same(fleet, tmp_path):
    frames = frames_of(fleet)
    bundle, _ = PointBundle.train(fleet.selector(), PointSpec(n_clusters=4), frames)
    again = PointBundle.load(bundle.save(tmp_path).parent)
    dev = fleet.devices[0]
    pd.testing.assert_frame_equal(bundle.models[dev].score(frames[dev]),
                                  again.models[dev].score(frames[dev]))
    assert again.selector == bundle.selector and again.spec == bundle.spec


def test_rows_labelled_normal_are_learnt_without_moving_the_threshold(fleet, tmp_path):
    """learn_normal adds the labelled rows the model flags as centroids, so they no longer
    fire; the threshold stays, the device's other anomaly still fires, and the learnt
    centroids survive a save/load."""
    frames = frames_of(fleet)
    split = fleet.end - pd.Timedelta(hours=12)
    spec = PointSpec()
    bundle, _ = PointBundle.train(fleet.selector(), spec,
                                  {k: f[f.index < split] for k, f in frames.items()})
    by_device: dict = {}
    for a in fleet.truth:
        by_device.setdefault(a.key, []).append(a)
    key, (said, *others) = next((k, v) for k, v in by_device.items() if len(v) >= 2)
    model = bundle.models[key]
    frame = frames[key]
    rows = frame[(frame.index >= said.start) & (frame.index < said.end)]
    assert model.score(rows)["anomalous"].any()
    threshold, n_centroids = model.threshold_, len(model.detector_.cluster_centers_)

    added = bundle.learn_normal([(key, rows)])
    assert 1 <= added == len(model.detector_.cluster_centers_) - n_centroids
    assert model.threshold_ == threshold
    assert not model.score(rows)["anomalous"].any()
    other = others[0]
    assert model.score(frame[(frame.index >= other.start) & (frame.index < other.end)])[
        "anomalous"].any()
    assert bundle.learn_normal([(key, rows)]) == 0  # already covered
    again = PointBundle.load(bundle.save(tmp_path).parent)
    pd.testing.assert_frame_equal(again.models[key].score(frame), model.score(frame))


def test_per_feature_scaling_is_part_of_the_model(fleet):
    """Scaling a field by 1000 (other units) changes nothing about what is anomalous."""
    dev = fleet.devices[0]
    frame = frames_of(fleet)[dev]
    other = frame.assign(power=frame["power"] * 1000.0)
    a = PointModel(list(FIELDS)).fit(frame).score(frame)
    b = PointModel(list(FIELDS)).fit(other).score(other)
    np.testing.assert_allclose(a["distance"], b["distance"], rtol=1e-6)
    assert (a["anomalous"] == b["anomalous"]).all()


def test_rows_missing_a_field_are_not_judged(fleet):
    dev = fleet.devices[0]
    frame = frames_of(fleet)[dev]
    model = PointModel(list(FIELDS)).fit(frame)
    holed = frame.copy()
    holed.iloc[5, 1] = np.nan
    scored = model.score(holed)
    assert np.isnan(scored["distance"].iloc[5]) and not scored["anomalous"].iloc[5]


def test_bad_input_is_one_clear_line():
    with pytest.raises(ValueError, match="at least two distinct fields"):
        PointSelector(fields=["power"])
    with pytest.raises(CricketValueError, match="min_rows"):
        PointModel(["a", "b"]).fit(pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 3.0]}))
    with pytest.raises(CricketValueError, match="lacks field"):
        PointModel(["a", "b"]).fit(pd.DataFrame({"a": [1.0] * 200}))
    with pytest.raises(CricketValueError, match="not fitted"):
        PointModel(["a", "b"]).score(pd.DataFrame({"a": [1.0], "b": [1.0]}))


def test_fields_written_to_influx_are_read_back_aligned_per_device(influx_settings):
    from cricket.influx.influxql import InfluxQLSink, InfluxQLSource
    from cricket.influx.points import read_point_frames, write_point_results

    fleet = make_point_fleet(n_devices=3, days=1.0, step="10m", seed=2)
    write_point_fleet(fleet, influx_settings)
    selector = fleet.selector()
    with InfluxQLSource(influx_settings) as src:
        frames = read_point_frames(src, selector, fleet.start, fleet.end)
    assert set(frames) == set(fleet.devices)
    dev = fleet.devices[1]
    want = frames_of(fleet)[dev]
    got = frames[dev].reindex(want.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9)

    model = PointModel(list(FIELDS), PointSpec(min_rows=50)).fit(frames[dev])
    scored = model.score(frames[dev])
    events = pd.DataFrame({"start": [fleet.start], "end": [fleet.start + fleet.step],
                           "peak": [80.0], "mean": [70.0], "duration_s": [600.0],
                           "contributor": ["temp"]})
    with InfluxQLSink(influx_settings) as sink:
        n, m = write_point_results(sink, dev, scored, events, "1", "cricket-points-test")
    assert n == len(scored) and m == 1
    with InfluxQLSource(influx_settings) as src:
        back = src.read_events(dev, fleet.start, fleet.end)
    assert list(back["contributor"]) == ["temp"]
    assert back["start"].iloc[0] == fleet.start
