"""Prefect tasks for the point model: thin wrappers over cricket.multifield, the point
I/O (cricket.influx.points), its promotion policy (cricket.point_promotion) and its place
in the model version (cricket.point_registry)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
from cricket.tasks.common import CPU_TASK, IO_TASK
from prefect import get_run_logger, task

from cricket.config import Settings
from cricket.errors import redact
from cricket.influx import make_sink, make_source
from cricket.influx.points import read_point_frames, write_point_results
from cricket.multifield import PointBundle, PointSelector, PointSpec, point_events
from cricket.point_promotion import (
    PointVerdict,
    evaluate_points,
    judge_points,
    missing_point_part,
)
from cricket.point_registry import champion_points, load_points
from cricket.registry import Registry, mlflow_store
from cricket.report_points import DeviceResult, event_table, markdown_summary
from cricket.series import SeriesKey

EVENT_COLUMNS = ["device", "start", "end", "peak score", "field"]


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


@task(name="judge-points", timeout_seconds=600, **IO_TASK)
def judge_point_part(
    settings: Settings, bundle: PointBundle, holdout: Mapping[SeriesKey, pd.DataFrame],
    labelled: Sequence[tuple[SeriesKey, pd.DataFrame]] = (),
) -> PointVerdict:
    """The challenger's point part and the champion's on the same held-out tail (false
    alarms, recall on planted correlation-breaking probes) and the stretches people
    labelled anomalies: the point part's say in the version's promotion."""
    new = evaluate_points(bundle, holdout, labelled=labelled)
    champ, champion = champion_points(settings)
    old = evaluate_points(champ, holdout, labelled=labelled) if champ is not None else None
    verdict = judge_points(new, old)
    get_run_logger().info("point part against champion %s: %s", champion, verdict.reason)
    return verdict


@task(name="check-champion-points", timeout_seconds=300, **IO_TASK)
def check_champion_points(settings: Settings) -> PointVerdict | None:
    """For a version trained without a point model: the verdict that keeps a champion
    holding one (None when the champion holds none, or there is no champion)."""
    champ, champion = champion_points(settings)
    if champ is None or champion is None:
        return None
    verdict = missing_point_part(champion)
    get_run_logger().warning("%s", verdict.reason)
    return verdict


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
    """Scores and events under the model's name and version (the device key names the
    fields, ``psu.load+power+temp{host=...}``, apart from any waveform series)."""
    sink = make_sink(settings)
    scores = events = 0
    try:
        for r in results:
            n, m = write_point_results(sink, r.key, r.scored, r.events, version,
                                       settings.model_name)
            scores, events = scores + n, events + m
    finally:
        sink.close()
    return {"scores": scores, "events": events}


@task(name="publish-point-run", timeout_seconds=300, **IO_TASK)
def publish_point_run(
    settings: Settings, results: list[DeviceResult], report: Path, version: str, kind: str,
    start: datetime, end: datetime,
) -> dict[str, str]:
    """What a waveform run publishes: a table artifact of the events (device, field), a
    markdown summary, the MLflow scoring run holding the report, and a link artifact to
    it. Returns the artifact ids and the MLflow run id."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    rows = event_table(results) or {c: [] for c in EVENT_COLUMNS}
    out = {
        "table": str(create_table_artifact(
            table=rows, key=f"cricket-{kind}-events",
            description=f"Point events of the {kind} run (version {version}), the field named")),
        "markdown": str(create_markdown_artifact(
            markdown=markdown_summary(results, version), key=f"cricket-{kind}-summary",
            description=f"Summary of the {kind} run")),
    }
    with mlflow_store(settings):
        registry = Registry(settings)
        run_id = registry.log_scoring_run(
            report, kind, version, start, end,
            {"devices": len(results), "events": sum(len(r.events) for r in results)},
        )
        experiment = registry.client.get_run(run_id).info.experiment_id
    url = redact(f"{settings.ui_url}/#/experiments/{experiment}/runs/{run_id}/artifacts")
    out["link"] = str(create_link_artifact(
        link=url, link_text=f"point report ({report.name}) in MLflow", key=f"cricket-{kind}-report",
        description="The HTML point report, an artifact of the MLflow run (Artifacts > report); "
        f"on this machine also at {report}"))
    out["mlflow_run"] = run_id
    return out
