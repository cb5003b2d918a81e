"""Bad data and hostile input against the real influxd (fixtures.influx), InfluxQL path.
(The Flux path's injection tests are in test_influx_flux.py.)"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from cricket.config import SeriesSelector
from cricket.influx.base import InfluxError, InfluxWriteError
from cricket.influx.influxql import InfluxQLSink, InfluxQLSource, SelectorError, quote_ident
from cricket.influx.server import find_free_port
from cricket.series import SeriesKey

T0 = pd.Timestamp("2024-01-01T00:00:00Z")
H1 = T0 + pd.Timedelta(hours=1)
SEL = SeriesSelector(measurement="waveform", field="value", group_by=["host"], every="10s")


def _key(host: str, m: str = "waveform", f: str = "value") -> SeriesKey:
    return SeriesKey.make(m, f, {"host": host})


def _s(values, start=T0, step="10s", index=None) -> pd.Series:
    idx = index if index is not None else pd.date_range(start, periods=len(values), freq=step)
    return pd.Series(np.asarray(values, dtype=float), index=idx)


def test_string_field_is_a_clear_error(influx_settings):
    with InfluxQLSink(influx_settings) as sink:
        sink.write_points(['waveform,host=a value="up" 1704067200000000000'])
    with InfluxQLSource(influx_settings) as src:
        with pytest.raises(InfluxError, match="non-numeric"):
            src.read(SEL, T0, H1)
        with pytest.raises(InfluxError, match="non-numeric"):
            src.read(SEL.model_copy(update={"aggregate": "first"}), T0, H1)


def test_nan_and_inf_are_skipped_on_write_and_missing_on_read(influx_settings):
    with InfluxQLSink(influx_settings) as sink:
        assert sink.write_series(_key("a"), _s([1, np.nan, 3, np.inf, -np.inf, 6])) == 3
    with InfluxQLSource(influx_settings) as src:
        got = src.read(SEL, T0, T0 + pd.Timedelta("60s"))[_key("a")]
    np.testing.assert_array_equal(got.to_numpy(), [1, np.nan, 3, np.nan, np.nan, 6])


def test_duplicate_and_unordered_timestamps(influx_settings):
    idx = pd.DatetimeIndex([T0 + pd.Timedelta(seconds=s) for s in (20, 0, 10, 10, 30)])
    with InfluxQLSink(influx_settings) as sink:
        sink.write_series(_key("a"), _s([3, 1, 2, 99, 4], index=idx))
    with InfluxQLSource(influx_settings) as src:
        got = src.read(SEL, T0, T0 + pd.Timedelta("40s"))[_key("a")]
    assert got.index.is_monotonic_increasing and got.index.is_unique
    np.testing.assert_array_equal(got.to_numpy(), [1, 99, 3, 4])  # last write wins


def test_short_and_long_gaps_are_nan_on_a_full_grid(influx_settings):
    s = _s(np.arange(2000.0))
    s = s.drop(s.index[100:102]).drop(s.index[500:1500])
    with InfluxQLSink(influx_settings) as sink:
        sink.write_series(_key("a"), s)
    with InfluxQLSource(influx_settings) as src:
        got = src.read(SEL, T0, T0 + pd.Timedelta(seconds=20_000))[_key("a")]
    assert len(got) == 2000
    assert got.isna().sum() == 1002
    assert np.isnan(got.iloc[100]) and np.isnan(got.iloc[1499]) and got.iloc[1500] == 1500


def test_empty_result_short_series_and_unknown_measurement(influx_settings):
    with InfluxQLSink(influx_settings) as sink:
        sink.write_series(_key("a"), _s([1.0, 2.0, 3.0]))
    with InfluxQLSource(influx_settings) as src:
        assert src.read(SEL, T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(days=2)) == {}
        short = src.read(SEL, T0, T0 + pd.Timedelta("30s"))
        assert short[_key("a")].tolist() == [1.0, 2.0, 3.0]
        other = SeriesSelector(measurement="no_such_thing", group_by=["host"])
        assert src.read(other, T0, H1) == {}
        # discovery refuses a measurement that does not exist, listing those that do
        with pytest.raises(SelectorError, match="'no_such_thing' does not exist.*waveform"):
            src.discover(other)


def test_unknown_database_names_it_and_the_fix(influx_settings):
    bad = influx_settings.model_copy(update={"influx_database": "no_such_db"})
    with InfluxQLSource(bad) as src, pytest.raises(InfluxError, match="'no_such_db' does not exist.*CREATE DATABASE"):
        src.read(SEL, T0, H1)
    with InfluxQLSink(bad) as sink, pytest.raises(InfluxWriteError, match="no_such_db"):
        sink.write_series(_key("a"), _s([1.0]))


def test_server_down_names_the_url_after_retries(influx_settings):
    port = find_free_port()
    down = influx_settings.model_copy(
        update={"influx_url": f"http://127.0.0.1:{port}", "influx_retries": 2, "influx_timeout_s": 2}
    )
    with InfluxQLSource(down) as src, pytest.raises(InfluxError, match=f"127.0.0.1:{port}.*3 attempts"):
        src.read(SEL, T0, H1)
    with InfluxQLSink(down) as sink, pytest.raises(InfluxWriteError) as info:
        sink.write_series(_key("a"), _s([1.0, 2.0]))
    assert info.value.written == 0 and info.value.first_unwritten == T0
    assert f"127.0.0.1:{port}" in str(info.value)


HOSTILE = ["x' OR 1=1", '") |> drop(columns: ["_value"])', 'q"uote', "back\\slash",
           "semi;colon; DROP DATABASE x", "sp ace,comma=eq", "${x}", "ünï"]


def test_hostile_tag_values_match_literally(influx_settings):
    keys = [_key(v) for v in HOSTILE] + [_key("x"), _key("plain")]
    with InfluxQLSink(influx_settings) as sink:
        for i, k in enumerate(keys):
            sink.write_series(k, _s([float(i)] * 3))
    with InfluxQLSource(influx_settings) as src:
        assert src.discover(SEL) == sorted(keys)
        for i, v in enumerate(HOSTILE):
            sel = SEL.model_copy(update={"tags": {"host": v}})
            got = src.read(sel, T0, H1)
            assert list(got) == [_key(v)], v
            assert got[_key(v)].dropna().tolist() == [float(i)] * 3
        assert src.client.query("SHOW DATABASES", database=influx_settings.influx_database)


@pytest.mark.parametrize("name", ['q"uote', "back\\slash", "semi;colon", "sp ace,comma", "x' OR 1=1"])
def test_hostile_measurement_field_and_tag_key_names(influx_settings, name):
    key = SeriesKey.make(f"m{name}", f"f{name}", {f"k{name}": "v"})
    with InfluxQLSink(influx_settings) as sink:
        sink.write_series(key, _s([1.0, 2.0]))
        sink.write_series(SeriesKey.make("m", "f", {"k": "v"}), _s([5.0, 6.0]))
    sel = SeriesSelector(measurement=f"m{name}", field=f"f{name}", group_by=[f"k{name}"],
                         tags={f"k{name}": "v"})
    with InfluxQLSource(influx_settings) as src:
        got = src.read(sel, T0, H1)
        assert src.discover(sel) == [key]
    assert list(got) == [key] and got[key].dropna().tolist() == [1.0, 2.0]


@pytest.mark.parametrize("value", ["trail\\", "a\\,b", "a\\ b", "a\\\\b"])
def test_ambiguous_backslashes_are_refused(influx_settings, value):
    with InfluxQLSink(influx_settings) as sink, pytest.raises(InfluxError, match="backslash"):
        sink.write_series(_key(value), _s([1.0]))


def test_newlines_are_refused_everywhere(influx_settings):
    with pytest.raises(ValueError, match="control character"):
        SeriesSelector(tags={"host": "a\nb"})
    with pytest.raises(InfluxError, match="control character"):
        quote_ident("a\nDROP DATABASE x")
    with InfluxQLSink(influx_settings) as sink, pytest.raises(InfluxError, match="newline"):
        sink.write_series(_key("a\nwaveform,host=b value=666"), _s([1.0]))


def _stand_in(seen: list[bytes], answers: list[int]) -> ThreadingHTTPServer:
    """A local stand-in for InfluxDB's /write, started: it keeps each request's body in
    ``seen`` and answers the next status in ``answers`` (500 once they run out)."""

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(answers.pop(0) if answers else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", find_free_port()), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return srv


def test_write_retries_5xx_and_reports_the_unwritten_range(influx_settings):
    """A local stand-in answers 503 once, then 204, then 500 forever."""
    seen: list[bytes] = []
    answers = [503, 204]

    srv = _stand_in(seen, answers)
    try:
        st = influx_settings.model_copy(update={"influx_url": f"http://127.0.0.1:{srv.server_port}",
                                                "influx_write_batch": 4, "influx_retries": 1})
        with InfluxQLSink(st) as sink, pytest.raises(InfluxWriteError) as info:
            sink.write_series(_key("a"), _s(np.arange(10.0)))
    finally:
        srv.shutdown()
        srv.server_close()
    assert len(seen) == 4 and seen[0] == seen[1]  # retried the same batch
    assert info.value.written == 4
    assert info.value.first_unwritten == T0 + pd.Timedelta("40s")
    assert info.value.last_unwritten == T0 + pd.Timedelta("90s")
    assert "wrote 4 of 10" in str(info.value) and "HTTP 500" in str(info.value)


def test_results_formatted_ahead_post_the_same_requests_and_report_the_same_failure(
        influx_settings):
    """Results formatted where they were scored (``lineprotocol.formatted``, in a scoring
    process) and posted by ``write_formatted`` send byte for byte the requests the sink
    formats itself; a request refused partway reports the same points written and the
    same unwritten range."""
    from cricket.influx import lineprotocol as lp

    seen: list[bytes] = []
    answers: list[int] = []

    idx = pd.date_range(T0, periods=7, freq="10s")
    frame = pd.DataFrame({"value": np.arange(7.0), "reconstruction": np.arange(7.0) / 3,
                          "error": np.r_[np.nan, np.ones(6)], "score": np.linspace(0, 99, 7),
                          "anomalous": [False] * 5 + [True] * 2}, index=idx)
    events = pd.DataFrame({"start": [idx[5]], "end": [idx[6]], "peak": [99.0],
                           "mean": [90.5], "duration_s": [20.0], "severity": [3.25]})
    items = [(_key("a"), frame, events), (_key("b"), frame.iloc[:4], None)]
    srv = _stand_in(seen, answers)
    failures = []
    try:
        st = influx_settings.model_copy(update={"influx_url": f"http://127.0.0.1:{srv.server_port}",
                                                "influx_write_batch": 4, "influx_retries": 0})
        ready = lp.formatted(items, "7", st.model_name, st.influx_write_batch)
        with InfluxQLSink(st) as sink:
            answers[:] = [204] * 10
            plain = sink.write_results(items, "7")
            sent_plain, seen[:] = list(seen), []
            answers[:] = [204] * 10
            ahead = sink.write_formatted(ready)
            sent_ahead, seen[:] = list(seen), []
            for write in (lambda: sink.write_results(items, "7"),
                          lambda: sink.write_formatted(ready)):
                answers[:] = [204]
                with pytest.raises(InfluxWriteError) as info:
                    write()
                failures.append((info.value.written, info.value.first_unwritten,
                                 info.value.last_unwritten, str(info.value)))
    finally:
        srv.shutdown()
        srv.server_close()
    assert plain == ahead == {"scores": 11, "events": 1}
    assert len(sent_plain) == 3 and sent_ahead == sent_plain
    assert b"severity=3.25" in sent_plain[1]
    assert failures[0] == failures[1] and failures[0][0] == 4
    assert "wrote 4 of 12" in failures[0][3]
