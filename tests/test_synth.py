"""The synthetic cricket fleet: shapes, injected anomalies and their ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cricket.config import SeriesSelector
from cricket.influx.influxql import InfluxQLSource
from cricket.synth import KINDS, make_fleet, write_fleet

START = pd.Timestamp("2024-01-01T00:00:00Z")


def test_fleet_is_regular_deterministic_and_named():
    a = make_fleet(hosts=4, days=1.0, start=START, seed=7)
    b = make_fleet(hosts=4, days=1.0, start=START, seed=7)
    c = make_fleet(hosts=4, days=1.0, start=START, seed=8)
    assert [k.tag_dict["host"] for k in a.keys] == [f"cricket00{i}" for i in range(1, 5)]
    assert {k.measurement for k in a.keys} == {"waveform"} and {k.field for k in a.keys} == {"value"}
    for k, s in a.series.items():
        assert len(s) == 8640 and s.index[0] == START
        assert (np.diff(s.index.asi8) == 10 * 10**9).all()
        assert np.isfinite(s.to_numpy()).all()
        pd.testing.assert_series_equal(s, b.series[k])
        assert not np.allclose(s.to_numpy(), c.series[k].to_numpy())
    assert "heartbeat" in a.families.values()


def test_every_kind_injected_in_last_12_hours_distinct_hours_some_clean():
    f = make_fleet(hosts=8, days=3.0, start=START, seed=0)
    assert {a.kind for a in f.truth} == set(KINDS)
    assert len(f.clean_keys()) >= 1
    last12 = f.end - pd.Timedelta(hours=12)
    hours = [a.start.floor("h") for a in f.truth]
    assert len(set(hours)) == len(hours)
    for a in f.truth:
        assert last12 <= a.start < a.end <= f.end
        assert a.end - a.start <= pd.Timedelta(hours=1)


def test_anomalies_change_the_data_where_truth_says():
    clean = make_fleet(hosts=8, days=2.0, start=START, seed=3, anomalies=False)
    dirty = make_fleet(hosts=8, days=2.0, start=START, seed=3)
    assert clean.truth == []
    for a in dirty.truth:
        d = dirty.series[a.key]
        c = clean.series[a.key]
        inside = (d.index >= a.start) & (d.index < a.end)
        if a.kind != "frequency":  # frequency change shifts phase after the stretch too
            np.testing.assert_array_equal(d[~inside & (d.index < a.start)], c[~inside & (d.index < a.start)])
        assert not np.allclose(d[inside], c[inside])
        if a.kind == "zeroed":
            assert (d[inside] == 0).all()
        if a.kind == "spike":
            assert d[inside].min() > c.max()
        if a.kind == "shape":  # the range stays (nearly) normal
            assert d[inside].max() <= c.max() + 1e-9 and d[inside].min() >= c.min() - 1e-9
    for k in dirty.clean_keys():
        pd.testing.assert_series_equal(dirty.series[k], clean.series[k])


def test_anomaly_window_controls_placement():
    w = (START + pd.Timedelta(hours=2), START + pd.Timedelta(hours=10))
    f = make_fleet(hosts=6, days=1.0, start=START, anomaly_window=w)
    assert all(w[0] <= a.start and a.end <= w[1] for a in f.truth)
    with pytest.raises(ValueError, match="outside"):
        make_fleet(hosts=3, days=1.0, start=START, anomaly_window=(START - pd.Timedelta(days=9), START - pd.Timedelta(days=8)))


def test_write_fleet_to_real_influx_and_read_back(influx_settings):
    f = make_fleet(hosts=3, days=0.25, start=START, seed=1)
    assert write_fleet(f, influx_settings) == f.n_points
    sel = SeriesSelector(measurement="waveform", field="value", group_by=["host"], every="10s")
    with InfluxQLSource(influx_settings) as src:
        got = src.read(sel, f.start, f.end)
    assert sorted(got) == f.keys
    for k, s in f.series.items():
        np.testing.assert_allclose(got[k].to_numpy(), s.to_numpy(), rtol=1e-12)
