"""Selector mistakes are refused before scoring, and one series that cannot be written
back does not fail the others (issue 17). Against the real influxd and the real flows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fixtures.pipeline import apply_env
from hostile_support import END, TRAIN_END, retrain, write_clean
from reliability_support import pipeline_settings_for
from test_bad_input import cli

from cricket.config import SeriesSelector
from cricket.influx import lineprotocol as lp
from cricket.influx.influxql import InfluxQLClient, InfluxQLSource
from cricket.series import SeriesKey

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
KEYS = [SeriesKey.make("waveform", "value", {"host": h}) for h in ("a", "b")]
#: stored by influxd as written (two backslashes), but no line protocol can write it back
BAD_LINE_HOST = "bad\\\\host"
AT = TRAIN_END + pd.Timedelta(hours=1)


@pytest.fixture(scope="module")
def trained(influx_server, tmp_path_factory, prefect_api):
    mp = pytest.MonkeyPatch()
    settings = pipeline_settings_for(influx_server, tmp_path_factory.mktemp("selector"))
    apply_env(mp, settings)
    series = write_clean(settings, KEYS)
    bad = series[KEYS[0]]
    lines = [f"waveform,host={BAD_LINE_HOST} value={v!r} {t.value}" for t, v in bad.items()]
    with InfluxQLClient(settings) as c:
        c.write_lines(lines)
    summary = retrain(SELECTOR)
    yield settings, summary["model_version"]
    mp.undo()


@pytest.fixture
def env(trained, monkeypatch):
    apply_env(monkeypatch, trained[0])
    return trained


def _nothing_written(settings) -> bool:
    with InfluxQLSource(settings) as src:
        return src.read_scores(SELECTOR, TRAIN_END, END).empty


@pytest.mark.parametrize(
    ("args", "named", "listed"),
    [
        (["--group-by", "hots"], "'hots'", "host"),
        (["--field", "valeu"], "'valeu'", "value"),
        (["--measurement", "wavefrom"], "'wavefrom'", "waveform"),
        (["--tag", "hots=a"], "'hots'", "host"),
    ],
)
def test_a_selector_naming_what_does_not_exist_is_refused_listing_what_does(env, args, named, listed):
    settings, _ = env
    result, text = cli("score", "--at", AT.isoformat(), *args)
    assert result.exit_code == 1, text
    assert "does not exist" in text and named in text and listed in text, text
    assert _nothing_written(settings)


def test_scoring_at_another_step_than_the_model_was_trained_at_is_refused(env):
    settings, version = env
    for command in (["score", "--at", AT.isoformat()],
                    ["backfill", "--start", TRAIN_END.isoformat(), "--end", AT.isoformat()]):
        result, text = cli(*command, "--every", "60s")
        assert result.exit_code == 1, text
        assert "10s" in text and "60s" in text and f"version {version}" in text, text
    assert _nothing_written(settings)


def test_a_series_that_cannot_be_written_back_is_skipped_and_the_others_are_scored(env):
    settings, _ = env
    with InfluxQLSource(settings) as src:
        keys = src.discover(SELECTOR)
    bad = [k for k in keys if lp.unwritable(k) is not None]
    assert len(keys) == 3 and len(bad) == 1  # the stored tag value really is unwritable
    result, text = cli("score", "--at", AT.isoformat(), "--json")
    assert result.exit_code == 0, text
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["skipped_series"] == [str(bad[0])]
    assert any("skipped" in n and str(bad[0]) in n for n in summary["notes"])
    assert summary["scored"] == 2 and summary["points_written"] >= 2 * 360
    with InfluxQLSource(settings) as src:
        rows = src.read_scores(SELECTOR, TRAIN_END, AT)
    assert set(rows["series"]) == {str(k) for k in KEYS}
    assert np.isfinite(rows["score"]).all()
    # the plain output says so too
    result, text = cli("score", "--at", AT.isoformat())
    assert result.exit_code == 0 and "1 series skipped" in text, text
