"""The demo: the whole pipeline on a synthetic cricket fleet, against a local InfluxDB.

The story: write a few days of the fleet (anomalies in the last hours) -> nightly
retrain on the days before the anomalies -> a short backfill over the hours since ->
hourly score of the latest hour -> compare events found with anomalies injected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd
from cricket.flows.backfill import backfill
from cricket.flows.retrain import nightly_retrain
from cricket.flows.score import hourly_score
from prefect import flow, get_run_logger

from cricket.config import DetectorSpec, SeriesSelector, Settings
from cricket.feedback import event_ref
from cricket.influx.influxql import InfluxQLClient, InfluxQLSource, quote_ident
from cricket.synth import Fleet, make_fleet, write_fleet


@dataclass
class Match:
    """Events found vs anomalies injected."""

    found: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false_events: list[str] = field(default_factory=list)
    #: each found anomaly's first event as ``cricket feedback`` takes it (SERIES@START)
    refs: list[str] = field(default_factory=list)


def match_events(
    fleet: Fleet, events: pd.DataFrame, slack: pd.Timedelta = pd.Timedelta(0)
) -> Match:
    """An injected anomaly is found when an event of the same series overlaps it (the
    event's settled extent, first to last anomalous step, meets the anomaly's
    ``[start, end)``; the demo gives no ``slack``); an event that overlaps no injected
    anomaly is a false event."""
    out = Match()
    used = set()
    for a in fleet.truth:
        key = str(a.key)
        hit = False
        if not events.empty:
            ev = events[events["series"] == key]
            for i, row in ev.sort_values("start").iterrows():
                if row["start"] < a.end + slack and row["end"] >= a.start - slack:
                    if not hit:
                        out.refs.append(event_ref(key, row["start"]))
                    hit = True
                    used.add(i)
        label = f"{a.kind} on {key} at {a.start:%Y-%m-%d %H:%M}"
        (out.found if hit else out.missed).append(label)
    if not events.empty:
        for i, row in events.iterrows():
            if i not in used:
                out.false_events.append(f"{row['series']} at {row['start']:%Y-%m-%d %H:%M}")
    return out


def read_all_events(settings: Settings, start: pd.Timestamp, end: pd.Timestamp, version: str) -> pd.DataFrame:
    selector = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
    with InfluxQLSource(settings) as src:
        ev = src.read_events(selector, start, end, model_version=version)
    if ev.empty:
        return pd.DataFrame(columns=["series", "start", "end"])
    return ev.reset_index(drop=True)


@flow(name="demo", log_prints=True)
def demo(
    hosts: int = 12,
    days: float = 3.0,
    anomaly_hours: int = 12,
    n_clusters: int | None = None,
    seed: int = 7,
    reset_database: bool = True,
) -> dict:
    """Write a synthetic fleet, retrain, backfill the hours since training, score the
    latest hour, and report events found against anomalies injected. ``n_clusters``
    None: the ``DetectorSpec`` default."""
    log = get_run_logger()
    settings = Settings()
    t0 = time.perf_counter()
    end = pd.Timestamp.now(tz="UTC").floor("h")
    start = end - pd.Timedelta(days=days)
    anomalies_from = end - pd.Timedelta(hours=anomaly_hours)
    fleet = make_fleet(
        hosts=hosts, days=days, step="10s", start=start, seed=seed,
        anomaly_window=(anomalies_from, end),
    )
    with InfluxQLClient(settings) as client:
        # Fresh data each run: the demo can be run again and again. On the project's own
        # influxd the whole database is recreated; on a server of yours only what the
        # demo writes (the synthetic fleet and Cricket's results) is removed.
        if reset_database:
            client.drop_database(settings.influx_database)
        else:
            client.ensure_database(settings.influx_database)
            for measurement in ("waveform", "cricket_score", "cricket_event", "cricket_chunk"):
                client.query(f"DROP MEASUREMENT {quote_ident(measurement)}", method="POST")
        client.ensure_database(settings.influx_database)
    points = write_fleet(fleet, settings)
    log.info("wrote %d points of %d series", points, len(fleet.series))
    t_write = time.perf_counter()

    selector = SeriesSelector(measurement="waveform", field="value", group_by=["host"])
    spec = DetectorSpec() if n_clusters is None else DetectorSpec(n_clusters=n_clusters)
    holdout = pd.Timedelta(hours=min(12, days * 24 / 4)).to_pytimedelta()
    trained = nightly_retrain(
        selector=selector,
        spec=spec,
        train_window=(anomalies_from - start).to_pytimedelta(),
        holdout=holdout,
        end=anomalies_from.to_pydatetime(),
    )
    version = trained["model_version"]
    t_train = time.perf_counter()
    # Hours are scored in order, as in production: the backfill catches up on the hours
    # since training, then the hourly run scores the latest one (an event that runs on
    # across the hour continues the one before it).
    filled = backfill(
        start=anomalies_from.to_pydatetime(),
        end=(end - pd.Timedelta(hours=1)).to_pydatetime(),
        model_version=version,
        selector=selector,
    )
    t_backfill = time.perf_counter()
    scored = hourly_score(selector=selector, at=end.to_pydatetime(), model_version=version)
    t_score = time.perf_counter()
    events = read_all_events(settings, anomalies_from, end, version)
    match = match_events(fleet, events)
    return {
        "series": len(fleet.series),
        "points_written": points,
        "injected": len(fleet.truth),
        "found": match.found,
        "found_refs": match.refs,
        "missed": match.missed,
        "false_events": match.false_events,
        "events": int(len(events)),
        "model_version": version,
        "promoted": trained["promoted"],
        "decision": trained["decision"],
        "report": filled.get("report"),
        "hourly_report": scored.get("report"),
        "scored_window": [scored["window_start"], scored["window_end"]],
        "backfill": {"chunks": filled["chunks"], "scored": filled["scored"]},
        "backfill_range": [filled["start"], filled["end"]],
        "data_missing": len(filled.get("data_missing", [])) + len(scored.get("data_missing", [])),
        "seconds": {
            "write": round(t_write - t0, 1),
            "retrain": round(t_train - t_write, 1),
            "backfill": round(t_backfill - t_train, 1),
            "score": round(t_score - t_backfill, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
    }


__all__ = ["demo", "match_events", "timedelta"]
