"""The Flux source and sink (influxdb-client, InfluxDB 2.x native API).

No InfluxDB 2.x server can be installed in this environment, so these tests run the real
influxdb-client against a local ``http.server`` that answers with Flux annotated-CSV
responses recorded in the 2.x format (tests/data/flux/) and records what the client sent.
They check what we send (the Flux text never contains user values; those travel as
``extern`` params) and how we turn responses into regular series.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cricket.config import SeriesSelector
from cricket.influx import lineprotocol as lp
from cricket.influx import make_sink, make_source
from cricket.influx.base import InfluxError, InfluxWriteError
from cricket.influx.flux import FluxSink, FluxSource
from cricket.influx.server import find_free_port
from cricket.series import SeriesKey

DATA = Path(__file__).parent / "data" / "flux"
T0 = pd.Timestamp("2024-01-01T00:00:00Z")
PAYLOADS = ['") |> drop(columns: ["_value"]) //', "x' OR 1=1", 'a"b\\c', "semi;colon", "${x}"]


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.replies: list[tuple[int, str, bytes]] = []

    def reply(self, status: int, file: str | None = None, body: bytes = b"") -> None:
        if file:
            body = (DATA / file).read_bytes()
        ctype = "application/json" if file and file.endswith(".json") else "text/csv; charset=utf-8"
        self.replies.append((status, ctype, body))


@pytest.fixture
def fake_influx2(tmp_path) -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            rec.requests.append((self.command, self.path, body))
            status, ctype, out = rec.replies.pop(0) if rec.replies else (204, "text/plain", b"")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", find_free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", rec
    server.shutdown()
    server.server_close()


@pytest.fixture
def flux_settings(fake_influx2, tmp_path):
    from fixtures.influx import settings_for

    url, _ = fake_influx2

    class _S:  # settings_for wants something with .url
        pass

    s = _S()
    s.url = url  # type: ignore[attr-defined]
    return settings_for(s, "cricket", tmp_path, influx_source="flux", influx_bucket="metrics",
                        influx_org="acme", influx_token="t0ken-secret", influx_retries=1)


def _query_body(rec: Recorder, i: int = 0) -> dict:
    method, path, body = rec.requests[i]
    assert method == "POST" and path.startswith("/api/v2/query")
    return json.loads(body)


def _extern(body: dict) -> dict[str, object]:
    """Flatten the client's extern AST (``option p_x = literal`` statements) into {x: value}."""
    out: dict[str, object] = {}
    for st in body["extern"]["body"]:
        v = st["assignment"]["init"]
        out[st["assignment"]["id"]["name"].removeprefix("p_")] = (
            [e.get("value") for e in v["elements"]] if v["type"] == "ArrayExpression" else v.get("value")
        )
    return out


def test_read_regular_series_from_annotated_csv(fake_influx2, flux_settings):
    url, rec = fake_influx2
    rec.reply(200, "read_two_hosts.csv")
    sel = SeriesSelector(group_by=["host"], every="10s")
    src = make_source(flux_settings)
    assert isinstance(src, FluxSource)
    with src:
        got = src.read(sel, T0, T0 + pd.Timedelta(seconds=50))
    a = SeriesKey.make("waveform", "value", {"host": "cricket001"})
    b = SeriesKey.make("waveform", "value", {"host": "cricket002"})
    assert sorted(got) == [a, b]
    np.testing.assert_array_equal(got[a].to_numpy(), [1.5, 2.5, np.nan, 4.5, np.nan])
    np.testing.assert_array_equal(got[b].to_numpy(), [-1, -2, np.nan, np.nan, np.nan])
    assert got[a].index[0] == T0 and got[a].index.freq == pd.Timedelta("10s")
    body = _query_body(rec)
    ext = _extern(body)
    assert ext["bucket"] == "metrics" and ext["measurement"] == "waveform" and ext["field"] == "value"
    assert "metrics" not in body["query"] and "waveform" not in body["query"]
    assert "org=acme" in rec.requests[0][1]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_values_travel_as_params_never_as_flux_text(fake_influx2, flux_settings, payload):
    url, rec = fake_influx2
    rec.reply(200, "empty.csv")
    sel = SeriesSelector(measurement=f"m{payload}", field=f"f{payload}", tags={"host": payload},
                         group_by=["host"])
    with FluxSource(flux_settings) as src:
        assert src.read(sel, T0, T0 + pd.Timedelta(minutes=1)) == {}
    body = _query_body(rec)
    assert payload not in body["query"]
    ext = _extern(body)
    assert ext["tag0"] == payload and ext["measurement"] == f"m{payload}" and ext["field"] == f"f{payload}"


@pytest.mark.parametrize("key", ['host"]) |> drop(', "a b", "_measurement", "x'y"])
def test_hostile_tag_keys_are_refused(flux_settings, key):
    with FluxSource(flux_settings) as src, pytest.raises(InfluxError, match="plain"):
        src.read(SeriesSelector(tags={key: "v"}), T0, T0 + pd.Timedelta(minutes=1))


def test_discover(fake_influx2, flux_settings):
    url, rec = fake_influx2
    rec.reply(200, "discover.csv")
    with FluxSource(flux_settings) as src:
        keys = src.discover(SeriesSelector(group_by=["host"]))
    assert [k.tag_dict["host"] for k in keys] == ["cricket001", "cricket002"]


def test_string_field_and_missing_bucket_are_clear_errors(fake_influx2, flux_settings):
    url, rec = fake_influx2
    rec.reply(200, "string_field.csv")
    rec.reply(404, "bucket_not_found.json")
    with FluxSource(flux_settings) as src:
        with pytest.raises(InfluxError, match="non-numeric"):
            src.read(SeriesSelector(), T0, T0 + pd.Timedelta(minutes=1))
        with pytest.raises(InfluxError, match="bucket 'metrics'") as info:
            src.read(SeriesSelector(), T0, T0 + pd.Timedelta(minutes=1))
    assert "t0ken-secret" not in str(info.value)


def test_sink_writes_line_protocol_batches_with_retry(fake_influx2, flux_settings):
    url, rec = fake_influx2
    key = SeriesKey.make("waveform", "value", {"host": "h,1 x"})
    idx = pd.date_range(T0, periods=5, freq="10s")
    frame = pd.DataFrame({"value": [1.0, 2, 3, 4, 5], "reconstruction": [1.0, 2, np.nan, 4, 5],
                          "error": 0.0, "score": 10.0, "anomalous": [False, True, False, False, False]},
                         index=idx)
    settings = flux_settings.model_copy(update={"influx_write_batch": 2})
    rec.reply(503, body=b'{"code":"unavailable","message":"busy"}')  # first try of batch 1
    sink = make_sink(settings)
    assert isinstance(sink, FluxSink)
    with sink:
        assert sink.write_scores(key, frame, "7") == 5
    writes = [r for r in rec.requests if r[1].startswith("/api/v2/write")]
    assert len(writes) == 4  # 3 batches + 1 retry
    assert "bucket=metrics" in writes[0][1] and "precision=ns" in writes[0][1]
    lines = b"\n".join(w[2] for w in writes[1:]).decode().splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("cricket_score,host=h\\,1\\ x,model_name=cricket-waveform,model_version=7,series=")
    assert "anomalous=1i" in lines[1] and "reconstruction" not in lines[2]


def test_sink_writes_many_series_in_requests_that_span_them(fake_influx2, flux_settings):
    url, rec = fake_influx2
    idx = pd.date_range(T0, periods=5, freq="10s")
    frame = pd.DataFrame({"value": [1.0, 2, 3, 4, 5], "reconstruction": 1.0, "error": 0.0,
                          "score": 10.0, "anomalous": False}, index=idx)
    events = pd.DataFrame({"start": [idx[1]], "end": [idx[3]], "peak": [90.0], "mean": [80.0],
                           "duration_s": [20.0]})
    keys = [SeriesKey.make("waveform", "value", {"host": h}) for h in ("a", "b")]
    items = [(keys[0], frame, events), (keys[1], frame, None)]
    settings = flux_settings.model_copy(update={"influx_write_batch": 4})
    with FluxSink(settings) as sink:
        assert sink.write_results(items, "7") == {"scores": 10, "events": 1}
    writes = [r for r in rec.requests if r[1].startswith("/api/v2/write")]
    bodies = [w[2].decode().splitlines() for w in writes]
    assert [len(b) for b in bodies] == [4, 4, 3]  # 11 lines, batches cross the series
    want = (lp.score_lines(keys[0], frame, "7", settings.model_name)
            + lp.event_lines(keys[0], events, "7", settings.model_name)
            + lp.score_lines(keys[1], frame, "7", settings.model_name))
    assert [x for b in bodies for x in b] == want


def test_sink_failure_says_what_was_written(fake_influx2, flux_settings):
    url, rec = fake_influx2
    key = SeriesKey.make("waveform", "value", {"host": "a"})
    s = pd.Series(np.arange(6.0), index=pd.date_range(T0, periods=6, freq="10s"))
    settings = flux_settings.model_copy(update={"influx_write_batch": 3, "influx_retries": 1})
    rec.reply(204)
    rec.reply(500, body=b"{}")
    rec.reply(500, body=b"{}")
    with FluxSink(settings) as sink, pytest.raises(InfluxWriteError) as info:
        sink.write_series(key, s)
    assert info.value.written == 3
    assert info.value.first_unwritten == T0 + pd.Timedelta("30s")
    assert info.value.last_unwritten == T0 + pd.Timedelta("50s")
    assert "wrote 3 of 6" in str(info.value)


def test_point_events_carry_the_field_that_broke_the_correlation(fake_influx2, flux_settings):
    """A point event written through the Flux sink names its field (``contributor``), as
    through the InfluxQL sink: the alert and the report read it back from there."""
    from cricket.influx.points import point_event_lines, write_point_results

    url, rec = fake_influx2
    key = SeriesKey.make("psu", "load+power+temp", {"host": "psu-1"})
    idx = pd.date_range(T0, periods=3, freq="5min")
    scored = pd.DataFrame({"value": [1.0, 2.0, 3.0], "reconstruction": 1.0, "error": 0.0,
                           "score": [10.0, 80.0, 10.0], "anomalous": [False, True, False],
                           "distance": [0.1, 3.0, 0.1]}, index=idx)
    events = pd.DataFrame({"start": [idx[1]], "end": [idx[1]], "peak": [80.0], "mean": [80.0],
                           "duration_s": [300.0], "contributor": ["power"]})
    with FluxSink(flux_settings) as sink:
        assert write_point_results(sink, key, scored, events, "3", "cricket-waveform") == (3, 1)
    sent = [line for r in rec.requests if r[1].startswith("/api/v2/write")
            for line in r[2].decode().splitlines()]
    event_lines = [line for line in sent if line.startswith("cricket_event")]
    assert event_lines == point_event_lines(key, events, "3", "cricket-waveform")
    assert 'contributor="power"' in event_lines[0]
