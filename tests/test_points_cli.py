"""`cricket points ...` from the shell's point of view (typer's runner, in process):
synth --write to a real influxd, retrain into a real MLflow store under Prefect's test
harness, backfill the anomalous hours; bad input is one line."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cricket.cli import app

pytestmark = pytest.mark.slow
END = "2026-03-02T00:00:00Z"


def invoke(*args: str):  # noqa: ANN201
    return CliRunner().invoke(app, list(args))


def test_synth_retrain_backfill_from_the_cli(pipeline_settings):
    r = invoke("points", "synth", "--devices", "3", "--days", "2", "--end", END,
               "--seed", "7", "--write", "--json")
    assert r.exit_code == 0, r.output[-3000:]
    synth = json.loads(r.stdout.strip().splitlines()[-1])
    assert synth["written"] == synth["points"] and synth["anomalies"]
    split = pd.Timestamp(END) - pd.Timedelta(hours=12)
    # `points retrain` is the nightly retrain with a point selector: one version holds the
    # waveform model (of --field) and the point model
    r = invoke("points", "retrain", "--train-window", "36h", "--holdout", "12h",
               "--end", split.isoformat(), "--n-clusters", "6", "--field", "power",
               "--min-history-points", "100", "--json")
    assert r.exit_code == 0, r.output[-3000:]
    trained = json.loads(r.stdout.strip().splitlines()[-1])
    assert trained["points"]["devices"] == 3 and trained["promoted"] is True
    assert trained["series"] == 3  # the waveform part: psu.power of each device
    # the backfill runs as a flow call here: Prefect's console handler keeps the stream of
    # the first flow run in the process, and a CliRunner closes its own after each call
    from cricket.flows.points import points_backfill

    out = points_backfill(start=split.to_pydatetime(), end=pd.Timestamp(END).to_pydatetime())
    assert out["model_version"] == trained["model_version"]
    found = {(e["device"], e["contributor"]) for e in out["events"]}
    assert found == {(a["device"], a["field"]) for a in synth["anomalies"]}
    assert len(out["events"]) == len(synth["anomalies"])


def test_retrain_points_option_is_checked_in_one_line(pipeline_settings):
    r = invoke("retrain", "--measurement", "psu", "--field", "power", "--points", "power")
    assert r.exit_code == 1
    assert "--points power" in r.output and "at least two distinct fields" in r.output
    assert "Traceback" not in r.output


def test_a_point_selector_of_one_field_is_refused_in_one_line(pipeline_settings):
    r = invoke("points", "retrain", "--fields", "power")
    assert r.exit_code == 1
    assert "at least two distinct fields" in r.output
    assert "Traceback" not in r.output


def test_scoring_before_any_point_retrain_says_what_to_do(pipeline_settings):
    r = invoke("points", "score", "--end", END)
    assert r.exit_code == 1
    assert "retrain" in r.output and "Traceback" not in r.output


def test_cricket_synth_family_multifield_writes_the_point_fleet(pipeline_settings):
    from cricket.influx.influxql import InfluxQLSource
    from cricket.influx.points import read_point_frames
    from cricket.series import SeriesKey
    from cricket.synth_points import make_point_fleet

    r = invoke("synth", "--family", "multifield", "--hosts", "3", "--days", "1",
               "--start", "2026-03-01T00:00:00", "--seed", "3", "--write")
    assert r.exit_code == 0, r.output[-3000:]
    assert "fields load, power, temp" in r.output and "out of line with load" in r.output
    # what `cricket points synth` writes: the same fleet, read back aligned per device
    fleet = make_point_fleet(n_devices=3, days=1, step="5m", end="2026-03-02T00:00:00Z", seed=3)
    with InfluxQLSource(pipeline_settings) as src:
        frames = read_point_frames(src, fleet.selector(), fleet.start,
                                   fleet.end + pd.Timedelta(minutes=5))
    assert set(frames) == set(fleet.devices)
    for dev, frame in frames.items():
        for f in ("load", "power", "temp"):
            want = fleet.series[SeriesKey.make("psu", f, dev.tag_dict)]
            got = frame[f].reindex(want.index)
            assert got.notna().all() and (got - want).abs().max() < 1e-6


def test_cricket_synth_unknown_family_is_one_line(pipeline_settings):
    r = invoke("synth", "--family", "nope")
    assert r.exit_code == 1 and "give crickets or multifield" in r.output
    assert "Traceback" not in r.output
