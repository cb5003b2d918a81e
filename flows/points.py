"""The point model's pipeline: several fields of one device judged together.

Retrain: the point model is a part of the waveform model's versions. The nightly retrain
(``cricket.flows.retrain``) given a point selector calls :func:`point_part` here: read
the selector's fields aligned per device over the same train window -> keep stretches
people labelled as anomalies out -> fit one point model per device on all but the
held-out tail. The version it registers holds both, and is promoted as a whole.
Score (hourly; a backfill is the same over any range): load the point part of the
champion -> read the window -> score each device -> write cricket_score/cricket_event
(the contributing field named) -> announce new incidents (alerts, once per problem) ->
write the report (each event's point against its nearest centroid) -> publish the
Prefect artifacts and the MLflow scoring run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
from cricket.flows.runtime import run_name, scheduled_time, task_runner
from cricket.tasks.alert import alert_window
from cricket.tasks.points import (
    load_point_model,
    publish_point_run,
    read_points,
    score_points,
    train_points,
    write_points,
)
from cricket.tasks.publish import write_missing
from prefect import flow, get_run_logger

from cricket.config import Settings
from cricket.errors import CricketValueError
from cricket.feedback import Label
from cricket.missing import MissingData, expected_points, find_missing
from cricket.multifield import PointBundle, PointSelector, PointSpec
from cricket.report import Report, report_filename
from cricket.report_points import write_report
from cricket.series import SeriesKey
from cricket.windows import TrainingWindow, floor_time, utc


@dataclass
class PointPart:
    """The point model of a retrain, and the held-out tail it is judged on."""

    bundle: PointBundle
    holdout: dict[SeriesKey, pd.DataFrame]
    skipped: dict[str, str] = field(default_factory=dict)
    labelled_out: int = 0  # rows kept out of training: people labelled them anomalies
    labelled: list[tuple[SeriesKey, pd.DataFrame]] = field(default_factory=list)
    learnt_normal: int = 0  # centroids added for rows people labelled normal


def labelled_stretches(
    frames: dict[SeriesKey, pd.DataFrame], labels: Sequence[Label], label: str = "anomaly"
) -> list[tuple[SeriesKey, pd.DataFrame]]:
    """(device, its rows in the stretch) for every stretch labelled ``label`` on a device
    of ``frames`` with data there: the anomalies every challenger must still find, or the
    normal rows it must learn."""
    out = []
    for lab in labels:
        for key, frame in frames.items():
            if lab.label == label and lab.series == str(key):
                rows = frame[(frame.index >= lab.start) & (frame.index <= lab.end)]
                if len(rows):
                    out.append((key, rows))
    return out


def without_labelled(
    frames: dict[SeriesKey, pd.DataFrame], labels: Sequence[Label], label: str = "anomaly"
) -> tuple[dict[SeriesKey, pd.DataFrame], int]:
    """The frames with every row inside a stretch labelled ``label`` on that device's key
    dropped (an anomaly is not learnt as normal; a labelled-normal stretch does not move
    the threshold, it is learnt afterwards); and how many rows."""
    out, dropped = {}, 0
    for key, frame in frames.items():
        keep = pd.Series(True, index=frame.index)
        for lab in labels:
            if lab.label == label and lab.series == str(key):
                keep &= ~((frame.index >= lab.start) & (frame.index <= lab.end))
        dropped += int((~keep).sum())
        out[key] = frame[keep.to_numpy()]
    return out, dropped


def point_part(
    settings: Settings, selector: PointSelector, spec: PointSpec, window: TrainingWindow,
    labels: Sequence[Label] = (),
) -> PointPart:
    """Train the point model over the retrain's window (must run inside a flow)."""
    frames = read_points(settings, selector, window.start, window.end)
    if not frames:
        raise CricketValueError(
            f"no device reports {selector.measurement} fields {selector.fields} in "
            f"{settings.influx_database} between {window.start} and {window.end}: write data "
            "or fix the point selector"
        )
    split = pd.Timestamp(window.holdout_start)
    train, dropped = without_labelled(
        {k: f[f.index < split] for k, f in frames.items()}, labels, "anomaly"
    )
    train, _ = without_labelled(train, labels, "normal")
    tail = {k: f[f.index >= split] for k, f in frames.items()}
    bundle, skipped = train_points(selector, spec, train)
    # people said these are normal for the device: learnt as centroids of their own
    learnt = bundle.learn_normal(labelled_stretches(frames, labels, "normal"))
    return PointPart(bundle, tail, skipped, dropped, labelled_stretches(frames, labels),
                     learnt_normal=learnt)


def missing_devices(bundle: PointBundle, frames: dict[SeriesKey, pd.DataFrame],
                    start: datetime, end: datetime) -> list[MissingData]:
    """The devices the point model knows that sent no row (or under half the rows the
    window should hold, a row counting when any field is present) in [start, end)."""
    received = {str(k): int(f.notna().any(axis=1).sum()) for k, f in frames.items()}
    expected = expected_points(start, end, bundle.selector.every)
    return find_missing((str(k) for k in bundle.models), received, expected)


def _score(start: datetime, end: datetime, version: str | None, kind: str,
           page: bool) -> dict:
    settings = Settings()
    bundle, resolved = load_point_model(settings, version)
    frames = read_points(settings, bundle.selector, start, end)
    results = score_points(bundle, frames)
    written = write_points(settings, results, resolved)
    missing = missing_devices(bundle, frames, start, end)
    if missing:
        written["data_missing"] = write_missing(settings, missing, resolved, start, end)
        get_run_logger().warning("%d device(s) sent no data or far less than expected: %s",
                                 len(missing), "; ".join(m.describe() for m in missing[:10]))
    name = f"points-{kind}-{start:%Y%m%dT%H%M}-v{resolved}.html"
    link = (settings.alert_report_url.rstrip("/") + "/" + name if settings.alert_report_url
            else (settings.reports_path / name).absolute().as_uri())
    alerts = alert_window(settings, results, start, end, resolved, link, page=page,
                          missing=missing)
    # the waveform run of the same window and version writes its report under this name
    waveform = report_filename(Report(title="", kind=kind, window_start=start,  # type: ignore[arg-type]
                                      window_end=end, model_name=settings.model_name,
                                      model_version=resolved))
    report = write_report(results, settings.reports_path, name,
                          f"Point anomalies {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
                          resolved, alerts["incidents"], alerts["answers"], waveform,
                          missing=[m.describe() for m in missing])
    published = publish_point_run(settings, results, report, resolved, f"points-{kind}",
                                  start, end)
    events = [
        {"device": str(r.key), "start": e["start"].isoformat(), "end": e["end"].isoformat(),
         "peak": float(e["peak"]), "contributor": e["contributor"]}
        for r in results for _, e in r.events.iterrows()
    ]
    return {"model_version": resolved, "devices": len(results), "events": events,
            "written": written, "report": str(report), "artifacts": published,
            "mlflow_run": published["mlflow_run"], "alerts": alerts,
            "data_missing": [m.describe() for m in missing],
            "window_start": start.isoformat(), "window_end": end.isoformat()}


@flow(
    name="points-score",
    flow_run_name=run_name("points-score"),
    log_prints=True,
    task_runner=task_runner(),
)
def points_score(
    window: timedelta = timedelta(hours=1), end: datetime | None = None,
    model_version: str | None = None,
) -> dict:
    """Score the last complete ``window`` (ending at ``end``, default the scheduled time
    floored to the window) with the point part of the champion (or ``model_version``),
    and announce new incidents."""
    end = utc(end) if end is not None else floor_time(scheduled_time(), window)
    return _score(end - window, end, model_version, "score", page=True)


@flow(
    name="points-backfill",
    flow_run_name=run_name("points-backfill"),
    log_prints=True,
    task_runner=task_runner(),
)
def points_backfill(
    start: datetime, end: datetime, model_version: str | None = None, alert: bool = False,
) -> dict:
    """Score [start, end) with the point part of the champion (or ``model_version``).
    Like the waveform backfill, it announces no incident unless ``alert``."""
    start, end = utc(start), utc(end)
    if not start < end:
        raise CricketValueError(f"start ({start}) must be before end ({end})")
    return _score(start, end, model_version, "backfill", page=alert)
