"""Alerts end to end: real influxd, Prefect's test harness server (its event and
automation services run), an MLflow SQLite store and a real HTTP receiver on a loopback
port. Nothing is mocked.

The fleet: four hosts in two data centres (tag ``dc``), trained once. In the scored
hours: hosts 1 and 2 (dc=a) fail together (one incident), host 3 (dc=b) has an anomaly
that runs across an hour boundary (one incident over two hourly runs), host 4 (dc=b)
fails later, inside a maintenance window in the hourly test.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from fixtures.influx import settings_for
from fixtures.pipeline import apply_env
from receiver_support import Receiver

from cricket.config import DetectorSpec, SeriesSelector
from cricket.influx.influxql import InfluxQLClient
from cricket.series import SeriesKey
from cricket.synth import make_fleet, write_fleet

pytestmark = pytest.mark.slow

SELECTOR = SeriesSelector(measurement="waveform", field="value", group_by=["dc", "host"])
SPEC = DetectorSpec(n_clusters=32)
END = pd.Timestamp("2026-11-20T00:00:00Z")
SCORED_HOURS = 6
FIRST = END - pd.Timedelta(hours=SCORED_HOURS)
DCS = {"cricket001": "a", "cricket002": "a", "cricket003": "b", "cricket004": "b"}
#: (host, kind, start, end): the problems, as offsets into the scored hours
PROBLEMS = [
    ("cricket001", "level", FIRST + pd.Timedelta("1h20min"), FIRST + pd.Timedelta("1h40min")),
    ("cricket002", "level", FIRST + pd.Timedelta("1h25min"), FIRST + pd.Timedelta("1h45min")),
    ("cricket003", "level", FIRST + pd.Timedelta("2h50min"), FIRST + pd.Timedelta("3h15min")),
    ("cricket004", "zeroed", FIRST + pd.Timedelta("4h10min"), FIRST + pd.Timedelta("4h25min")),
]
EXPECTED_GROUPS = 3  # {001, 002}, {003}, {004}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def fleet_with_problems():
    fleet = make_fleet(hosts=4, days=1, step="10s", start=END - pd.Timedelta(days=1), seed=5,
                       anomalies=False)
    out = {}
    for key, s in fleet.series.items():
        host = key.tag_dict["host"]
        v = s.copy()
        for h, kind, a, b in PROBLEMS:
            if h != host:
                continue
            inside = (v.index >= a) & (v.index < b)
            if kind == "level":
                v[inside] += 3 * (s.max() - s.min())
            else:
                v[inside] = 0.0
        out[SeriesKey.make("waveform", "value", {"host": host, "dc": DCS[host]})] = v
    fleet.series = out
    return fleet


@pytest.fixture(scope="module")
def trained(influx_server, tmp_path_factory, prefect_api):
    tmp = tmp_path_factory.mktemp("alerts")
    db = f"alert_{uuid.uuid4().hex[:10]}"
    settings = settings_for(
        influx_server, db, tmp,
        mlflow_tracking_uri=f"sqlite:///{(tmp / 'mlflow.db').absolute()}",
        model_name="cricket-alerts-test", report_dir=tmp / "reports", batch_size=4,
    )
    with InfluxQLClient(settings) as client:
        client.ensure_database(db)
    write_fleet(fleet_with_problems(), settings)
    mp = pytest.MonkeyPatch()
    apply_env(mp, settings)
    from cricket.flows.retrain import nightly_retrain

    nightly_retrain(
        selector=SELECTOR, spec=SPEC, train_window=timedelta(hours=18),
        holdout=timedelta(hours=4), end=FIRST.to_pydatetime(), min_history_points=500,
    )
    mp.undo()
    yield settings


def own_scores(trained, monkeypatch, receiver, name: str, **env: str):
    """Point the flows at the trained data, with scores, events and the alert state in a
    database of this test's own."""
    score_db = f"{name}_{uuid.uuid4().hex[:8]}"
    settings = trained.model_copy(update={"influx_score_database": score_db})
    apply_env(monkeypatch, settings)
    monkeypatch.setenv("CRICKET_INFLUX_SCORE_DATABASE", score_db)
    monkeypatch.setenv("CRICKET_ALERT_GROUP_BY", "dc")
    monkeypatch.setenv("CRICKET_ALERT_WEBHOOK_URL", receiver.url + "/direct")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with InfluxQLClient(settings) as client:
        client.ensure_database(score_db)
    return settings


def prefect_events(name: str, since: pd.Timestamp) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(
            EventFilter(event=EventNameFilter(name=[name]),
                        occurred=EventOccurredFilter(since=since.to_pydatetime())),
            limit=50,
        )
    return list(page.events)


def wait_for(predicate, timeout: float = 60.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


def test_hourly_runs_announce_each_incident_once_through_the_webhook_and_prefect(
    trained, receiver, monkeypatch
):
    from cricket.deployments.automation import remove_alerts, setup_alerts
    from cricket.flows.score import hourly_score

    from cricket.alerts import Silence
    from cricket.influx.answers import AnswerStore

    settings = own_scores(trained, monkeypatch, receiver, "hourly")
    # the Prefect route: an automation sending to a custom-webhook block (set up twice:
    # the second run updates the same automation)
    first = setup_alerts(webhook_url=receiver.url + "/prefect")
    again = setup_alerts(webhook_url=receiver.url + "/prefect")
    assert first["created"] and not again["created"]
    assert first["automation"] == again["automation"]
    # host 4 is in maintenance when it fails
    with AnswerStore(settings) as store:
        store.save_silence(Silence(
            id="maint1", start=FIRST + pd.Timedelta("4h"), end=FIRST + pd.Timedelta("5h"),
            reason="disk swap", by="ops", created=pd.Timestamp.now(tz="UTC"),
            series="waveform.value{dc=b,host=cricket004}",
        ))
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=5)
    try:
        summaries = []
        for h in range(1, SCORED_HOURS + 1):
            summaries.append(hourly_score(selector=SELECTOR, at=(FIRST + pd.Timedelta(hours=h)).to_pydatetime()))
        direct = receiver.posts("/direct")
        # exactly one notification per incident: the pair in dc=a, and host 3 (whose
        # anomaly runs across an hour); host 4 is silenced
        assert len(direct) == 2, [d["title"] for d in direct]
        pair = next(d for d in direct if d["group"] == "dc=a")
        assert sorted(pair["series"]) == [
            "waveform.value{dc=a,host=cricket001}", "waveform.value{dc=a,host=cricket002}"]
        sev = [m["severity"] for m in pair["members"]]
        assert sev == sorted(sev, reverse=True)
        assert pair["model_version"] and pair["report"].endswith(".html")
        single = next(d for d in direct if d["group"] == "dc=b")
        assert single["series"] == ["waveform.value{dc=b,host=cricket003}"]
        assert sum(s["alerts"]["silenced"] for s in summaries) == 1
        assert sum(s["alerts"]["opened"] for s in summaries) == 2
        # the silence shows in the run summary of the hour it covers
        assert any(r["what"] == "silence" for r in summaries[4]["alerts"]["answers"])
        html = open(summaries[4]["report"], encoding="utf-8").read()
        assert "disk swap" in html
        # the Prefect events: one opened per incident, with the series as related resources
        assert wait_for(lambda: len(prefect_events("cricket.anomaly.opened", since)) >= 2, 30)
        opened = prefect_events("cricket.anomaly.opened", since)
        assert len({e.resource.id for e in opened}) == 2
        roles = {r.role for e in opened for r in e.related}
        assert {"series", "model"} <= roles
        # events reach the API asynchronously (Prefect's event client): wait for them too
        assert wait_for(lambda: len(prefect_events("cricket.anomaly.closed", since)) >= 2, 30)
        # the automation turned each opened event into one notification
        assert wait_for(lambda: len(receiver.posts("/prefect")) >= 2, 60), receiver.received
        assert all("Cricket" in p.get("subject", "") for p in receiver.posts("/prefect"))

        # a re-run of every hour says nothing new
        for h in range(1, SCORED_HOURS + 1):
            again = hourly_score(selector=SELECTOR, at=(FIRST + pd.Timedelta(hours=h)).to_pydatetime())
            assert again["alerts"]["opened"] == 0
        time.sleep(3)
        assert len(receiver.posts("/direct")) == 2
        assert len(receiver.posts("/prefect")) == 2
        assert len({e.resource.id for e in prefect_events("cricket.anomaly.opened", since)}) == 2
    finally:
        remove_alerts()


def test_a_plain_backfill_pages_nobody_and_one_with_alert_once_per_incident(
    trained, receiver, monkeypatch
):
    from cricket.flows.backfill import backfill

    from cricket.influx.answers import AnswerStore

    settings = own_scores(trained, monkeypatch, receiver, "backfill")
    start, end = FIRST.to_pydatetime(), END.to_pydatetime()
    plain = backfill(start=start, end=end, selector=SELECTOR)
    assert plain["events"] >= 4
    assert receiver.posts("/direct") == []
    assert plain["alerts"]["paged"] is False
    with AnswerStore(settings) as store:
        assert store.incidents(FIRST - pd.Timedelta(days=1), END) == []
    loud = backfill(start=start, end=end, selector=SELECTOR, redo=True, alert=True)
    # no silence here: all three problems are announced, once each
    assert loud["alerts"]["opened"] == EXPECTED_GROUPS
    assert len(receiver.posts("/direct")) == EXPECTED_GROUPS
    again = backfill(start=start, end=end, selector=SELECTOR, redo=True, alert=True)
    assert again["alerts"]["opened"] == 0
    assert len(receiver.posts("/direct")) == EXPECTED_GROUPS
    with AnswerStore(settings) as store:
        kept = store.incidents(FIRST - pd.Timedelta(days=1), END)
    assert len(kept) == EXPECTED_GROUPS and all(i.notified for i in kept)
    assert np.all([i.state == "closed" for i in kept])


def test_an_incident_of_thousands_of_series_still_emits_its_prefect_event(prefect_api):
    """Prefect refuses an event over 1.5 MB: a fleet-wide incident (5,080 series, seen at
    10,000 series scored) failed the hourly run after every score was written. The event
    names the most severe members and counts the rest; the webhook document keeps all."""
    import json

    from cricket.tasks.alert import EVENT_MEMBERS, prefect_event

    from cricket.alerts import OPENED, AlertEvent, group_incidents, notification

    t0 = pd.Timestamp("2026-11-19T22:00:00Z")
    events = [
        AlertEvent(series=f"waveform.value{{dc=a,host=cricket{i:05d}}}", start=t0,
                   end=t0 + pd.Timedelta("30min"), severity=float(i % 997), score=90.0,
                   tags=(("dc", "a"), ("host", f"cricket{i:05d}")))
        for i in range(8000)  # ~2 MB of members, as 5,080 real ones with details made
    ]
    [incident] = group_incidents(events, ["dc"], timedelta(minutes=5))
    doc = notification(incident, OPENED, "cricket-waveform", "3", "file:///tmp/r.html")
    assert len(json.dumps(doc)) > 1_500_000 and len(doc["members"]) == 8000
    event = prefect_event(incident, OPENED, doc)
    assert event is not None
    assert len(event.payload["members"]) == len(event.payload["series"]) == EVENT_MEMBERS
    assert event.payload["members_total"] == event.payload["series_total"] == 8000
    assert event.payload["members"] == doc["members"][:EVENT_MEMBERS]  # the most severe
    assert [m["severity"] for m in event.payload["members"]][0] == 996.0
