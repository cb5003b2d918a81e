"""Publish: write scores and events back to InfluxDB, write the HTML report, and attach
Prefect artifacts (a table of events, a markdown summary, a link to the report).

    written = write_results(settings, results, model_version)      # task, retried
    path = publish_report(settings, report)                          # task
    summary = publish_results(results, report, settings, version)    # both, in a flow

``results`` are ``cricket.scoring.ScoredSeries`` (or anything with ``key``, ``frame``,
``events`` and optionally ``series_key``). Writing the same window twice overwrites (same time and tags), so retries never duplicate points.
Artifacts hold series names, times and scores only: never settings or secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cricket.tasks.common import IO_TASK
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from cricket.config import Settings
from cricket.errors import redact
from cricket.influx import lineprotocol as lp
from cricket.influx.base import Sink
from cricket.report import Report, write_report
from cricket.report_markdown import event_rows, markdown_summary
from cricket.report_pictures import series_pictures
from cricket.series import SeriesKey

MAX_TABLE_ROWS = 1000
TABLE_COLUMNS = ["series", "start", "end", "peak score", "duration"]


def _sink_key(result: Any) -> SeriesKey:
    key = getattr(result, "series_key", None)
    return key if key is not None else SeriesKey.parse(str(result.key))


def write_with_sink(sink: Sink, results: Sequence[Any], model_version: str,
                    ready: lp.Formatted | None = None) -> dict[str, int]:
    """Write every result's scores and events through ``sink``; returns point counts.
    ``ready``: the same results' lines formatted ahead (``lineprotocol.formatted``, by
    the process that scored them), posted as they are by a sink that can
    (``write_formatted``: InfluxQL's). Else a sink with ``write_results`` (both of
    Cricket's) gets them all at once and writes full-size requests spanning series;
    another sink is called series by series."""
    posts = getattr(sink, "write_formatted", None)
    if ready is not None and posts is not None:
        return posts(ready)
    many = getattr(sink, "write_results", None)
    if many is not None:
        return many(result_items(results), str(model_version))
    scores = events = 0
    for r in results:
        key = _sink_key(r)
        if r.frame is not None and len(r.frame):
            scores += int(sink.write_scores(key, r.frame, str(model_version)))
        if r.events is not None and len(r.events):
            events += int(sink.write_events(key, r.events, str(model_version)))
        revised = getattr(r, "revised", None)  # earlier records, each overwritten
        if revised is not None and len(revised):
            events += int(sink.write_events(key, revised, str(model_version)))
    return {"scores": scores, "events": events}


def result_items(results: Sequence[Any]) -> Iterator[tuple[SeriesKey, Any, Any]]:
    """``(key, frame, events)`` per result, and ``(key, None, revised)`` for the earlier
    event records a result revises (each overwritten)."""
    for r in results:
        key = _sink_key(r)
        yield key, r.frame, r.events
        revised = getattr(r, "revised", None)
        if revised is not None and len(revised):
            yield key, None, revised


@task(name="write-results", timeout_seconds=900, **IO_TASK)
def write_results(settings: Settings, results: Sequence[Any], model_version: str,
                  ready: lp.Formatted | None = None) -> int:
    """Write scores and events of ``results`` to InfluxDB (measurements ``cricket_score``
    and ``cricket_event``, tagged with ``model_version``). Returns the points written
    (scores + events). ``ready``: their lines already formatted (by the process that
    scored them; the same bytes). Retried with backoff; a retry overwrites, never
    duplicates."""
    from cricket.influx import make_sink

    sink = make_sink(settings)
    try:
        counts = write_with_sink(sink, results, model_version, ready=ready)
    finally:
        sink.close()
    get_run_logger().info(
        "wrote %d score points and %d events for %d series (model version %s)",
        counts["scores"], counts["events"], len(results), model_version,
    )
    return counts["scores"] + counts["events"]


@task(name="write-data-missing", timeout_seconds=300, **IO_TASK)
def write_missing(
    settings: Settings, missing: Sequence[Any], model_version: str, start: Any, end: Any
) -> int:
    """Write one ``data_missing`` event per series in ``missing`` (``cricket.missing.
    MissingData``) for the window [start, end) to ``cricket_event``. Returns points."""
    from cricket.influx import make_sink
    from cricket.missing import missing_events

    lines = [
        line
        for m in missing
        for line in lp.missing_lines(SeriesKey.parse(m.key), missing_events(m, start, end),
                                     str(model_version), settings.model_name)
    ]
    sink = make_sink(settings)
    try:
        return int(sink.write_lines(lines)) if lines else 0
    finally:
        sink.close()


def _artifact_key(kind: str, what: str) -> str:
    """Prefect artifact keys hold only lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", f"cricket-{kind}-{what}".lower()).strip("-")


def create_report_artifacts(report: Report, path: Path | None) -> dict[str, str]:
    """Table (events) and markdown (summary) artifacts for the current flow or task run
    (the link to the report comes with its MLflow run: ``create_report_link``). Returns
    their ids."""
    rows = event_rows(report)
    n_rows = len(rows)
    rows = rows[:MAX_TABLE_ROWS]
    table: list[dict[str, object]] | dict[str, list[object]] = (
        rows if rows else {c: [] for c in TABLE_COLUMNS}
    )
    desc = f"Events of the {report.kind} run, {report.window_start:%Y-%m-%d %H:%M} UTC"
    if n_rows > MAX_TABLE_ROWS:
        desc += f" (highest {MAX_TABLE_ROWS} of {n_rows} by peak score)"
    ids = {
        "table": str(
            create_table_artifact(
                table=table, key=_artifact_key(report.kind, "events"), description=desc
            )
        ),
        "markdown": str(
            create_markdown_artifact(
                markdown=markdown_summary(report, report_path=path),
                key=_artifact_key(report.kind, "summary"),
                description=f"Summary of the {report.kind} run",
            )
        ),
    }
    return ids


def create_report_link(report: Report, url: str, path: Path) -> str:
    """A link artifact to the report where a browser can open it: the MLflow run that
    holds it as an artifact (a ``file://`` link is refused by browsers and does not
    exist on another machine). Returns the artifact id."""
    return str(
        create_link_artifact(
            link=url,
            link_text=f"anomaly report ({Path(path).name}) in MLflow",
            key=_artifact_key(report.kind, "report"),
            description="The HTML anomaly report, an artifact of the MLflow run "
            "(Artifacts > report); on this machine also at " + str(path),
        )
    )


@task(name="draw-report", timeout_seconds=600, cache_policy=IO_TASK["cache_policy"],
      persist_result=False)
def draw_report(results: Sequence[Any]) -> dict[str, str]:
    """The pictures of the series a report draws (``cricket.report_pictures.series_pictures``,
    by series key), drawn ahead: the flow runs this while it still waits on the last
    writes and the alerts, and hands the result to the report (``Report.pictures``)."""
    return {r.key: series_pictures(r) for r in results}


@task(name="publish-report", timeout_seconds=600, retries=1, retry_delay_seconds=2,
      cache_policy=IO_TASK["cache_policy"], persist_result=False)
def publish_report(settings: Settings, report: Report, out_dir: Path | None = None,
                   pictures: Any = None) -> Path:
    """Write the HTML report to ``out_dir`` (default ``settings.reports_path``) and
    attach the events table, markdown summary and link artifacts. Returns the path.
    ``pictures``: a future of pictures drawn ahead (``draw_report``'s, the scoring
    processes' or the drawing process's), waited for here and put in
    ``report.pictures``; if it failed, the report draws them."""
    if pictures is not None:
        try:
            report.pictures = pictures.result()
        except Exception as exc:  # noqa: BLE001 - the report draws them itself then
            get_run_logger().warning("drawing the report's pictures ahead failed (%s): the "
                                     "report draws them", exc)
    path = write_report(report, out_dir or settings.reports_path)
    create_report_artifacts(report, path)
    get_run_logger().info(
        "report: %d series, %d events -> %s", len(report.results), report.n_events, path
    )
    return path


def publish_results(
    results: Sequence[Any],
    report: Report,
    sink_settings: Settings,
    model_version: str,
) -> dict[str, object]:
    """Write ``results`` to InfluxDB, then write the report and its artifacts. Call it
    from a flow. Returns ``{"points_written", "events", "series", "report"}``."""
    written = write_results(sink_settings, list(results), str(model_version))
    path = publish_report(sink_settings, report)
    return {
        "points_written": int(written),
        "events": report.n_events,
        "series": len(report.results),
        "report": str(path),
    }


@task(name="log-report-to-mlflow", **IO_TASK)
def log_report_to_mlflow(
    settings: Settings, report: Report, path: Path, metrics: dict[str, float] | None = None
) -> str:
    """Attach the HTML report to an MLflow run of the scoring experiment."""
    from datetime import datetime

    from cricket.registry import Registry
    from cricket.windows import utc

    start: datetime = utc(report.window_start)
    end: datetime = utc(report.window_end)
    registry = Registry(settings)
    run_id = registry.log_scoring_run(
        path, report.kind, str(report.model_version), start, end, metrics
    )
    experiment = registry.client.get_run(run_id).info.experiment_id
    url = f"{settings.ui_url}/#/experiments/{experiment}/runs/{run_id}/artifacts"
    create_report_link(report, redact(url), path)
    return run_id
