"""The point model's pipeline: several fields of one device judged together.

Retrain (nightly): read the selector's fields aligned per device over the train window
-> fit one point model per device on all but the held-out tail -> register a version of
``<model_name>-points`` -> evaluate it and the champion on the same tail and promote it
when it is not worse. Score (hourly; a backfill is the same over any range): load the
champion -> read the window -> score each device -> write cricket_score/cricket_event
(the contributing field named) -> write the report (each event's point against its
nearest centroid).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cricket.flows.runtime import run_name, scheduled_time, task_runner
from cricket.tasks.points import (
    load_point_model,
    publish_point_artifacts,
    read_points,
    register_and_promote_points,
    score_points,
    train_points,
    write_points,
)
from prefect import flow, get_run_logger

from cricket.config import Settings
from cricket.errors import CricketValueError
from cricket.multifield import PointSelector, PointSpec
from cricket.report_points import write_report
from cricket.windows import floor_time, utc


@flow(
    name="points-retrain",
    flow_run_name=run_name("points-retrain"),
    log_prints=True,
    task_runner=task_runner(),
)
def points_retrain(
    selector: PointSelector = PointSelector(),
    spec: PointSpec = PointSpec(),
    train_window: timedelta = timedelta(days=7),
    holdout: timedelta = timedelta(hours=24),
    end: datetime | None = None,
) -> dict:
    """Train one point model per device over ``train_window`` ending at ``end`` (default:
    the scheduled time floored to the hour), hold ``holdout`` back for the promotion."""
    settings = Settings()
    end = utc(end) if end is not None else floor_time(scheduled_time(), timedelta(hours=1))
    if not timedelta(0) < holdout < train_window:
        raise CricketValueError(
            f"holdout ({holdout}) must be positive and shorter than train_window ({train_window})"
        )
    start, split = end - train_window, end - holdout
    frames = read_points(settings, selector, start, end)
    if not frames:
        raise CricketValueError(
            f"no device reports {selector.measurement} fields {selector.fields} in "
            f"{settings.influx_database} between {start} and {end}: write data or fix the selector"
        )
    train = {k: f[f.index < split] for k, f in frames.items()}
    tail = {k: f[f.index >= split] for k, f in frames.items()}
    bundle, skipped = train_points(selector, spec, train)
    params = {"selector": selector.model_dump_json(), "spec": spec.model_dump_json(),
              "train_from": start.isoformat(), "train_to": split.isoformat(),
              "holdout": str(holdout)}
    decision = register_and_promote_points(settings, bundle, params, tail)
    get_run_logger().info("point model: %d device(s), %d skipped; %s", len(bundle.models),
                          len(skipped), decision["reason"])
    return {"model_version": decision["version"], "devices": len(bundle.models),
            "skipped": skipped, "promoted": decision["promote"], "decision": decision["reason"],
            "false_alarms": decision["false_alarms"]}


def _score(start: datetime, end: datetime, version: str | None, kind: str) -> dict:
    settings = Settings()
    bundle, resolved = load_point_model(settings, version)
    frames = read_points(settings, bundle.selector, start, end)
    results = score_points(bundle, frames)
    written = write_points(settings, results, resolved)
    name = f"points-{kind}-{start:%Y%m%dT%H%M}-v{resolved}.html"
    report = write_report(results, settings.reports_path, name,
                          f"Point anomalies {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
                          resolved)
    artifact = publish_point_artifacts(results, resolved, kind)
    events = [
        {"device": str(r.key), "start": e["start"].isoformat(), "end": e["end"].isoformat(),
         "peak": float(e["peak"]), "contributor": e["contributor"]}
        for r in results for _, e in r.events.iterrows()
    ]
    return {"model_version": resolved, "devices": len(results), "events": events,
            "written": written, "report": str(report), "artifact": artifact, "window_start": start.isoformat(),
            "window_end": end.isoformat()}


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
    floored to the window) with the champion point model (or ``model_version``)."""
    end = utc(end) if end is not None else floor_time(scheduled_time(), window)
    return _score(end - window, end, model_version, "score")


@flow(
    name="points-backfill",
    flow_run_name=run_name("points-backfill"),
    log_prints=True,
    task_runner=task_runner(),
)
def points_backfill(start: datetime, end: datetime, model_version: str | None = None) -> dict:
    """Score [start, end) with the champion point model (or ``model_version``)."""
    start, end = utc(start), utc(end)
    if not start < end:
        raise CricketValueError(f"start ({start}) must be before end ({end})")
    return _score(start, end, model_version, "backfill")
