"""Round trips through a real influxd started by the project's launcher (fixtures.influx)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cricket.config import SeriesSelector
from cricket.influx import make_sink, make_source
from cricket.influx.influxql import InfluxQLSink, InfluxQLSource
from cricket.series import SeriesKey

T0 = pd.Timestamp("2024-01-01T00:00:00Z")


def _series(n: int, step: str = "10s", start: pd.Timestamp = T0, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=n, freq=step)
    return pd.Series(np.sin(np.arange(n) / 5.0) + rng.normal(0, 0.01, n), index=idx)


def test_write_series_and_read_back_exactly(influx_settings):
    keys = [SeriesKey.make("waveform", "value", {"host": f"cricket00{i}"}) for i in range(3)]
    data = {k: _series(500, seed=i) for i, k in enumerate(keys)}
    with InfluxQLSink(influx_settings) as sink:
        for k, s in data.items():
            assert sink.write_series(k, s) == 500
    sel = SeriesSelector(measurement="waveform", field="value", group_by=["host"], every="10s")
    with make_source(influx_settings) as src:
        assert src.discover(sel) == sorted(keys)
        got = src.read(sel, T0, T0 + pd.Timedelta(seconds=5000))
    assert sorted(got) == sorted(keys)
    for k, s in data.items():
        g = got[k]
        assert g.index.freq == pd.Timedelta("10s")
        assert str(g.index.tz) == "UTC"
        assert g.dtype == np.float64
        np.testing.assert_allclose(g.to_numpy(), s.to_numpy(), rtol=0, atol=1e-12)


def test_tag_filter_and_chunked_read_match_single_read(influx_settings):
    a = SeriesKey.make("waveform", "value", {"host": "a", "dc": "x"})
    b = SeriesKey.make("waveform", "value", {"host": "b", "dc": "y"})
    with InfluxQLSink(influx_settings) as sink:
        sink.write_series(a, _series(1000, seed=1))
        sink.write_series(b, _series(1000, seed=2))
    sel = SeriesSelector(tags={"dc": "x"}, group_by=["host"], every="30s", aggregate="max")
    stop = T0 + pd.Timedelta(seconds=10_000)
    with InfluxQLSource(influx_settings) as src:
        whole = src.read(sel, T0, stop)
    small = influx_settings.model_copy(update={"influx_read_chunk": pd.Timedelta("17min")})
    with InfluxQLSource(small) as src:
        chunked = src.read(sel, T0, stop)
    assert list(whole) == [SeriesKey.make("waveform", "value", {"host": "a"})]
    pd.testing.assert_series_equal(whole[list(whole)[0]], chunked[list(chunked)[0]])
    expected = _series(1000, seed=1).resample("30s").max()
    np.testing.assert_allclose(whole[list(whole)[0]].to_numpy()[: len(expected)], expected.to_numpy())


def _scores(n: int, start: pd.Timestamp = T0) -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq="10s")
    rng = np.random.default_rng(3)
    v = rng.normal(size=n)
    return pd.DataFrame(
        {
            "value": v,
            "reconstruction": v * 0.9,
            "error": np.abs(v * 0.1),
            "score": np.linspace(0, 100, n),
            "anomalous": np.arange(n) % 7 == 0,
        },
        index=idx,
    )


def test_scores_and_events_round_trip_and_overwrite(influx_settings):
    key = SeriesKey.make("waveform", "value", {"host": "cricket001"})
    frame = _scores(300)
    frame.iloc[5, frame.columns.get_loc("reconstruction")] = np.nan  # a field left out
    events = pd.DataFrame(
        {
            "start": [T0 + pd.Timedelta("100s"), T0 + pd.Timedelta("900s")],
            "end": [T0 + pd.Timedelta("200s"), T0 + pd.Timedelta("1000s")],
            "peak": [99.0, 80.5],
            "mean": [70.0, 60.0],
            "duration_s": [100.0, 100.0],
        }
    )
    with make_sink(influx_settings) as sink:
        for _ in range(2):  # the same window twice leaves one copy
            assert sink.write_scores(key, frame, model_version="3") == 300
            assert sink.write_events(key, events, model_version="3") == 2
    stop = T0 + pd.Timedelta(hours=1)
    with InfluxQLSource(influx_settings) as src:
        back = src.read_scores(key, T0, stop)
        ev = src.read_events(key, T0, stop)
    assert len(back) == 300
    assert set(back["model_version"]) == {"3"} and set(back["series"]) == {str(key)}
    assert (back["host"] == "cricket001").all()
    np.testing.assert_allclose(back["score"].to_numpy(), frame["score"].to_numpy())
    assert back["anomalous"].tolist() == frame["anomalous"].astype(int).tolist()
    assert np.isnan(back["reconstruction"].iloc[5])
    assert len(ev) == 2
    assert ev["start"].tolist() == events["start"].tolist()
    assert ev["end"].tolist() == events["end"].tolist()
    assert ev["peak"].tolist() == [99.0, 80.5]


def test_results_of_many_series_in_shared_requests_store_what_per_series_writes_store(
    influx_settings,
):
    """``write_results`` packs scores and events of many series into full-size requests
    that span series (an hour of a fleet is a few hundred points per series): what is
    stored is exactly what writing each series on its own stores."""
    rng = np.random.default_rng(3)
    idx = pd.date_range(T0, periods=130, freq="10s")
    items = []
    for i in range(5):
        key = SeriesKey.make("waveform", "value", {"host": f"cricket00{i}"})
        frame = pd.DataFrame({c: rng.normal(size=130) for c in
                              ("value", "reconstruction", "error", "score")}, index=idx)
        frame["anomalous"] = rng.random(130) > 0.8
        frame.iloc[7, 1] = np.nan
        frame.iloc[9, 2] *= 1e-7  # repr's exponent form
        events = pd.DataFrame({"start": [idx[10 + i]], "end": [idx[20 + i]], "peak": [90.0 + i],
                               "mean": [70.0], "duration_s": [100.0]}) if i % 2 else None
        items.append((key, frame, events))
    settings = influx_settings.model_copy(update={"influx_write_batch": 100})  # 7 requests
    with InfluxQLSink(settings) as sink:
        counts = sink.write_results(items, "batched")
        for key, frame, events in items:
            sink.write_scores(key, frame, "alone")
            if events is not None:
                sink.write_events(key, events, "alone")
    assert counts == {"scores": 5 * 130, "events": 2}
    def stored(src, read, key, version):  # noqa: ANN001, ANN202
        got = read(key, T0, T0 + pd.Timedelta(hours=1), version)
        return got.drop(columns="model_version", errors="ignore").sort_index(axis=1)

    with InfluxQLSource(influx_settings) as src:
        for key, _frame, events in items:
            got = stored(src, src.read_scores, key, "batched")
            assert len(got) == 130
            pd.testing.assert_frame_equal(got, stored(src, src.read_scores, key, "alone"))
            ev_got = stored(src, src.read_events, key, "batched")
            assert len(ev_got) == (0 if events is None else 1)
            pd.testing.assert_frame_equal(ev_got, stored(src, src.read_events, key, "alone"))


def test_the_pipelines_writer_stores_revised_event_records_too(influx_settings):
    """``write_with_sink`` (what write-results calls) sends every result's scores and
    events and the earlier event records a result revises, in shared requests."""
    from types import SimpleNamespace

    from cricket.tasks.publish import write_with_sink

    idx = pd.date_range(T0, periods=20, freq="10s")
    frame = pd.DataFrame({"value": 1.0, "reconstruction": 1.0, "error": 0.0, "score": 5.0,
                          "anomalous": False}, index=idx)

    def ev(start, end):  # noqa: ANN001, ANN202
        return pd.DataFrame({"start": [start], "end": [end], "peak": [90.0], "mean": [80.0],
                             "duration_s": [(end - start).total_seconds()]})

    key = SeriesKey.make("waveform", "value", {"host": "a"})
    earlier = T0 - pd.Timedelta("1h")
    result = SimpleNamespace(key=str(key), series_key=key, frame=frame,
                             events=ev(idx[2], idx[5]), revised=ev(earlier, idx[0]))
    with InfluxQLSink(influx_settings) as sink:
        assert write_with_sink(sink, [result], "4") == {"scores": 20, "events": 2}
    with InfluxQLSource(influx_settings) as src:
        events = src.read_events(key, earlier, T0 + pd.Timedelta("1h"), "4")
    assert events["start"].tolist() == [earlier, idx[2]]
    assert events["end"].tolist() == [idx[0], idx[5]]


def test_read_needs_a_range(influx_settings):
    with InfluxQLSource(influx_settings) as src, pytest.raises(Exception, match="time range"):
        src.read(SeriesSelector())


def test_events_of_many_series_in_one_query_equal_each_series_read_alone(influx_settings):
    """``read_events_of`` (one query per batch of series) gives each series exactly what
    ``read_events`` of that series alone gives: records with and without the optional
    fields (severity, a continued record's prior_* and its times), a data_missing
    record (another tag), another model version left out, a series without records."""
    from cricket.influx import lineprotocol as lp
    from cricket.missing import MissingData, missing_events

    keys = [SeriesKey.make("waveform", "value", {"host": h}) for h in ("a", "b", "c", "d")]

    def ev(start_s, end_s, **extra):  # noqa: ANN001, ANN003, ANN202
        start, end = T0 + pd.Timedelta(seconds=start_s), T0 + pd.Timedelta(seconds=end_s)
        return pd.DataFrame({"start": [start], "end": [end], "peak": [91.0], "mean": [80.5],
                             "duration_s": [float(end_s - start_s + 10)], **extra})

    with InfluxQLSink(influx_settings) as sink:
        sink.write_events(keys[0], ev(100, 300, severity=[7.25]), "5")
        sink.write_events(keys[0], ev(900, 950), "5")
        sink.write_events(keys[0], ev(100, 200), "6")  # another version: not read
        sink.write_events(keys[1], ev(400, 800, severity=[6.5], prior_end=[T0 + pd.Timedelta("600s")],
                                      prior_peak=[88.0], prior_mean=[70.0],
                                      prior_duration_s=[210.0], prior_severity=[5.0],
                                      extended_at=[T0 + pd.Timedelta("700s")]), "5")
        gone = MissingData(str(keys[2]), 0, 360)
        sink.write_lines(lp.missing_lines(keys[2], missing_events(gone, T0, T0 + pd.Timedelta("1h")),
                                          "5", influx_settings.model_name))
    stop = T0 + pd.Timedelta(hours=1)
    with InfluxQLSource(influx_settings) as src:
        many = src.read_events_of(keys, T0 - pd.Timedelta("1h"), stop, "5", influx_settings.model_name)
        alone = {str(k): src.read_events(k, T0 - pd.Timedelta("1h"), stop, "5",
                                          influx_settings.model_name) for k in keys}
    assert list(many) == [str(k) for k in keys]
    for name, want in alone.items():  # (the server sends a series' tags in any order)
        pd.testing.assert_frame_equal(many[name], want, check_exact=True, check_like=True)
    assert len(many[str(keys[0])]) == 2 and "prior_end" in many[str(keys[1])].columns
    assert many[str(keys[2])]["event_kind"].tolist() == ["data_missing"]
    assert many[str(keys[3])].empty
