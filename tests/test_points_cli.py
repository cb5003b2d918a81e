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
    # the retrain runs as a flow call here: Prefect's console handler keeps the stream of
    # the first flow run in the process, and a CliRunner closes its own after each call
    from datetime import timedelta

    from cricket.flows.points import points_retrain

    from cricket.multifield import PointSelector, PointSpec

    trained = points_retrain(selector=PointSelector(), spec=PointSpec(n_clusters=6),
                             train_window=timedelta(hours=36), holdout=timedelta(hours=6),
                             end=split.to_pydatetime())
    assert trained["devices"] == 3 and trained["promoted"] is True
    r = invoke("points", "backfill", "--start", split.isoformat(), "--end", END, "--json")
    assert r.exit_code == 0, r.output[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    found = {(e["device"], e["contributor"]) for e in out["events"]}
    assert found == {(a["device"], a["field"]) for a in synth["anomalies"]}
    assert len(out["events"]) == len(synth["anomalies"])


def test_a_point_selector_of_one_field_is_refused_in_one_line(pipeline_settings):
    r = invoke("points", "retrain", "--fields", "power")
    assert r.exit_code == 1
    assert "at least two distinct fields" in r.output
    assert "Traceback" not in r.output


def test_scoring_before_any_point_retrain_says_what_to_do(pipeline_settings):
    r = invoke("points", "score", "--end", END)
    assert r.exit_code == 1
    assert "retrain" in r.output and "Traceback" not in r.output
