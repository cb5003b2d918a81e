"""Prefect tasks for the point model: thin wrappers over cricket.multifield, the point
I/O (cricket.influx.points) and its registry (cricket.point_registry)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd
from cricket.tasks.common import CPU_TASK, IO_TASK
from prefect import get_run_logger, task

from cricket.config import Settings
from cricket.influx import make_sink, make_source
from cricket.influx.points import read_point_frames, write_point_results
from cricket.multifield import (
    PointBundle,
    PointSelector,
    PointSpec,
    decide_point_promotion,
    held_out_false_alarms,
    point_events,
)
from cricket.point_registry import (
    load_points,
    log_and_register_points,
    point_model_name,
    point_registry,
    set_point_champion,
)
from cricket.report_points import DeviceResult, markdown_summary
from cricket.series import SeriesKey


@task(name="read-point-frames", timeout_seconds=600, **IO_TASK)
def read_points(
    settings: Settings, selector: PointSelector, start: datetime, stop: datetime
) -> dict[SeriesKey, pd.DataFrame]:
    source = make_source(settings)
    try:
        frames = read_point_frames(source, selector, start, stop)
    finally:
        source.close()
    get_run_logger().info("read %d device(s) x %d field(s) of %s", len(frames),
                          len(selector.fields), selector.measurement)
    return frames


@task(name="train-points", timeout_seconds=1800, **CPU_TASK)
def train_points(
    selector: PointSelector, spec: PointSpec, frames: Mapping[SeriesKey, pd.DataFrame]
) -> tuple[PointBundle, dict[str, str]]:
    return PointBundle.train(selector, spec, frames)


@task(name="register-and-promote-points", timeout_seconds=600, **IO_TASK)
def register_and_promote_points(
    settings: Settings, bundle: PointBundle, params: Mapping[str, Any],
    holdout: Mapping[SeriesKey, pd.DataFrame],
) -> dict[str, Any]:
    """Register the challenger; evaluate it and the champion on the same held-out tail;
    move ``champion`` when the challenger is not worse."""
    new_rate = held_out_false_alarms(bundle, holdout)
    version = log_and_register_points(
        settings, bundle, params,
        {"devices": len(bundle.models), "heldout_false_alarm_fraction": new_rate},
    )
    champion = point_registry(settings).alias_version()
    champion_rate = None
    if champion is not None:
        champ_bundle, _ = load_points(settings, champion)
        champion_rate = held_out_false_alarms(champ_bundle, holdout)
    promote, reason = decide_point_promotion(new_rate, champion_rate)
    if promote:
        set_point_champion(settings, version)
    get_run_logger().info("version %s of %s: %s", version, point_model_name(settings), reason)
    return {"version": version, "promote": promote, "reason": reason,
            "champion_before": champion, "false_alarms": new_rate,
            "champion_false_alarms": champion_rate}


@task(name="load-point-model", timeout_seconds=300, **IO_TASK)
def load_point_model(settings: Settings, version: str | None = None) -> tuple[PointBundle, str]:
    return load_points(settings, version)


@task(name="score-points", timeout_seconds=1800, **CPU_TASK)
def score_points(
    bundle: PointBundle, frames: Mapping[SeriesKey, pd.DataFrame]
) -> list[DeviceResult]:
    step = pd.Timedelta(bundle.selector.every)
    out = []
    for key, frame in frames.items():
        model = bundle.models.get(key)
        if model is None or frame.empty:
            continue
        scored = model.score(frame)
        out.append(DeviceResult(key, frame, scored, point_events(scored, bundle.spec, step), model))
    return out


@task(name="write-point-results", timeout_seconds=600, **IO_TASK)
def write_points(settings: Settings, results: list[DeviceResult], version: str) -> dict[str, int]:
    """Scores and events under the point model's name (``<model_name>-points``)."""
    named = settings.model_copy(update={"model_name": point_model_name(settings)})
    sink = make_sink(named)
    scores = events = 0
    try:
        for r in results:
            n, m = write_point_results(sink, r.key, r.scored, r.events, version,
                                       named.model_name)
            scores, events = scores + n, events + m
    finally:
        sink.close()
    return {"scores": scores, "events": events}


@task(name="publish-point-artifacts", timeout_seconds=120, **IO_TASK)
def publish_point_artifacts(results: list[DeviceResult], version: str, kind: str) -> str:
    """A markdown artifact on the flow run: every event with the field named."""
    from prefect.artifacts import create_markdown_artifact

    return str(create_markdown_artifact(
        markdown=markdown_summary(results, version), key=f"cricket-points-{kind}-events",
        description=f"Point model events of the {kind} run",
    ))
