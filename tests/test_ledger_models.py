"""The backfill ledger and the results of two models (issue 17): a chunk scored before
its data arrived is not recorded as done, and two model names scoring the same series
and hour keep their own scores, events and ledgers."""

from __future__ import annotations

import pandas as pd
from hostile_support import TRAIN_END, retrain, write_clean

from cricket.config import SeriesSelector
from cricket.influx import ledger
from cricket.influx.influxql import InfluxQLSource
from cricket.series import SeriesKey

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
KEYS = [SeriesKey.make("waveform", "value", {"host": h}) for h in ("a", "b")]
START, STOP = TRAIN_END, TRAIN_END + pd.Timedelta(hours=2)


def _backfill(**kw):
    from cricket.flows.backfill import backfill

    return backfill(start=START.to_pydatetime(), end=STOP.to_pydatetime(), selector=SELECTOR, **kw)


def _scores(settings, **kw) -> pd.DataFrame:
    with InfluxQLSource(settings) as src:
        return src.read_scores(SELECTOR, START, STOP, **kw)


def test_backfill_before_late_data_records_no_chunk_and_the_rerun_scores_it(pipeline_settings):
    # history up to the backfill range only: the range's data is "late"
    write_clean(pipeline_settings, KEYS, hours=4, end=TRAIN_END)
    version = retrain(SELECTOR)["model_version"]
    first = _backfill()
    # no scores yet; what is written is one data_missing event per series and chunk
    assert first["scored"] == 2 and first["incomplete"] == 2
    assert len(first["data_missing"]) == 2 * 2 and first["points_written"] == 2 * 2
    assert _scores(pipeline_settings).empty
    assert any("not recorded as done" in n for n in first["notes"])
    scope = SELECTOR.model_dump_json()
    assert ledger.done_chunks(pipeline_settings, version, scope, START, STOP) == set()
    # the first 10 minutes of the range arrive: far fewer than expected, still not done
    write_clean(pipeline_settings, KEYS, hours=4 + 1 / 6, end=TRAIN_END + pd.Timedelta(minutes=10))
    partial = _backfill()
    assert partial["skipped"] == 0 and partial["incomplete"] == 2 and partial["points_written"] > 0
    # all of it arrives: the rerun scores both chunks, and only then are they done
    write_clean(pipeline_settings, KEYS, hours=6, end=STOP)
    second = _backfill()
    assert second["skipped"] == 0 and second["scored"] == 2 and second["incomplete"] == 0
    assert len(_scores(pipeline_settings)) == 2 * 720
    assert len(ledger.done_chunks(pipeline_settings, version, scope, START, STOP)) == 2
    assert _backfill()["skipped"] == 2


def test_two_model_names_keep_their_own_scores_events_and_ledgers(pipeline_settings, monkeypatch):
    write_clean(pipeline_settings, KEYS, hours=6, end=STOP)
    monkeypatch.setenv("CRICKET_MODEL_NAME", "model-a")
    va = retrain(SELECTOR)["model_version"]
    a = _backfill()
    monkeypatch.setenv("CRICKET_MODEL_NAME", "model-b")
    vb = retrain(SELECTOR)["model_version"]
    assert va == vb == "1"  # same version number under two names
    b = _backfill()
    assert a["scored"] == b["scored"] == 2 and b["skipped"] == 0  # b's ledger is its own
    rows_a = _scores(pipeline_settings, model_name="model-a")
    rows_b = _scores(pipeline_settings, model_name="model-b")
    assert len(rows_a) == len(rows_b) == 2 * 720  # b did not overwrite a
    assert set(rows_a["model_name"]) == {"model-a"} and set(rows_b["model_name"]) == {"model-b"}
    assert len(_scores(pipeline_settings)) == 4 * 720
    scope = SELECTOR.model_dump_json()
    for name in ("model-a", "model-b"):
        assert len(ledger.done_chunks(pipeline_settings, "1", scope, START, STOP, model_name=name)) == 2
