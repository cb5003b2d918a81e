"""The pipeline's plain functions (cricket/windows.py, cricket/scoring.py): windows, chunks, event joins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from cricket.scoring import join_events
from cricket.windows import chunks, floor_time, score_window, utc

T = pd.Timestamp("2026-01-01T00:00Z")


def test_a_run_scheduled_at_five_past_scores_the_previous_full_hour():
    start, end = score_window(datetime(2026, 1, 1, 10, 5, tzinfo=UTC), timedelta(hours=1))
    assert (start, end) == (datetime(2026, 1, 1, 9, tzinfo=UTC), datetime(2026, 1, 1, 10, tzinfo=UTC))


def test_naive_times_are_taken_as_utc_and_floored_on_the_epoch_grid():
    assert utc("2026-01-01 10:00") == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert floor_time(datetime(2026, 1, 1, 10, 59, tzinfo=UTC), timedelta(minutes=15)) == datetime(
        2026, 1, 1, 10, 45, tzinfo=UTC
    )


def test_chunks_cover_the_range_exactly_and_the_last_may_be_short():
    parts = chunks(T, T + pd.Timedelta("2h30min"), timedelta(hours=1))
    assert [(a - T, b - T) for a, b in parts] == [
        (pd.Timedelta(0), pd.Timedelta("1h")),
        (pd.Timedelta("1h"), pd.Timedelta("2h")),
        (pd.Timedelta("2h"), pd.Timedelta("2h30min")),
    ]


def test_chunks_refuse_a_start_after_the_end_with_the_fix():
    with pytest.raises(ValueError, match="not before end.*swap"):
        chunks(T + pd.Timedelta("1h"), T, timedelta(hours=1))


def ev(start: str, end: str, peak: float, mean: float, step_s: float = 10.0) -> dict:
    a, b = T + pd.Timedelta(start), T + pd.Timedelta(end)
    return {"start": a, "end": b, "peak": peak, "mean": mean,
            "duration_s": (b - a).total_seconds() + step_s}


def test_an_event_cut_by_a_chunk_boundary_is_joined_and_far_ones_are_not():
    events = pd.DataFrame([
        ev("2h", "2h1min", 70, 70),
        ev("0s", "59min50s", 90, 80),
        ev("1h", "1h4min", 95, 60),
    ])
    out = join_events(events, pd.Timedelta("170s"))
    assert len(out) == 2
    first = out.iloc[0]
    assert first["start"] == T and first["end"] == T + pd.Timedelta("1h4min")
    assert first["peak"] == 95
    assert first["duration_s"] == pd.Timedelta("1h4min").total_seconds() + 10
    assert 60 < first["mean"] < 80  # weighted by duration
    assert out.iloc[1]["start"] == T + pd.Timedelta("2h")


def test_joined_chunks_keep_each_events_own_picture():
    """A backfill joins a series' chunks: two events across a boundary become one and
    keep the picture (segment, nearest shape) of the higher peak; an event after them
    keeps its own, not its neighbour's (the pictures were concatenated per chunk, so every
    picture after a join belonged to the event before it)."""
    import numpy as np

    from cricket.scoring import ScoredSeries, merge_by_series

    def chunk(lo: str, hi: str, events: list[dict], tags: list[str]) -> ScoredSeries:
        idx = pd.date_range(T + pd.Timedelta(lo), T + pd.Timedelta(hi), freq="10s",
                            inclusive="left")
        frame = pd.DataFrame({"value": 0.0, "score": 0.0}, index=idx)
        pairs = [(np.full(4, float(t)), np.full(4, -float(t))) for t in tags]
        return ScoredSeries("s", frame, pd.DataFrame(events), 50.0, "own", pairs)

    first = chunk("0s", "1h", [ev("10min", "20min", 80, 70), ev("55min", "59min50s", 70, 60)],
                  ["1", "2"])
    second = chunk("1h", "2h", [ev("1h", "1h5min", 95, 60), ev("1h30min", "1h40min", 75, 70)],
                   ["3", "4"])
    (merged,) = merge_by_series([second, first], pd.Timedelta("170s"))
    assert list(merged.events["start"]) == [T + pd.Timedelta(x) for x in ("10min", "55min", "1h30min")]
    assert [float(seg[0]) for seg, _ in merged.nearest_shapes] == [1.0, 3.0, 4.0]
    assert merged.peak_event_index() == 1 and float(merged.nearest_shapes[1][0][0]) == 3.0


def test_a_backfill_report_shows_the_end_a_later_chunk_settled_and_stored():
    """A chunk's event ending near the chunk's end is provisional; the next chunk settles
    it and rewrites its record (``revised``). The backfill's report merges the chunks: it
    must show the stored end, not the first chunk's provisional one (the demo's
    frequency change was reported 5 min short of its stored record)."""
    from cricket.scoring import ScoredSeries, merge_by_series

    def chunk(lo: str, hi: str, events: list[dict], revised=None) -> ScoredSeries:  # noqa: ANN001
        idx = pd.date_range(T + pd.Timedelta(lo), T + pd.Timedelta(hi), freq="10s",
                            inclusive="left")
        frame = pd.DataFrame({"value": 0.0, "score": 0.0}, index=idx)
        return ScoredSeries("s", frame, pd.DataFrame(events), 50.0, "own", revised=revised)

    cut = {**ev("22min40s", "45min30s", 90, 70), "severity": 20.0, **WHY}
    stored = pd.DataFrame([{**ev("22min40s", "50min30s", 91, 70), "severity": 21.0,
                            "extended_at": T + pd.Timedelta("1h")}])
    first = chunk("0s", "1h", [cut])
    second = chunk("1h", "2h", [], revised=stored)
    (merged,) = merge_by_series([second, first], pd.Timedelta("170s"))
    (row,) = merged.events.to_dict("records")
    assert (row["start"], row["end"]) == (T + pd.Timedelta("22min40s"), T + pd.Timedelta("50min30s"))
    assert row["peak"] == 91 and row["severity"] == 21.0 and row["duration_s"] == 1680.0
    assert {k: row[k] for k in WHY} == WHY  # the explanation the first chunk gave


def test_events_further_apart_than_the_gap_stay_apart():
    events = pd.DataFrame([ev("0s", "10min", 90, 80), ev("20min", "30min", 90, 80)])
    assert len(join_events(events, pd.Timedelta("170s"))) == 2


def test_an_event_opening_a_window_continues_the_one_that_closed_the_previous_window():
    from cricket.scoring import continue_event

    previous = pd.DataFrame([ev("10min", "20min", 80, 70), ev("40min", "59min50s", 90, 85)])
    current = pd.DataFrame([ev("1h", "1h13min", 97, 90), ev("1h40min", "1h41min", 70, 70)])
    out = continue_event(current, previous, T + pd.Timedelta("1h"), pd.Timedelta("170s"))
    assert len(out) == 2
    assert out.iloc[0]["start"] == T + pd.Timedelta("40min")  # the earlier start is kept
    assert out.iloc[0]["end"] == T + pd.Timedelta("1h13min")
    assert out.iloc[0]["peak"] == 97
    assert out.iloc[1]["start"] == T + pd.Timedelta("1h40min")


WHY = {"scale": "shape 32", "actual": 0.0, "typical": 41.5, "views": "shape 32 14.0"}


def test_an_event_continuing_a_stored_record_keeps_this_windows_explanation():
    """A record read back has no explanation (which view fired, actual and typical):
    the continued event takes the part this window scored's, even when the stored part
    was the more surprising one; without it the report's "looks like" said "-"."""
    from cricket.scoring import continue_event

    previous = pd.DataFrame([{**ev("40min", "59min50s", 90, 85), "severity": 30.0}])
    current = pd.DataFrame([{**ev("1h", "1h13min", 80, 70), "severity": 5.0, **WHY}])
    (out,) = continue_event(current, previous, T + pd.Timedelta("1h"),
                            pd.Timedelta("170s")).to_dict("records")
    assert out["start"] == T + pd.Timedelta("40min") and out["peak"] == 90
    assert {k: out[k] for k in WHY} == WHY


def test_a_record_a_later_window_took_over_is_explained_by_the_events_it_stands_for():
    """Re-running a window whose event a later window already settled writes the stored
    record back unchanged, and the report explains it from this window's scoring (a
    `backfill --redo` report had every event's explanation as "-")."""
    from cricket.scoring import keep_taken_over

    events = pd.DataFrame([{**ev("2min", "41min50s", 99, 80), "severity": 500.0, **WHY},
                           {**ev("50min", "51min", 70, 70), "severity": 4.0, "scale": "range 1",
                            "actual": 9.0, "typical": 1.0, "views": "range 1 4"}])
    taken = pd.DataFrame([{**ev("2min", "41min50s", 99.5, 81), "severity": 584.7,
                           "extended_at": T + pd.Timedelta("1h")}])
    out = keep_taken_over(events, taken, pd.Timedelta("170s")).to_dict("records")
    assert [r["start"] for r in out] == [T + pd.Timedelta("2min"), T + pd.Timedelta("50min")]
    assert out[0]["peak"] == 99.5 and out[0]["severity"] == 584.7  # the record, as stored
    assert {k: out[0][k] for k in WHY} == WHY
    assert out[1]["scale"] == "range 1"


def test_an_event_after_a_quiet_stretch_is_not_glued_to_an_old_one():
    from cricket.scoring import continue_event

    previous = pd.DataFrame([ev("10min", "20min", 80, 70)])
    current = pd.DataFrame([ev("1h", "1h5min", 90, 80)])
    out = continue_event(current, previous, T + pd.Timedelta("1h"), pd.Timedelta("170s"))
    assert out.iloc[0]["start"] == T + pd.Timedelta("1h")
    assert continue_event(current, None, T + pd.Timedelta("1h"), pd.Timedelta("170s")).equals(current)


def test_later_data_shortens_the_previous_windows_event_instead_of_adding_one():
    from cricket.scoring import revise_previous

    hour = T + pd.Timedelta("1h")
    # the hour before settled its last event up to its end; this hour's data (its left
    # context) shows the anomaly ended at 41:00, and this hour itself is normal
    previous = pd.DataFrame([ev("10min", "15min", 80, 70), ev("2min", "59min50s", 99, 90)])
    carried = pd.DataFrame([ev("30min", "41min", 95, 90)])
    events = pd.DataFrame(columns=previous.columns)
    out, revised = revise_previous(events, carried, previous, hour, pd.Timedelta("170s"))
    assert out.empty
    assert len(revised) == 1
    rec = revised.iloc[0]
    assert rec["start"] == T + pd.Timedelta("2min")  # the record's own start: it is replaced
    assert rec["end"] == T + pd.Timedelta("41min")
    assert rec["duration_s"] == (39 * 60 + 10)
    assert rec["peak"] == 99


def test_an_event_the_previous_window_cut_short_continues_across_the_hour():
    from cricket.scoring import revise_previous

    hour = T + pd.Timedelta("1h")
    # the previous record stopped 5 minutes before the hour (more than the join gap);
    # the left context shows the anomaly ran on into this hour: one event, earlier start
    previous = pd.DataFrame([ev("40min", "55min", 90, 85)])
    carried = pd.DataFrame([ev("50min", "1h10min", 97, 90)])
    events = pd.DataFrame([ev("1h", "1h10min", 97, 90), ev("1h40min", "1h41min", 70, 70)])
    out, revised = revise_previous(events, carried, previous, hour, pd.Timedelta("170s"))
    assert revised.empty
    assert len(out) == 2
    assert out.iloc[0]["start"] == T + pd.Timedelta("40min")
    assert out.iloc[0]["end"] == T + pd.Timedelta("1h10min")
    assert out.iloc[1]["start"] == T + pd.Timedelta("1h40min")
    # a carried event that no earlier record matches changes nothing
    alone = pd.DataFrame([ev("10min", "12min", 80, 70)])
    same, none = revise_previous(events, carried, alone, hour, pd.Timedelta("170s"))
    assert none.empty and same.equals(events)


def test_a_record_confirmed_by_this_windows_alerts_is_returned_and_one_from_context_alone_is_not():
    from cricket.scoring import revise_previous

    hour = T + pd.Timedelta("1h")
    previous = pd.DataFrame([ev("40min", "45min", 99, 90)])
    events = pd.DataFrame(columns=previous.columns)
    # this window's alerts (scores above the threshold in it: a finite peak) settle the
    # record where it is stored: returned, so the hour's report names the earlier event
    confirmed = pd.DataFrame([ev("41min", "45min", 80, 70)])
    _, revised = revise_previous(events, confirmed, previous, hour, pd.Timedelta("170s"))
    assert len(revised) == 1 and revised.iloc[0]["end"] == T + pd.Timedelta("45min")
    # alerts in the left context alone (no peak in this window) that settle it where it
    # is: nothing to write again
    context_only = pd.DataFrame([ev("41min", "45min", float("nan"), float("nan"))])
    _, revised = revise_previous(events, context_only, previous, hour, pd.Timedelta("170s"))
    assert revised.empty
    # ... and where they settle it elsewhere (an end the window before could not see), the
    # record is revised
    shorter = pd.DataFrame([ev("41min", "42min", float("nan"), float("nan"))])
    _, revised = revise_previous(events, shorter, previous, hour, pd.Timedelta("170s"))
    assert len(revised) == 1 and revised.iloc[0]["end"] == T + pd.Timedelta("42min")
    assert revised.iloc[0]["peak"] == 99
