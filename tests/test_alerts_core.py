"""Incidents and once-per-problem planning (cricket.alerts): the rules on small cases."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from cricket.alerts import (
    AlertEvent,
    Incident,
    Silence,
    group_incidents,
    notification,
    plan_alerts,
)

T = pd.Timestamp("2026-11-20T10:00:00Z")
SLACK = timedelta(minutes=5)


def ev(host: str, dc: str, start_min: float, end_min: float, severity: float = 60.0) -> AlertEvent:
    return AlertEvent(
        series=f"waveform.value{{dc={dc},host={host}}}",
        start=T + pd.Timedelta(minutes=start_min),
        end=T + pd.Timedelta(minutes=end_min),
        severity=severity, score=severity, tags=(("dc", dc), ("host", host)),
    )


def test_events_overlapping_in_time_and_sharing_the_tag_are_one_incident():
    events = [
        ev("h1", "a", 0, 10, 70), ev("h2", "a", 12, 20, 90),  # 2 min apart: joins
        ev("h3", "b", 5, 8),                                   # other dc
        ev("h4", "a", 40, 45),                                 # dc a, much later
    ]
    incidents = group_incidents(events, ["dc"], SLACK)
    groups = sorted((i.group, sorted(m.series[-3:-1] for m in i.members)) for i in incidents)
    assert groups == [("dc=a", ["h1", "h2"]), ("dc=a", ["h4"]), ("dc=b", ["h3"])]
    pair = next(i for i in incidents if len(i.members) == 2)
    assert [m.severity for m in pair.members] == [90, 70]  # by severity
    # no grouping tag: the whole fleet is one group, so h3 joins the first incident
    assert len(group_incidents(events, [], SLACK)) == 2
    # per series: four incidents
    assert len(group_incidents(events, ["series"], SLACK)) == 4


def test_the_same_events_again_and_a_continuing_event_announce_nothing():
    first = plan_alerts([ev("h1", "a", 0, 59.9)], [], [], ["dc"], SLACK, T + pd.Timedelta(hours=1))
    assert len(first.opened) == 1 and not first.closed
    known = [Incident.from_record(i.to_record()) for i in first.changed]
    rerun = plan_alerts([ev("h1", "a", 0, 59.9)], known, [], ["dc"], SLACK, T + pd.Timedelta(hours=1))
    assert rerun.opened == [] and rerun.repeated == 1
    # the next hour: the event continues (same start, later end), and h2 in the same dc
    known = [Incident.from_record(i.to_record()) for i in first.changed]
    nxt = plan_alerts([ev("h1", "a", 0, 75), ev("h2", "a", 60, 70)], known, [], ["dc"], SLACK,
                      T + pd.Timedelta(hours=2))
    assert nxt.opened == []
    assert [len(i.members) for i in nxt.grown] == [2]
    assert [i.id for i in nxt.closed] == [first.opened[0].id]  # ended 45 min before the window end


def test_a_silence_keeps_an_incident_quiet_but_not_others():
    s = Silence(id="s1", start=T, end=T + pd.Timedelta(hours=1), reason="maintenance", by="ops",
                created=T, series="*host=h1}")
    plan = plan_alerts([ev("h1", "a", 5, 10), ev("h3", "b", 5, 10)], [], [s], ["dc"], SLACK,
                       T + pd.Timedelta(hours=1))
    assert [i.group for i in plan.opened] == ["dc=b"]
    assert [i.group for i in plan.silenced] == ["dc=a"]
    assert plan.closed_quietly and all(i.silenced for i in plan.closed_quietly)
    doc = notification(plan.opened[0], "cricket.anomaly.opened", "m", "3", "file:///r.html")
    assert doc["series"] == ["waveform.value{dc=b,host=h3}"] and "h3" in doc["text"]
    # the on-call can answer it as printed (cricket feedback takes the reference)
    from cricket.feedback import parse_event_ref

    (ref,) = [m["ref"] for m in doc["members"]]
    assert f"answer: cricket feedback normal|anomaly '{ref}'" in doc["text"]
    assert parse_event_ref(ref) == ("waveform.value{dc=b,host=h3}", T + pd.Timedelta(minutes=5))


def test_a_webhook_that_does_not_answer_fails_clearly_without_showing_its_url():
    import socket

    import pytest

    from cricket.webhook import AlertDeliveryError, post_json

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks/T0-SECRET-TOKEN"
    with pytest.raises(AlertDeliveryError) as info:
        post_json(url, {"x": 1}, timeout_s=1, retries=1, backoff_s=0.01)
    assert "SECRET" not in str(info.value) and "did not answer after 2 attempts" in str(info.value)


def test_a_series_silent_for_hours_is_one_data_missing_incident():
    from dataclasses import dataclass

    from cricket.alerts import missing_data_events

    @dataclass
    class Missing:
        key: str
        severity: float = 100.0

    def hour(h: int):
        a = T + pd.Timedelta(hours=h)
        return missing_data_events([Missing("waveform.value{dc=a,host=h9}")], a,
                                   a + pd.Timedelta(hours=1), lambda k: {"dc": "a", "host": "h9"})

    first = plan_alerts(hour(0), [], [], ["dc"], SLACK, T + pd.Timedelta(hours=1))
    assert len(first.opened) == 1 and first.opened[0].members[0].kind == "data_missing"
    assert "data_missing" in first.opened[0].title
    known = [Incident.from_record(i.to_record()) for i in first.changed]
    second = plan_alerts(hour(1), known, [], ["dc"], SLACK, T + pd.Timedelta(hours=2))
    assert second.opened == [] and len(second.grown) == 1
