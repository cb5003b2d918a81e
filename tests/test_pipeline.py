"""The pipeline end to end: real influxd (started by the fixture), Prefect's test
harness API, an MLflow SQLite store in a temporary folder, the synthetic fleet.

One fleet is written and trained once for the module; the tests then score, re-score
and backfill its anomalous hours.
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from fixtures.influx import settings_for
from fixtures.pipeline import apply_env

from cricket.config import DetectorSpec, SeriesSelector
from cricket.influx.influxql import InfluxQLClient, InfluxQLSource
from cricket.synth import make_fleet, write_fleet

pytestmark = pytest.mark.slow

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
SPEC = DetectorSpec(n_clusters=64)
END = pd.Timestamp("2026-11-20T00:00:00Z")
DAYS = 1.5
ANOMALY_HOURS = 6


@pytest.fixture(scope="module")
def trained(influx_server, tmp_path_factory, prefect_api):
    """A 5-host fleet (anomalies in its last 6 hours) trained once; yields (settings,
    fleet, retrain summary) with the CRICKET_* environment pointing at it."""
    tmp = tmp_path_factory.mktemp("pipeline")
    db = f"pipe_{uuid.uuid4().hex[:10]}"
    settings = settings_for(
        influx_server, db, tmp,
        mlflow_tracking_uri=f"sqlite:///{(tmp / 'mlflow.db').absolute()}",
        model_name="cricket-pipeline-test",
        report_dir=tmp / "reports",
        batch_size=2,
    )
    with InfluxQLClient(settings) as client:
        client.ensure_database(db)
    start = END - pd.Timedelta(days=DAYS)
    anomalies_from = END - pd.Timedelta(hours=ANOMALY_HOURS)
    fleet = make_fleet(
        hosts=5, days=DAYS, step="10s", start=start, seed=3,
        anomaly_window=(anomalies_from, END),
    )
    write_fleet(fleet, settings)
    mp = pytest.MonkeyPatch()
    apply_env(mp, settings)
    from cricket.flows.retrain import nightly_retrain

    summary = nightly_retrain(
        selector=SELECTOR,
        spec=SPEC,
        train_window=(anomalies_from - start).to_pytimedelta(),
        holdout=timedelta(hours=6),
        end=anomalies_from.to_pydatetime(),
        min_history_points=500,
    )
    yield settings, fleet, summary
    mp.undo()


def score_rows(settings, start, end) -> pd.DataFrame:
    with InfluxQLSource(settings) as src:
        return src.read_scores(SELECTOR, start, end)


def test_first_retrain_registers_a_champion_with_one_library_per_series(trained):
    settings, fleet, summary = trained
    assert summary["series"] == len(fleet.series)
    assert summary["series_models"] == len(fleet.series)
    assert summary["promoted"] is True
    from cricket.registry import Registry

    registry = Registry(settings)
    assert registry.alias_version("champion") == summary["model_version"]
    mv = registry.client.get_model_version(settings.model_name, summary["model_version"])
    run = registry.client.get_run(mv.run_id)
    assert run.data.metrics["series"] == len(fleet.series)
    assert 0 < run.data.metrics["mean_threshold"] <= 100
    assert "mean_heldout_error_p99" in run.data.metrics
    # a named run; the fleet summary as metrics, per-series figures as one table artifact
    assert run.info.run_name.startswith("retrain waveform.value to ")
    assert not [m for m in run.data.metrics if "{" in m], run.data.metrics
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = registry.client.download_artifacts(mv.run_id, "per_series_metrics.json", tmp)
        table = json.loads(open(path).read())
    series_col = table["columns"].index("series")
    assert sorted(r[series_col] for r in table["data"]) == sorted(str(k) for k in fleet.series)
    assert run.data.params["spec.n_clusters"] == str(SPEC.n_clusters)
    figures = {a.path for a in registry.client.list_artifacts(mv.run_id, "figures")}
    assert figures == {"figures/centroid_gallery.png", "figures/heldout_reconstruction.png"}


def test_every_injected_anomaly_is_covered_by_an_event_and_clean_series_stay_quiet(trained):
    settings, fleet, summary = trained
    from cricket.flows.backfill import backfill
    from cricket.flows.demo import match_events

    start = END - pd.Timedelta(hours=ANOMALY_HOURS)
    result = backfill(start=start.to_pydatetime(), end=END.to_pydatetime(), selector=SELECTOR)
    assert result["chunks"] == ANOMALY_HOURS
    with InfluxQLSource(settings) as src:
        events = src.read_events(SELECTOR, start, END).reset_index(drop=True)
    match = match_events(fleet, events)  # an event must overlap the anomaly itself
    assert match.missed == [], f"missed {match.missed}"
    assert len(match.found) == len(fleet.truth)
    dirty = {str(a.key) for a in fleet.truth}
    clean = [str(k) for k in fleet.series if str(k) not in dirty]
    assert clean, "the fleet should keep some hosts clean"
    assert not set(events["series"]) & set(clean), "a clean series raised an event"
    # An anomaly running across an hour is one event, not one per chunk.
    gap = SELECTOR.every * (SPEC.min_event_gap + 1)
    for _, ev in events.sort_values("start").groupby("series"):
        assert ((ev["start"].iloc[1:].to_numpy() - ev["end"].iloc[:-1].to_numpy()) > gap).all()
    assert match.false_events == [], match.false_events
    # Each event's extent is the anomaly's, settled with the data after it (also where an
    # anomaly or the segments still holding it cross the hour: the next hour's run revises
    # the record), not the run of alerts that outlasts it by up to the period segment.
    # (Two anomalies closer than the period segment may share one event: not checked.)
    step = fleet.step
    for a in fleet.truth:
        mine = events[(events["series"] == str(a.key)) & (events["start"] < a.end)
                      & (events["end"] >= a.start)]
        others = [b for b in fleet.truth if b.key == a.key and b is not a and any(
            (e.start < b.end) and (e.end >= b.start) for e in mine.itertuples())]
        if others:
            continue
        # the rule (one segment, or a quarter of the anomaly at its end), plus the
        # settling's own reach: a quarter of the longest (period) segment, whose misfit
        # next to a strong anomaly clears only a quarter segment away (cricket.extent)
        slack = (max(SPEC.segment_len * step, 0.25 * (a.end - a.start))
                 + (SPEC.max_period // 4) * step)
        assert abs(mine["start"].min() - a.start) <= slack, (a, mine)
        assert abs(mine["end"].max() + step - a.end) <= slack, (a, mine)


def test_the_hourly_report_names_the_anomalous_series(trained):
    settings, fleet, summary = trained
    from cricket.flows.score import hourly_score

    first = min(fleet.truth, key=lambda a: a.start)
    at = first.start.floor("h") + pd.Timedelta(hours=1)
    if first.end > at:
        at = first.end.ceil("h")
    result = hourly_score(selector=SELECTOR, at=at.to_pydatetime())
    assert str(first.key) in result["anomalous_series"]
    html = open(result["report"], encoding="utf-8").read()
    assert str(first.key).replace("{", "{") in html
    assert "no data" not in " ".join(result["notes"])


def test_rerunning_the_same_hourly_run_writes_no_duplicate_points(trained):
    settings, fleet, summary = trained
    from cricket.flows.score import hourly_score

    at = (END - pd.Timedelta(hours=2)).to_pydatetime()
    a = hourly_score(selector=SELECTOR, at=at)
    rows_once = score_rows(settings, a["window_start"], a["window_end"])
    b = hourly_score(selector=SELECTOR, at=at)
    rows_twice = score_rows(settings, b["window_start"], b["window_end"])
    assert (a["window_start"], a["window_end"]) == (b["window_start"], b["window_end"])
    assert len(rows_once) > 0
    assert len(rows_twice) == len(rows_once)
    dup = rows_twice.reset_index().duplicated(subset=["time", "series", "model_version"])
    assert not dup.any()


def test_the_stored_scores_equal_the_detector_scoring_each_series_on_its_own(trained):
    """Whatever the pipeline does for speed (batches, one BLAS thread, shared write
    requests, the held-out evaluation batch by batch), what it stores is what the
    champion's detector gives for each series scored on its own."""
    settings, fleet, summary = trained
    import numpy as np
    from cricket.flows.runtime import batch_size_for
    from cricket.flows.score import hourly_score
    from cricket.tasks.score import context_for, sub_bundle

    from cricket.registry import Registry
    from cricket.scoring import score_series
    from cricket.windows import batched

    result = hourly_score(selector=SELECTOR, at=(END - pd.Timedelta(hours=1)).to_pydatetime())
    start, end = pd.Timestamp(result["window_start"]), pd.Timestamp(result["window_end"])
    registry = Registry(settings)
    bundle, version = registry.load_bundle(version=result["model_version"])
    with InfluxQLSource(settings) as src:
        keys = src.discover(SELECTOR)
        stored = src.read_scores(SELECTOR, start, end, version)
        # every batch reads the whole model's context (the reconstruction's overlap-add
        # grid starts where the data starts), whatever its own detectors need
        data = src.read(SELECTOR, start - context_for(bundle, SELECTOR), end, keys=keys)
        assert len(list(batched(keys, batch_size_for(settings, len(keys))))) > 1
        assert len({context_for(sub_bundle(bundle, b), SELECTOR)
                    for b in batched(keys, batch_size_for(settings, len(keys)))}) > 1, (
            "the batches' own contexts should differ, or this test proves little")
    assert len(data) == len(fleet.series)
    for key, values in data.items():
        det, source = bundle.detector_for(str(key))
        want = score_series(key, values, det, source, start.to_pydatetime(), bundle.spec).frame
        got = stored[stored["series"] == str(key)]
        assert len(got) == len(want) > 0
        for col in ("value", "reconstruction", "error", "score"):
            np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(),
                                       rtol=1e-9, atol=1e-9, err_msg=f"{key} {col}")
        assert got["anomalous"].tolist() == want["anomalous"].astype(int).tolist()
    # the retrain evaluated its model once, batch by batch: what it logged with the run
    # is what the promotion judged
    import json
    import tempfile

    mv = registry.client.get_model_version(settings.model_name, summary["model_version"])
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.client.download_artifacts(mv.run_id, "evaluation.json", tmp)
        logged = json.loads(open(path).read())
    rate = float(np.mean(list(logged["false_alarms"].values())))
    assert sorted(logged["false_alarms"]) == sorted(str(k) for k in fleet.series)
    assert mv.tags["heldout_false_alarms"] == f"{rate:.6f}"


def test_what_is_stored_for_a_series_does_not_depend_on_its_batch(trained, monkeypatch):
    """The same hour scored series by series and in batches of 3 stores
    the same values, reconstruction, error, score and events for every series: each
    batch reads the model's longest context, not only what its own detectors need.
    The report's pictures are the same too: drawn in a process of their own while later
    batches score (more than one batch), or in the flow (one batch)."""
    settings, fleet, first = trained
    at = (END - pd.Timedelta(hours=2)).to_pydatetime()
    pictures: list[list[str]] = []

    def stored(batch_size: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
        monkeypatch.setenv("CRICKET_BATCH_SIZE", str(batch_size))
        scores, events, out, imgs = stored_hour(settings, at, first["model_version"])
        pictures.append(imgs)
        return scores, events, out["batches"]

    import cricket.flows.score as score_flow

    monkeypatch.setattr(score_flow, "DRAW_AHEAD_SERIES", 1)  # pictures drawn ahead
    small, small_events, n_small = stored(1)
    whole, whole_events, n_whole = stored(3)
    assert (n_small, n_whole) == (len(fleet.series), 2)
    monkeypatch.setattr(score_flow, "DRAW_AHEAD_SERIES", 10**6)  # drawn in the flow
    stored(3)
    assert len(pictures[0]) >= 3 and pictures[0] == pictures[1] == pictures[2]
    # (events that continue one of the hour before are stored from their start, so this
    # window may hold none of its own: earlier tests scored the hours before it)
    assert len(small) == len(whole) > 0 and len(small_events) == len(whole_events)
    assert_same_stored((small, small_events), (whole, whole_events))


def stored_hour(settings, at, version: str) -> tuple[pd.DataFrame, pd.DataFrame, dict, list]:
    """Score the hour before ``at`` with ``version`` (the first champion: it flags the
    fleet's anomalous hours; a later test may promote another version); the scores and
    events stored for it (sorted by series and time), the run's summary and the
    report's ``<img>`` tags."""
    import re

    from cricket.flows.score import hourly_score

    out = hourly_score(selector=SELECTOR, at=at, model_version=version)
    imgs = re.findall(r"<img [^>]*>", Path(out["report"]).read_text())
    start, end = pd.Timestamp(out["window_start"]), pd.Timestamp(out["window_end"])
    with InfluxQLSource(settings) as src:
        scores = src.read_scores(SELECTOR, start, end, out["model_version"])
        events = src.read_events(SELECTOR, start, end, out["model_version"])
    order = ["series", "time"]
    events = events.reset_index()
    return (scores.reset_index().sort_values(order).reset_index(drop=True),
            events.sort_values(order).reset_index(drop=True) if len(events) else events,
            out, imgs)


def assert_same_stored(a: tuple[pd.DataFrame, pd.DataFrame], b: tuple[pd.DataFrame, pd.DataFrame],
                       columns: tuple[str, ...] = ("value", "reconstruction", "error", "score")
                       ) -> None:
    """The same series, times and ``columns`` (1e-9) stored, and the same events."""
    import numpy as np

    (small, small_events), (whole, whole_events) = a, b
    assert len(small) == len(whole) > 0 and len(small_events) == len(whole_events)
    assert small["series"].tolist() == whole["series"].tolist()
    assert small["time"].tolist() == whole["time"].tolist()
    for col in columns:
        np.testing.assert_allclose(small[col].to_numpy(float), whole[col].to_numpy(float),
                                   rtol=1e-9, atol=1e-9, err_msg=col)
    assert sorted(small_events.columns) == sorted(whole_events.columns)
    for col in small_events.columns:
        x, y = small_events[col], whole_events[col]
        if pd.api.types.is_float_dtype(x):
            np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-9,
                                       atol=1e-9, err_msg=f"event {col}")
        else:
            assert x.tolist() == y.tolist(), f"event {col}"


def test_scoring_processes_store_what_the_threads_store(trained, monkeypatch):
    """A run that scores its batches in processes forked after the model is loaded
    (``cricket.tasks.score_processes``) stores the same scores (every field, 1e-9),
    anomaly flags and events as one that scores them in the flow's threads, and its
    report shows the same pictures; no series is scored in the flow's own process."""
    import os

    import cricket.flows.score as score_flow
    import cricket.tasks.score as score_task
    import cricket.tasks.score_processes as sp

    settings, fleet, first = trained
    at = (END - pd.Timedelta(hours=3)).to_pydatetime()
    monkeypatch.setenv("CRICKET_BATCH_SIZE", "1")  # 5 batches
    monkeypatch.setattr(sp, "PROCESS_SERIES", 10**6)
    threads = stored_hour(settings, at, first["model_version"])
    flow_pid, real = os.getpid(), score_task.score_series

    def only_elsewhere(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        assert os.getpid() != flow_pid, "a series was scored in the flow's own process"
        return real(*args, **kwargs)

    monkeypatch.setattr(score_task, "score_series", only_elsewhere)
    monkeypatch.setattr(sp, "PROCESS_SERIES", 1)
    # one batch in flight: pictures drawn one at a time between the later batches too
    monkeypatch.setattr(score_flow, "in_flight_limit", lambda settings: 1)
    started = []
    monkeypatch.setattr(sp.ScoringProcesses, "close", lambda self: (
        started.append(self), self.pool.shutdown(wait=True))[-1])
    procs = stored_hour(settings, at, first["model_version"])
    assert len(started) == 1 and not started[0].broken
    assert procs[2]["batches"] == threads[2]["batches"] == 5
    assert procs[2]["events"] == threads[2]["events"] > 0
    assert_same_stored(threads[:2], procs[:2], columns=(
        "value", "reconstruction", "error", "score", "anomalous"))
    assert len(procs[3]) >= 3 and procs[3] == threads[3]


def _dies(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
    os._exit(3)


def test_a_scoring_process_that_dies_leaves_the_batches_to_the_flow(trained, monkeypatch):
    """A scoring process that dies (killed, out of memory) breaks the pool: the batch
    that met it and the later ones are scored in the flow's own process, and the run
    stores what a run on threads stores."""
    import cricket.tasks.score_processes as sp

    settings, fleet, first = trained
    at = (END - pd.Timedelta(hours=4)).to_pydatetime()
    monkeypatch.setenv("CRICKET_BATCH_SIZE", "2")
    monkeypatch.setattr(sp, "PROCESS_SERIES", 10**6)
    threads = stored_hour(settings, at, first["model_version"])
    monkeypatch.setattr(sp, "PROCESS_SERIES", 1)
    monkeypatch.setattr(sp, "_score", _dies)  # looked up by name in the forked process
    started = []
    monkeypatch.setattr(sp.ScoringProcesses, "close", lambda self: (
        started.append(self), self.pool.shutdown(wait=True))[-1])
    broken = stored_hour(settings, at, first["model_version"])
    assert len(started) == 1 and started[0].broken
    assert broken[2]["events"] == threads[2]["events"]
    assert_same_stored(threads[:2], broken[:2], columns=(
        "value", "reconstruction", "error", "score", "anomalous"))
    assert broken[3] == threads[3]


def test_a_backfill_over_hours_already_scored_skips_them_and_doubles_nothing(trained):
    settings, fleet, summary = trained
    from cricket.flows.backfill import backfill

    a = END - pd.Timedelta(hours=ANOMALY_HOURS + 3)
    b = END - pd.Timedelta(hours=ANOMALY_HOURS + 1)
    first = backfill(start=a.to_pydatetime(), end=b.to_pydatetime(), selector=SELECTOR)
    assert first["scored"] == 2
    rows_before = score_rows(settings, a, b)
    second = backfill(
        start=(a - pd.Timedelta(hours=1)).to_pydatetime(), end=b.to_pydatetime(), selector=SELECTOR
    )
    assert second["skipped"] == 2 and second["scored"] == 1
    rows_after = score_rows(settings, a, b)
    assert len(rows_after) == len(rows_before)
    redo = backfill(start=a.to_pydatetime(), end=b.to_pydatetime(), selector=SELECTOR, redo=True)
    assert redo["scored"] == 2
    assert len(score_rows(settings, a, b)) == len(rows_before)


def test_scoring_a_window_in_the_future_is_refused_with_a_clear_message(trained):
    from cricket.flows.score import hourly_score

    future = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=2)
    with pytest.raises(ValueError, match="in the future"):
        hourly_score(selector=SELECTOR, at=future.to_pydatetime())


def test_scoring_without_a_champion_tells_the_user_to_retrain(pipeline_settings):
    from typer.testing import CliRunner

    from cricket.cli import app

    result = CliRunner().invoke(app, ["score", "--at", "2026-11-19T12:00"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "champion" in text and "retrain" in text
    assert "Traceback" not in result.output


def test_scoring_hours_again_in_any_order_stores_the_same_events(trained):
    """Events that run across the hour are joined into one record (kept from its start).
    Scoring those hours again (the last first, then one in the middle) must store the
    same events: a re-run restores the record as it was before its hour joined it, and
    an hour whose event a later hour already extended leaves that record alone."""
    import numpy as np
    from cricket.flows.score import hourly_score

    settings, fleet, first = trained
    version = first["model_version"]
    ends = [END - pd.Timedelta(hours=h) for h in range(ANOMALY_HOURS - 1, -1, -1)]

    def score(at: pd.Timestamp) -> None:
        hourly_score(selector=SELECTOR, at=at.to_pydatetime(), model_version=version)

    def stored() -> pd.DataFrame:
        with InfluxQLSource(settings) as src:
            ev = src.read_events(SELECTOR, END - pd.Timedelta(days=1), END, str(version))
        ev = ev.reset_index()
        ev = ev[ev["event_kind"].isna()] if "event_kind" in ev.columns else ev
        cols = ["series", "time", "start", "end", "peak", "mean", "duration_s", "severity"]
        return ev[cols].sort_values(["series", "time"]).reset_index(drop=True)

    for at in ends:
        score(at)
    once = stored()
    boundaries = [at - pd.Timedelta(hours=1) for at in ends[1:]]
    across = [(s, e) for s, e in zip(once["start"], once["end"], strict=True)
              if any(s < b <= e for b in boundaries)]
    assert across, "no event runs across an hour here: the test would prove nothing"
    for at in [*reversed(ends), ends[len(ends) // 2]]:
        score(at)
    again = stored()
    assert again[["series", "time", "start", "end"]].equals(once[["series", "time", "start", "end"]])
    for col in ("peak", "mean", "duration_s", "severity"):
        np.testing.assert_allclose(again[col].to_numpy(float), once[col].to_numpy(float),
                                   rtol=1e-9, atol=1e-9, err_msg=col)
