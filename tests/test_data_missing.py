"""Missing data is loud: a series the model knows that sent nothing (or far less than
expected) in the scored hour becomes a ``data_missing`` event in InfluxDB, shows in the
report and the summary, and the command exits 3. Real influxd, Prefect harness API,
MLflow SQLite store; the command runs as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from fixtures.influx import settings_for
from fixtures.pipeline import apply_env, settings_env

from cricket.config import DetectorSpec, SeriesSelector
from cricket.influx.influxql import InfluxQLClient
from cricket.missing import MissingData, expected_points, find_missing
from cricket.synth import make_fleet, write_fleet

pytestmark = pytest.mark.slow

END = pd.Timestamp("2026-11-20T00:00:00Z")
SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])


def test_find_missing_counts_against_the_expected_points():
    start, end = END - pd.Timedelta(hours=1), END
    expected = expected_points(start, end, timedelta(seconds=10))
    assert expected == 360
    found = find_missing(["a", "b", "c"], {"b": 100, "c": 359}, expected)
    assert found == [MissingData("a", 0, 360), MissingData("b", 100, 360)]
    assert found[0].severity == 100.0
    assert find_missing(["a"], {"a": 180}, expected) == []  # half is not "far less"


@pytest.fixture(scope="module")
def fleet_env(influx_server, tmp_path_factory, prefect_api):
    from prefect.settings import PREFECT_API_URL

    tmp = tmp_path_factory.mktemp("missing")
    db = f"missing_{uuid.uuid4().hex[:10]}"
    settings = settings_for(
        influx_server, db, tmp,
        mlflow_tracking_uri=f"sqlite:///{(tmp / 'mlflow.db').absolute()}",
        model_name="cricket-missing-test", report_dir=tmp / "reports", batch_size=2,
    )
    with InfluxQLClient(settings) as client:
        client.ensure_database(db)
    fleet = make_fleet(hosts=3, days=1.0, step="10s", start=END - pd.Timedelta(days=1),
                       seed=5, anomalies=False)
    write_fleet(fleet, settings)
    mp = pytest.MonkeyPatch()
    apply_env(mp, settings)
    from cricket.flows.retrain import nightly_retrain

    nightly_retrain(selector=SELECTOR, spec=DetectorSpec(n_clusters=32),
                    train_window=timedelta(hours=20), holdout=timedelta(hours=5),
                    end=(END - pd.Timedelta(hours=2)).to_pydatetime(), min_history_points=500)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRICKET_")}
    env.update(settings_env(settings))
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    yield settings, fleet, env
    mp.undo()


def test_a_silent_series_is_a_data_missing_event_and_exit_3(fleet_env):
    settings, fleet, env = fleet_env
    keys = sorted(str(k) for k in fleet.series)
    hosts = sorted(k.tag_dict["host"] for k in fleet.series)
    start = END - pd.Timedelta(hours=1)
    with InfluxQLClient(settings) as client:
        # host 0 sends nothing in the last hour, host 1 only its first 15 minutes
        for host, since in ((hosts[0], start), (hosts[1], start + pd.Timedelta(minutes=15))):
            client.query(
                "DELETE FROM waveform WHERE host = $host AND time >= $a AND time < $b",
                params={"host": host, "a": since.isoformat().replace("+00:00", "Z"),
                        "b": END.isoformat().replace("+00:00", "Z")},
                method="POST",
            )
    r = subprocess.run(
        [sys.executable, "-m", "cricket.cli", "score", "--at", END.isoformat(), "--json"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(summary["data_missing"]) == 2, summary
    assert summary["data_missing"][0].startswith(keys[0]) and "no data" in summary["data_missing"][0]
    assert summary["data_missing"][1].startswith(keys[1]) and "90 of 360" in summary["data_missing"][1]
    # written with the other events, tagged as data_missing
    with InfluxQLClient(settings) as client:
        rows = client.query(
            'SELECT "received", "expected", "peak" FROM "cricket_event" '
            "WHERE event_kind = 'data_missing' GROUP BY \"series\"",
        )
    got = {s["tags"]["series"]: list(s["values"][0][1:]) for s in rows}
    assert got == {keys[0]: [0, 360, 100.0], keys[1]: [90, 360, 75.0]}, rows
    # shown in the report
    html = Path(summary["report"]).read_text()
    assert "Data missing" in html and keys[0] in html and "90 of 360" in html
    # the report's link artifact opens the MLflow run that holds the report
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        links = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["cricket-score-report"]))
        )
    latest = max(links, key=lambda a: a.created).data
    assert "(http://127.0.0.1:5000/#/experiments/" in latest, latest
    assert summary["mlflow_run"] in latest
    # the human summary says so too
    r = subprocess.run(
        [sys.executable, "-m", "cricket.cli", "score", "--at", END.isoformat()],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert r.returncode == 3
    assert "2 series sent no data or far less than expected" in r.stdout
    # a window where every series reported exits 0
    r = subprocess.run(
        [sys.executable, "-m", "cricket.cli", "score", "--at",
         (END - pd.Timedelta(hours=1)).isoformat(), "--json"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["data_missing"] == []


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--field", "valu"], "field 'valu' does not exist in measurement 'waveform'"),
        (["--measurement", "wavefrom"], "measurement 'wavefrom' does not exist"),
    ],
)
def test_a_misspelt_field_or_measurement_lists_the_ones_that_exist(fleet_env, option, says):
    settings, fleet, env = fleet_env
    r = subprocess.run(
        [sys.executable, "-m", "cricket.cli", "score", "--at", END.isoformat(), *option],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert says in r.stderr, r.stderr
    assert ("its fields: value" if option[0] == "--field" else "waveform") in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3 and "Traceback" not in r.stderr
