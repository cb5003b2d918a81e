"""Feedback changes the model: real influxd, Prefect's test harness, MLflow SQLite, the
`cricket feedback` command.

One series, a periodic waveform (period 60 steps = 10 minutes at 10 s), with:

* P, a harmless "backup job" bump, first at 14:10 (fresh data for model 1: it fires),
  labelled normal, and again at 25:10 (same phase: the same pattern on fresh data);
* Q, a real problem (the wave runs 2.5 times faster) from 18:10 to 19:30, labelled
  anomaly, and again (its first 40 minutes) at 27:10;
* R, a different problem (the metric reads 0 for 5 minutes) at 26:10, never labelled.

Model 1 trains on 0:00-14:00. Model 2 trains on 0:00-24:00 after the answers: P lies in
its training data, Q in the held-out hours it calibrates on. With model 2, P at 25:10
raises nothing, R and Q still fire. The control: model 2 trained without the answers
still fires on P, and has taken Q as normal (calibrated on it), so each answer is what
changes the outcome.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from fixtures.influx import settings_for
from fixtures.pipeline import apply_env

from cricket.config import DetectorSpec, SeriesSelector
from cricket.influx.influxql import InfluxQLClient, InfluxQLSink, InfluxQLSource
from cricket.series import SeriesKey

pytestmark = pytest.mark.slow

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
SPEC = DetectorSpec(n_clusters=32)
D0 = pd.Timestamp("2026-11-10T00:00:00Z")
KEY = SeriesKey.make("waveform", "value", {"host": "fb001"})
STEP = pd.Timedelta("10s")
PERIOD = 60


def at(text: str) -> pd.Timestamp:
    h, m = text.split(":")
    return D0 + pd.Timedelta(hours=int(h), minutes=int(m))


def series() -> pd.Series:
    n = int(pd.Timedelta(hours=29) / STEP)
    idx = pd.date_range(D0, periods=n, freq=STEP)
    rng = np.random.default_rng(11)
    phase = np.arange(n, dtype=float)

    def i(t: str) -> int:
        return int((at(t) - D0) / STEP)

    q0, q1 = i("18:10"), i("19:30")
    phase[q0:q1] = phase[q0] + 2.5 * np.arange(q1 - q0)  # runs faster...
    phase[q1:] += 1.5 * (q1 - q0)  # ...and carries on from there (6 whole periods ahead)
    v = 50 + 10 * np.sin(2 * np.pi * phase / PERIOD) + 3 * np.sin(2 * np.pi * phase / 20 + 1)
    v += rng.normal(0, 0.3, n)
    p0 = i("14:10")
    bump = 25 * np.interp(np.arange(30), [0, 8, 22, 29], [0, 1, 1, 0])  # the backup job
    v[p0 : p0 + 30] += bump
    # the same pattern again on fresh data, at the same phase of the wave
    p1, qa = i("25:10"), i("27:10")
    v[p1 : p1 + 30] = v[p0 : p0 + 30]
    v[qa : qa + 240] = v[q0 : q0 + 240]
    r0 = i("26:10")
    v[r0 : r0 + 30] = 0.0
    return pd.Series(v, index=idx)


@pytest.fixture
def env(influx_server, tmp_path, monkeypatch, prefect_api):
    db = f"fb_{uuid.uuid4().hex[:10]}"
    settings = settings_for(
        influx_server, db, tmp_path,
        mlflow_tracking_uri=f"sqlite:///{(tmp_path / 'mlflow.db').absolute()}",
        model_name="cricket-feedback-test", report_dir=tmp_path / "reports", batch_size=4,
    )
    with InfluxQLClient(settings) as client:
        client.ensure_database(db)
    with InfluxQLSink(settings) as sink:
        sink.write_series(KEY, series())
    apply_env(monkeypatch, settings)
    return settings


def retrain(end: str, hours: int, holdout: int = 3) -> dict:
    from cricket.flows.retrain import nightly_retrain

    return nightly_retrain(
        selector=SELECTOR, spec=SPEC, train_window=timedelta(hours=hours),
        holdout=timedelta(hours=holdout), end=at(end).to_pydatetime(), min_history_points=500,
    )


def events_in(settings, hour_end: str) -> pd.DataFrame:
    """Score the hour before ``hour_end`` with the champion; its events."""
    from cricket.flows.score import hourly_score

    out = hourly_score(selector=SELECTOR, at=at(hour_end).to_pydatetime())
    with InfluxQLSource(settings) as src:
        ev = src.read_events(SELECTOR, out["window_start"], out["window_end"],
                             model_version=out["model_version"])
    return ev


def cli(*args: str) -> str:
    from typer.testing import CliRunner

    from cricket.cli import app

    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def test_answers_change_the_next_model(env):
    from cricket.feedback import event_ref

    first = retrain("14:00", 14)
    assert first["promoted"]
    # model 1 fires on the backup job and on the real problem
    p_events = events_in(env, "15:00")
    assert len(p_events) >= 1, "model 1 should flag the unseen backup-job pattern"
    q_events = events_in(env, "19:00")
    assert len(q_events) >= 1, "model 1 should flag the faster wave"
    p = p_events.sort_values("peak").iloc[-1]
    out = cli("feedback", "normal", event_ref(str(KEY), p["start"]), "--reason", "nightly backup",
              "--by", "alice")
    assert "as normal" in out
    # the on-call engineer knows how long the problem lasted
    cli("feedback", "anomaly", "--series", str(KEY), "--start", at("18:10").isoformat(),
        "--end", at("19:30").isoformat(), "--reason", "fan failure", "--by", "bob")
    listed = cli("feedback", "list")
    assert "alice" in listed and "nightly backup" in listed and "fan failure" in listed

    second = retrain("24:00", 24, holdout=6)
    assert second["labels"]["normal"] == 1 and second["labels"]["anomaly"] == 1
    assert second["labels"]["shapes_learned"] > 0
    assert second["labels"]["check"] == {"fires_on_normal": [], "misses_anomaly": [], "checked": 2}
    assert second["promoted"], second["decision"]

    # the same backup job on fresh data: quiet now
    assert events_in(env, "26:00").empty, "the pattern labelled normal still fires"
    # a different problem still fires
    assert len(events_in(env, "27:00")) >= 1, "the zeroed stretch should still fire"
    # the labelled anomaly, repeated: the model did not learn it
    assert len(events_in(env, "28:00")) >= 1, "the labelled anomaly was learned as normal"
    # the labels show in the report of the hour they cover
    from cricket.flows.score import hourly_score

    rep = hourly_score(selector=SELECTOR, at=at("15:00").to_pydatetime())
    assert any(r["what"] == "label: normal" and r["by"] == "alice"
               for r in rep["alerts"]["answers"])
    assert "nightly backup" in open(rep["report"], encoding="utf-8").read()


def test_without_answers_the_same_retrain_learns_the_problem_and_fires_on_the_backup(env):
    """The control: the outcome above is the answers' doing."""
    retrain("24:00", 24, holdout=6)
    assert len(events_in(env, "26:00")) >= 1, "P should fire when nobody said it is normal"
    assert events_in(env, "28:00").empty, "Q in the calibration hours should be taken as normal"
