"""What an event looks like in words (cricket.explain): one phrase per view that fired,
with the level against typical and lengths in time; shown in the report's events table,
the Prefect table artifact and each alert's member line."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cricket.explain import looks_like


@pytest.mark.parametrize(
    ("scale", "actual", "typical", "step_s", "text"),
    [
        ("noise 32", 5.0, 5.0, 10, "too regular, as if stuck or frozen: the usual noise is gone"),
        ("range 1", 0.0, 41.5, 10, "below every value seen in training"),
        ("range 1", 90.0, 41.5, None, "above every value seen in training"),
        ("range 1", math.nan, 41.5, None, "outside the range of values seen in training"),
        ("structure 154", 3.0, 3.1, 10, "the pattern that usually repeats every 25m 40s is missing"),
        ("structure 154", 3.0, 3.1, None, "the pattern that usually repeats is missing"),
        ("shape 32", 0.0, 41.5, 10, "a 5m 20s stretch unlike every normal shape, lower than typical"),
        ("shape 32", 60.0, 41.5, 10, "a 5m 20s stretch unlike every normal shape, higher than typical"),
        ("shape 154", 41.0, 41.5, 60, "a 2h 34m stretch unlike every normal shape, at the typical level"),
        ("shape 32", None, None, None, "a stretch unlike every normal shape"),
        ("something new 3", 1.0, 2.0, 10, ""),
        (None, 1.0, 2.0, 10, ""),
        (float("nan"), 1.0, 2.0, 10, ""),
    ],
)
def test_each_view_reads_as_a_phrase(scale, actual, typical, step_s, text) -> None:
    assert looks_like(scale, actual, typical, step_s) == text


def test_specific_views_that_also_crossed_the_bar_are_said_first() -> None:
    """A zeroed hour fires the shape view hardest, but what a person needs is that the
    values fell below anything seen, went flat and lost their period; a view under the
    detector's bar (surprise 5) is not said; an unreadable views text is ignored."""
    views = "shape 32 584.8, shape 154 300, structure 154 40, range 1 30, noise 32 20"
    assert looks_like("shape 32", 19.0, 72.4, 10, views) == (
        "below every value seen in training; too regular, as if stuck or frozen: the usual "
        "noise is gone; the pattern that usually repeats every 25m 40s is missing")
    # a spike: its mean over the event stays at the typical level
    assert looks_like("shape 32", 41.3, 41.1, 10, "shape 32 200, range 1 30, noise 32 1.4") == (
        "outside the range of values seen in training")
    assert looks_like("shape 32", 23.8, 23.7, 10, "shape 32 35, noise 32 4.9, range 1 0") == (
        "a 5m 20s stretch unlike every normal shape, at the typical level")
    assert looks_like("shape 32", 23.8, 23.7, 10, "not, a views text") == (
        "a 5m 20s stretch unlike every normal shape, at the typical level")


def test_alert_lines_say_what_a_waveform_event_looks_like_and_points_keep_their_field() -> None:
    from types import SimpleNamespace

    from cricket.alerts import alert_events

    t0 = pd.Timestamp("2026-12-01T10:00:00Z")
    waveform = pd.DataFrame({"start": [t0], "end": [t0 + pd.Timedelta("30min")], "peak": [99.0],
                             "severity": [12.0], "scale": ["range 1"], "actual": [0.0],
                             "typical": [41.5]})
    point = waveform.drop(columns=["scale"]).assign(contributor=["power"])
    events = alert_events([SimpleNamespace(key="waveform.value{host=a}", events=waveform),
                           SimpleNamespace(key="psu.load+power{host=b}", events=point)])
    assert [e.detail for e in events] == ["below every value seen in training", "field power"]
