"""Backfill: score every chunk of a past range through the hourly scoring code.

Each finished chunk is recorded in InfluxDB (measurement ``cricket_chunk``), so a
backfill that was interrupted resumes where it stopped, and results overwrite rather
than double when a range is scored again.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from cricket.flows.runtime import run_name, task_runner
from cricket.flows.score import publish_window, score_range
from cricket.tasks.ledger import done_chunks, mark_chunk_done
from cricket.tasks.registry import load_model
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from cricket.config import SeriesSelector, Settings
from cricket.errors import CricketValueError
from cricket.limits import check_chunks, check_series_span
from cricket.report import ensure_report_dir
from cricket.scoring import ScoredSeries, merge_by_series
from cricket.windows import chunks, utc


@flow(
    name="backfill",
    flow_run_name=run_name("backfill"),
    log_prints=True,
    task_runner=task_runner(),
)
def backfill(
    start: datetime,
    end: datetime,
    chunk: timedelta = timedelta(hours=1),
    model_version: str | None = None,
    selector: SeriesSelector = SeriesSelector(),
    redo: bool = False,
    alert: bool = False,
) -> dict:
    """Score [start, end) chunk by chunk with ``model_version`` (default: the champion).
    Chunks already scored by this model (name and version) are skipped unless ``redo``;
    a chunk that held no data, or far fewer points than expected, is not recorded as
    done, so a rerun after late data arrives scores it. A backfill announces no incident
    unless ``alert`` (then once per problem, as the hourly run)."""
    log = get_run_logger()
    settings = Settings()
    t0 = time.perf_counter()
    start, end = utc(start), utc(end)
    if start < end:
        check_chunks(end - start, chunk, selector.every)
        check_series_span("a backfill chunk", chunk, selector.every)
    parts = chunks(start, end, chunk)  # refuses start >= end with a clear message
    now = utc(datetime.now(tz=start.tzinfo))
    if start >= now:
        raise CricketValueError(
            f"the backfill starts at {start:%Y-%m-%d %H:%M} UTC, in the future: "
            "a backfill scores past data; pick a range that starts before now"
        )
    # the report is written last: a folder that cannot be created fails here, before
    # any score is written
    ensure_report_dir(settings.reports_path)
    bundle, version = load_model(settings, model_version)
    scope = selector.model_dump_json()
    done = set() if redo else done_chunks(settings, version, scope, start, end)
    todo = [(a, b) for a, b in parts if a not in done]
    log.info(
        "backfill %s to %s in %d chunks with version %s: %d already done, %d to score",
        start.isoformat(), end.isoformat(), len(parts), version, len(parts) - len(todo), len(todo),
    )
    progress = create_progress_artifact(
        progress=100.0 * (len(parts) - len(todo)) / len(parts),
        description=f"backfill {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
    )
    summaries = []
    anomalous_parts: list[ScoredSeries] = []
    incomplete: list[str] = []
    for i, (a, b) in enumerate(todo, start=1):
        summary = score_range(
            settings, selector, bundle, version, a, b,
            kind="backfill", report=False, collect=anomalous_parts,
        )
        recorded = mark_chunk_done(
            settings, version, scope, a, b, summary["points_scored"], summary["points_expected"]
        )
        if not recorded:
            incomplete.append(
                f"chunk {a:%Y-%m-%d %H:%M} UTC scored {summary['points_scored']} of "
                f"{summary['points_expected']} expected points: not recorded as done, so the "
                "next backfill scores it again (late data)"
            )
        summaries.append(summary)
        update_progress_artifact(
            artifact_id=progress,
            progress=100.0 * (len(parts) - len(todo) + i) / len(parts),
        )
    events = sum(s["events"] for s in summaries)
    anomalous = sorted({k for s in summaries for k in s["anomalous_series"]})
    missing = [
        f"{s['window_start'][:16]}: {m}" for s in summaries for m in s.get("data_missing", [])
    ]
    notes = (incomplete + [n for s in summaries for n in s["notes"]])[:50]
    if len(todo) < len(parts):
        notes.insert(0, f"{len(parts) - len(todo)} chunks were scored before and are not in this report")
    published = publish_window(
        settings, "backfill", start, end, version, [merged for merged in merge_by_series(
            anomalous_parts, selector.every * (bundle.spec.min_event_gap + 1)
        ) if merged.n_events], notes, page=alert, missing=missing,
        series_scored=len({k for s in summaries for k in s.get("scored_series", [])}),
    )
    return {
        **published,
        "model_version": version,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "chunks": len(parts),
        "skipped": len(parts) - len(todo),
        "scored": len(todo),
        "incomplete": len(incomplete),
        "notes": notes,
        "events": events,
        "anomalous_series": anomalous,
        "skipped_series": sorted({k for s in summaries for k in s.get("skipped_series", [])}),
        "data_missing": missing,
        "points_written": sum(s["points_written"] for s in summaries),
        "seconds": round(time.perf_counter() - t0, 2),
    }
