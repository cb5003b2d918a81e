"""`cricket feedback` finds the event a person means (real influxd, the real command).

A person copies an event from a report (SERIES@START to the second), or from a summary
that printed it to the minute (the demo's "found ... at 04:22"). The command labels the
stored event's whole stretch when the reference names one event, and otherwise lists the
series' events near then to copy, instead of a bare "no event". A stretch that starts
in the future is refused (planned maintenance is a silence).
"""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
from fixtures.influx import settings_for
from fixtures.pipeline import apply_env

from cricket.influx.answers import AnswerStore
from cricket.influx.influxql import InfluxQLClient, InfluxQLSink
from cricket.series import SeriesKey

KEY = SeriesKey.make("waveform", "value", {"host": "ref001"})
T = pd.Timestamp("2026-11-20T04:21:50Z")
EVENTS = pd.DataFrame({
    "start": [T, T + pd.Timedelta(hours=3), T + pd.Timedelta(hours=3, minutes=20)],
    "end": [T + pd.Timedelta(minutes=12), T + pd.Timedelta(hours=3, minutes=5),
            T + pd.Timedelta(hours=3, minutes=25)],
    "peak": [90.0, 70.0, 80.0], "mean": [50.0, 40.0, 45.0], "duration_s": [720.0, 300.0, 300.0],
})


@pytest.fixture
def settings(influx_server, tmp_path, monkeypatch):
    db = f"refs_{uuid.uuid4().hex[:10]}"
    s = settings_for(influx_server, db, tmp_path)
    with InfluxQLClient(s) as client:
        client.ensure_database(db)
    with InfluxQLSink(s) as sink:
        sink.write_events(KEY, EVENTS, model_version="1")
        sink.write_events(KEY, EVENTS.iloc[:1], model_version="2")  # a re-score: same event
    apply_env(monkeypatch, s)
    return s


def cli(*args: str):  # noqa: ANN201
    from typer.testing import CliRunner

    from cricket.cli import app

    res = CliRunner().invoke(app, list(args))
    return res.exit_code, " ".join(res.output.split())


def labels(settings) -> list:  # noqa: ANN001
    with AnswerStore(settings) as store:
        return store.labels()


def test_a_reference_to_the_minute_labels_the_event_it_names(settings) -> None:
    code, out = cli("feedback", "normal", f"{KEY}@2026-11-20T04:22", "--by", "alice")
    assert code == 0, out
    (lab,) = labels(settings)
    assert (lab.start, lab.end) == (EVENTS.start[0], EVENTS.end[0])
    assert lab.event == f"{KEY}@2026-11-20T04:21:50Z"
    # a time inside the event names it too
    code, out = cli("feedback", "anomaly", f"{KEY}@2026-11-20T07:23:00Z", "--by", "bob")
    assert code == 0, out
    assert {(x.start, x.end) for x in labels(settings)} >= {(EVENTS.start[1], EVENTS.end[1])}
    code, out = cli("feedback", "list")
    assert code == 0 and "by alice at" in out and "by bob at" in out
    assert not out.rstrip().endswith(":") and ": by" not in out  # no reason given: none shown


def test_a_reference_that_names_no_single_event_lists_the_events_to_copy(settings) -> None:
    code, out = cli("feedback", "normal", f"{KEY}@2026-11-20T07:10")
    assert code == 1 and "Traceback" not in out
    for t in ("2026-11-20T04:21:50Z", "2026-11-20T07:21:50Z", "2026-11-20T07:41:50Z"):
        assert f"{KEY}@{t}" in out, out
    code, out = cli("feedback", "normal", f"{KEY}@2026-10-01T00:00")
    assert code == 1 and "no event of" in out and "within a day" in out
    assert labels(settings) == []  # nothing stored for a refused answer


def test_a_stretch_in_the_future_is_refused(settings) -> None:
    start = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    end = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    code, out = cli("feedback", "normal", "--series", str(KEY), "--start", start, "--end", end)
    assert code == 1 and "future" in out and "cricket silence add" in out
    assert labels(settings) == []


def test_the_retrain_says_what_it_did_with_the_answers(capsys) -> None:  # noqa: ANN001
    from cricket.cli.pipeline import _print_answers

    _print_answers({"normal": 0, "anomaly": 0, "shapes_learned": 0, "check": None})
    assert capsys.readouterr().out == ""  # nobody answered: nothing to say
    _print_answers({"normal": 1, "anomaly": 1, "shapes_learned": 7,
                    "check": {"fires_on_normal": [], "misses_anomaly": [], "checked": 2}})
    out = " ".join(capsys.readouterr().out.split())
    assert "1 normal (7 shapes learnt" in out and "1 anomaly (kept out of training)" in out
    assert "gets all 2 checked right" in out
    _print_answers({"normal": 1, "anomaly": 1, "shapes_learned": 7,
                    "check": {"fires_on_normal": ["bc4e7cbbb0: w{host=a}"], "misses_anomaly": [],
                              "checked": 2}})
    out = " ".join(capsys.readouterr().out.split())
    assert "gets 1 of the 2 checked wrong" in out and "bc4e7cbbb0: w{host=a}" in out


def test_times_relative_to_now_are_read_and_a_wrong_one_says_how_to_write_it() -> None:
    from datetime import UTC, datetime, timedelta

    from cricket.cli.common import parse_time

    before = datetime.now(UTC)
    later, earlier, plus = parse_time("now+2h"), parse_time("now - 30m"), parse_time("+90s")
    after = datetime.now(UTC)
    assert before + timedelta(hours=2) <= later <= after + timedelta(hours=2)
    assert before - timedelta(minutes=30) <= earlier <= after - timedelta(minutes=30)
    assert before + timedelta(seconds=90) <= plus <= after + timedelta(seconds=90)
    assert parse_time("2026-11-24T10:00-05:00") == datetime(2026, 11, 24, 15, tzinfo=UTC)
    code, out = cli("silence", "add", "--start", "now", "--end", "now+soon", "--reason", "x")
    assert code == 1 and "now+soon" in out and "as a duration" in out
