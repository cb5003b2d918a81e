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


def test_every_kind_of_all_kinds_changes_exactly_its_stretch():
    """The kinds a reconstruction misses (stuck, missing pulse, warp, noise burst) and the
    families with pulses and slow seasonality: each anomaly starts and ends where the
    truth says (data before the start is untouched; the first and last steps differ)."""
    from cricket.synth import ALL_FAMILIES, ALL_KINDS

    args = dict(hosts=12, days=1.0, start=START, seed=4, kinds=ALL_KINDS,
                families=ALL_FAMILIES, per_host=2, length_range=(0.2, 0.8),
                clean_fraction=0.25)
    clean = make_fleet(**{**args, "anomalies": False})
    dirty = make_fleet(**args)
    assert {a.kind for a in dirty.truth} == set(ALL_KINDS)
    assert len(dirty.clean_keys()) == 3 and set(dirty.families.values()) == set(ALL_FAMILIES)
    step = dirty.step
    for a in dirty.truth:
        d, c = dirty.series[a.key], clean.series[a.key]
        inside = (d.index >= a.start) & (d.index < a.end)
        first = d.index.get_loc(a.start)
        shifted = any(b.key == a.key and b.kind in ("frequency", "warp") and b.start <= a.start
                      for b in dirty.truth)  # these shift the phase of what follows
        if not shifted:
            nxt = min([b.start for b in dirty.truth if b.key == a.key and b.start > a.start],
                      default=dirty.end)
            after = (d.index >= a.end) & (d.index < nxt)
            np.testing.assert_array_equal(d[after], c[after])
        if a.kind in ("zeroed", "spike", "level_shift", "stuck", "missing_pulse"):
            # exact edges: the first and the last anomalous steps differ from normal
            assert d.iloc[first] != c.iloc[first] and d[a.end - step] != c[a.end - step]
        if a.kind == "stuck":
            assert (d[inside] == d.iloc[first - 1]).all()
        if a.kind == "missing_pulse":
            assert dirty.families[a.key] == "pulses"
            assert (d[inside] <= c[inside] + 1e-9).all()
            assert (c[inside] - d[inside]).max() > 0.5 * (c.max() - c.min()) / 2
        if a.kind == "noise_burst":
            assert np.std(d[inside] - c[inside]) > 5 * np.std(np.diff(c[~inside])) / 2
        if a.kind == "warp":
            assert not np.allclose(d[inside], c[inside])
        if not shifted and a.kind != "warp":
            np.testing.assert_array_equal(d[d.index < a.start][-50:], c[c.index < a.start][-50:])
    with pytest.raises(ValueError, match="pulses"):
        make_fleet(hosts=4, days=0.5, start=START, kinds=("missing_pulse",))
