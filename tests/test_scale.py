"""Scale pieces against the real influxd: a batch reads only its own series (bound
parameters, exact matches), sub-bundles score like the whole bundle, and the flows'
task runner is chosen when a run starts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cricket.config import DetectorSpec, SeriesSelector
from cricket.influx.influxql import KEYS_PER_QUERY, InfluxQLSink, InfluxQLSource
from cricket.series import SeriesKey

T0 = pd.Timestamp("2026-11-01T00:00:00Z")
SEL = SeriesSelector(measurement="m", field="v", group_by=["host"], every="10s")
HOSTS = ["a", "b", 'c"x', "d' OR 1=1", "e\\"]


def key(host: str) -> SeriesKey:
    return SeriesKey.make("m", "v", {"host": host})


@pytest.fixture
def written(influx_settings):
    idx = pd.date_range(T0, periods=30, freq="10s")
    with InfluxQLSink(influx_settings) as sink:
        for i, h in enumerate(HOSTS):
            if h == "e\\":
                continue  # the 1.x line protocol refuses a trailing backslash
            sink.write_series(key(h), pd.Series(np.arange(30.0) + 100 * i, index=idx))
    return influx_settings


def test_read_with_keys_returns_only_those_series_with_the_same_values(written):
    stop = T0 + pd.Timedelta(minutes=5)
    with InfluxQLSource(written) as src:
        everything = src.read(SEL, T0, stop)
        some = src.read(SEL, T0, stop, keys=[key("b"), key('c"x'), key("nope")])
        hostile = src.read(SEL, T0, stop, keys=[key("d' OR 1=1")])
        none = src.read(SEL, T0, stop, keys=[])
    assert set(everything) == {key(h) for h in HOSTS if h != "e\\"}
    assert set(some) == {key("b"), key('c"x')}
    for k, s in some.items():
        pd.testing.assert_series_equal(s, everything[k])
    assert set(hostile) == {key("d' OR 1=1")}, "an injection payload is one literal tag value"
    assert none == {}


def test_read_with_more_keys_than_one_query_holds(written, monkeypatch):
    import cricket.influx.influxql as iql

    monkeypatch.setattr(iql, "KEYS_PER_QUERY", 2)
    assert KEYS_PER_QUERY >= 100
    stop = T0 + pd.Timedelta(minutes=5)
    with InfluxQLSource(written) as src:
        got = src.read(SEL, T0, stop, keys=[key(h) for h in HOSTS])
        want = src.read(SEL, T0, stop)
    assert set(got) == set(want)
    for k in want:
        pd.testing.assert_series_equal(got[k], want[k])


def test_key_filter_binds_every_tag_value_as_a_parameter():
    sel = SeriesSelector(measurement="m", field="v", group_by=["dc", "host"], tags={"env": "prod"})
    keys = [SeriesKey.make("m", "v", {"dc": "x", "host": "h1"}),
            SeriesKey.make("m", "v", {"dc": "y", "host": "h'2"})]
    q, params = InfluxQLSource.__new__(InfluxQLSource).build_query(sel, 0, 10, keys)
    assert "h'2" not in q and "prod" not in q
    assert '(("dc" = $k0_0 AND "host" = $k0_1) OR ("dc" = $k1_0 AND "host" = $k1_1))' in q
    assert params["k1_1"] == "h'2" and params["k0_0"] == "x"


def test_a_sub_bundle_holds_only_its_series_and_scores_the_same():
    from cricket.tasks.score import sub_bundle

    from cricket.detector import WaveformDetector
    from cricket.model import ModelBundle
    from cricket.scoring import score_series

    spec = DetectorSpec(n_clusters=4, segment_len=8)
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(2000) / 3) + 0.05 * rng.standard_normal(2000)
    dets = {str(key(h)): WaveformDetector(spec).fit(x[:1500], holdout=x[1500:]) for h in "ab"}
    fleet = WaveformDetector(spec, per_series_scaling=True).fit(x[:1500], holdout=x[1500:])
    bundle = ModelBundle(detectors=dets, fleet=fleet, spec=spec, selector=SEL,
                         extra={"skipped": {"z": "too little"}})
    sub = sub_bundle(bundle, [key("b"), key("new")])
    assert sub.series_keys == [str(key("b"))]
    assert sub.detector_for(key("new"))[1] == "fleet"
    assert sub.extra == {}
    s = pd.Series(x[1500:], index=pd.date_range(T0, periods=500, freq="10s"))
    a = score_series(key("b"), s, *bundle.detector_for(key("b")), s.index[8], spec)
    b = score_series(key("b"), s, *sub.detector_for(key("b")), s.index[8], spec)
    pd.testing.assert_frame_equal(a.frame, b.frame)


def test_the_task_runner_is_chosen_when_a_run_starts_not_at_import(monkeypatch):
    from cricket.flows.runtime import SettingsTaskRunner, task_runner
    from prefect.task_runners import ThreadPoolTaskRunner

    monkeypatch.delenv("CRICKET_DASK_ADDRESS", raising=False)
    runner = task_runner()
    assert isinstance(runner, SettingsTaskRunner)
    with runner.duplicate() as started:
        assert isinstance(started.inner, ThreadPoolTaskRunner)
    monkeypatch.setenv("CRICKET_DASK_ADDRESS", "tcp://127.0.0.1:1")
    from cricket.flows.runtime import resolve_task_runner
    from prefect_dask import DaskTaskRunner

    assert isinstance(resolve_task_runner(), DaskTaskRunner)
    assert resolve_task_runner().address == "tcp://127.0.0.1:1"


def test_a_compact_detector_scores_the_same_and_ships_small():
    import pickle

    from cricket.detector import WaveformDetector
    from cricket.model import compact
    from cricket.scoring import score_series

    spec = DetectorSpec(n_clusters=16)
    rng = np.random.default_rng(1)
    x = np.sin(np.arange(3000) / 4) + 0.05 * rng.standard_normal(3000)
    det = WaveformDetector(spec).fit(x[:2500], holdout=x[2500:])
    s = pd.Series(x[2500:], index=pd.date_range(T0, periods=500, freq="10s"))
    a = score_series(key("a"), s, det, "series", s.index[32], spec)  # builds caches on det
    small = compact(det)
    assert len(pickle.dumps(small)) <= len(pickle.dumps(det))
    b = score_series(key("a"), s, small, "series", s.index[32], spec)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.events, b.events)
