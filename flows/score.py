"""Hourly score: score the last complete window with the champion model and publish.

The story: work out the window from the run's scheduled time -> load the model ->
find the series -> for each batch, extract the window plus the detectors' context and
score it, writing results back as each batch finishes -> publish the report.
The backfill flow scores each of its chunks through ``score_range`` below.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timedelta
from typing import Any

from cricket.flows.runtime import (
    batch_size_for,
    default_workers,
    in_flight_limit,
    on_local_threads,
    pipelined,
    run_name,
    scheduled_time,
    task_runner,
    waiting_threads,
)
from cricket.tasks.alert import alert_window
from cricket.tasks.extract import discover_series
from cricket.tasks.publish import (
    draw_report,
    log_report_to_mlflow,
    publish_report,
    write_missing,
    write_results,
)
from cricket.tasks.registry import load_model
from cricket.tasks.score import ScoreBatch, context_for, score_batch, sub_bundle
from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from cricket.config import SeriesSelector, Settings
from cricket.errors import CricketValueError
from cricket.limits import check_batch, check_series_span
from cricket.missing import expected_points, find_missing
from cricket.model import ModelBundle, check_scoring_selector
from cricket.report import MAX_PLOTTED, Report, anomalous, ensure_report_dir, report_filename
from cricket.report_pictures import PictureDrawer
from cricket.scoring import ScoredSeries
from cricket.series import SeriesKey
from cricket.windows import batched, score_window, utc

#: a run of at least this many series draws the report's pictures in a process of its own
#: while later batches score (``PictureDrawer``); a smaller one draws them in a task
#: after its batches (starting the process, ~2 CPU s of imports, would cost more)
DRAW_AHEAD_SERIES = 200

#: pictures the scoring processes draw at a time while batches are still to be handed out
DRAWN_BETWEEN_BATCHES = 1


def raise_lost_writes(writes: list[Any], cause: BaseException) -> None:
    """Wait for the submitted ``writes``; if one failed, raise its error (it says which
    points were not written), chained to ``cause``, the failure that stopped the run."""
    for w in writes:
        try:
            w.result()
        except Exception as lost:  # noqa: BLE001 - re-raised, with the cause attached
            raise lost from cause


def score_range(
    settings: Settings,
    selector: SeriesSelector,
    bundle: ModelBundle,
    version: str,
    start: datetime,
    end: datetime,
    kind: str = "score",
    report: bool = True,
    collect: list[ScoredSeries] | None = None,
) -> dict:
    """Score [start, end) of every series the selector matches and write the results.
    Must run inside a flow. Returns a summary; writes the HTML report when ``report``;
    appends the series that had events to ``collect`` when given (for a longer report)."""
    log = get_run_logger()
    t0 = time.perf_counter()
    check_scoring_selector(bundle, selector, version)
    # one context for every batch (the model's longest segment): what is stored for a
    # series must not depend on the batch it lands in
    context = context_for(bundle, selector)
    n_steps = check_series_span("the scored window with its context", (end - start) + context,
                                selector.every)
    if report:
        ensure_report_dir(settings.reports_path)
    keys = discover_series(settings, selector)
    check_batch("scoring", n_steps, len(keys), batch_size_for(settings, len(keys)))
    notes: list[str] = []
    present = {str(k) for k in keys}
    gone = sorted(set(bundle.series_keys) - present)
    if gone:
        notes.append(
            f"{len(gone)} series in the model have no data any more: " + ", ".join(gone[:10])
        )
    if not keys:
        notes.append("no series matched the selector in this window: nothing to score")
    batches = list(batched(keys, batch_size_for(settings, len(keys))))
    # The report's pictures are drawn in a process of their own while later batches
    # score (this process is bound by one core); one batch has nothing to overlap with.
    # Forked before a drawing process starts (a fork would hold its pipes open). Scoring
    # processes keep both cores busy while batches score: they draw the pictures at the
    # end, on both cores, instead of a drawing process competing with them meanwhile.
    procs = scoring_processes(settings, selector, bundle, len(keys), len(batches))
    ahead = (report and len(batches) > 1 and len(keys) >= DRAW_AHEAD_SERIES
             and procs is None)
    with procs if procs is not None else contextlib.nullcontext(), \
            PictureDrawer(MAX_PLOTTED) if ahead else contextlib.nullcontext() as drawer:
        timings = {"extract": 0.0, "score": 0.0}
        t_batches = time.perf_counter()
        results: dict[int, ScoreBatch] = {}
        writes = []
        limit = in_flight_limit(settings)
        shown: list[ScoredSeries] = []  # the most severe series so far
        # Each batch task gets only its own detectors; a finished batch is written at once,
        # while later batches are still being read and scored.
        try:
            for index, _batch, fut in pipelined(
                lambda batch: score_batch.submit(
                    settings, selector, sub_bundle(bundle, batch), batch, start, end, version,
                    context, procs,
                ),
                batches,
                limit,
            ):
                res = results[index] = fut.result()
                if drawer is not None:
                    drawer.offer(res.scored)
                if procs is not None and report:
                    # the processes draw what the report would show so far: from half
                    # the batches on one picture at a time between batches (earlier, most
                    # would fall out of the 20 and be drawn for nothing), all of them once
                    # every batch is handed out (a process draws when it has no batch left)
                    shown = plotted([*shown, *res.scored])
                    procs.draw_ahead(shown, None if len(results) + limit >= len(batches)
                                     else DRAWN_BETWEEN_BATCHES
                                     if 2 * len(results) >= len(batches) else 0)
                for stage, sec in res.seconds.items():
                    timings[stage] = timings.get(stage, 0.0) + sec
                if res.scored:
                    writes.append(write_results.submit(settings, res.scored, version,
                                                       ready=res.ready))
        except Exception as exc:
            # a later batch failed (InfluxDB gone, say) while earlier results were being
            # written: what was not stored is what the person must hear about first
            raise_lost_writes(writes, exc)
            raise
        scored: list[ScoredSeries] = []
        skipped: list[str] = []
        for index in sorted(results):  # batch order, whatever order they finished in
            notes.extend(results[index].notes)
            scored.extend(results[index].scored)
            skipped.extend(results[index].skipped)
        # the report's pictures depend on the scores alone: draw them while the last writes
        # and the alerts are still running
        if procs is not None and report:  # in the scoring processes, at once
            pictures = procs.draw(plotted(scored))
        elif drawer is not None and drawer.active:
            # those the process has not drawn yet are drawn here too, at once
            shown = plotted(scored)
            drawn = drawer.ahead(shown)
            late = set(drawn.pending())
            pictures = drawn.joined(
                draw_report.submit([r for r in shown if r.key in late]) if late else None)
        else:
            pictures = draw_report.submit(plotted(scored)) if report else None
        written = sum(w.result() for w in writes)
        timings["batches"] = time.perf_counter() - t_batches  # wall: read, score and write
        if not any(len(s.frame) for s in scored):
            notes.append(f"no data between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC")
        # A series the model knows that sent no data (or far less than expected) is an event.
        # (a series skipped because its results cannot be written back did send data)
        missing = find_missing(
            set(known_series(bundle, selector)) - {str(k) for k in skipped},
            {s.key: int(s.frame["value"].notna().sum()) for s in scored},
            expected_points(start, end, selector.every),
        )
        if missing:
            written += write_missing.submit(settings, missing, version, start, end).result()
            log.warning("%d series sent no data or far less than expected: %s", len(missing),
                        "; ".join(m.describe() for m in missing[:10]))
        n_events = sum(len(s.events) for s in scored)
        steps = int((end - start) / selector.every)
        summary = {
            "model_version": version,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "series": len(keys),
            "scored": len(scored),
            "points_written": int(written),
            # what the ledger judges a chunk by: points scored of series x steps
            "points_scored": int(sum(len(s.frame) for s in scored)),
            "points_expected": len(keys) * steps,
            "events": n_events,
            "anomalous_series": sorted(s.key for s in scored if len(s.events)),
            "skipped_series": skipped,
            "data_missing": [m.describe() for m in missing],
            "scored_series": sorted(s.key for s in scored),
            "notes": notes,
            "batches": len(batches),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        if collect is not None:
            # with the series whose records of earlier chunks this window revised: the
            # longer report shows what is stored (see merge_by_series)
            collect.extend(s for s in scored
                           if len(s.events) or (s.revised is not None and len(s.revised)))
        if report:
            t_report = time.perf_counter()
            summary.update(publish_window(settings, kind, start, end, version, scored, notes,
                                          missing=missing, pictures=pictures))
            summary["timings"]["report"] = round(time.perf_counter() - t_report, 3)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        log.info(
            "scored %d series from %s to %s with version %s: %d events",
            len(scored), start.isoformat(), end.isoformat(), version, n_events,
        )
        return summary


def scoring_processes(settings: Settings, selector: SeriesSelector, bundle: ModelBundle,
                      n_series: int, n_batches: int) -> Any:
    """The run's scoring processes (``ScoringProcesses``) where they pay and can be
    forked: local threads, at least ``PROCESS_SERIES`` series in more than one batch, a
    bundle in memory on Linux; else None (the threads score)."""
    from cricket.tasks import score_processes as sp

    if (n_batches > 1 and n_series >= sp.PROCESS_SERIES and on_local_threads()
            and sp.can_fork(bundle)):
        try:
            return sp.ScoringProcesses(settings, selector, bundle, default_workers())
        except OSError as exc:  # no process could be forked (memory): the threads score
            get_run_logger().warning("scoring in the flow's own process: no scoring process "
                                     "could be started (%s)", exc)
    return None


def plotted(scored: list[ScoredSeries]) -> list[ScoredSeries]:
    """The series the window's report draws (most severe first, at most MAX_PLOTTED)."""
    return anomalous(scored)[:MAX_PLOTTED]


def known_series(bundle: ModelBundle, selector: SeriesSelector) -> list[str]:
    """The series of the model that this selector asks for (a run over another
    measurement or other tags does not expect them)."""
    out = []
    for name in bundle.series_keys:
        try:
            key = SeriesKey.parse(name)
        except ValueError:
            continue
        tags = key.tag_dict
        if (key.measurement == selector.measurement and key.field == selector.field
                and all(tags.get(k) == v for k, v in selector.tags.items())):
            out.append(name)
    return out


def publish_window(
    settings: Settings,
    kind: str,
    start: datetime,
    end: datetime,
    version: str,
    scored: list[ScoredSeries],
    notes: list[str],
    page: bool = True,
    missing: list | None = None,
    series_scored: int | None = None,
    pictures: Any = None,
) -> dict[str, Any]:
    """Announce the window's new incidents (when ``page``; ``missing``: the data_missing
    findings, ``cricket.missing.MissingData`` or their descriptions), then write its HTML
    report (with the incidents, labels, silences and missing data), its Prefect artifacts
    and its MLflow run. ``pictures``: a future of the pictures of ``scored`` drawn ahead
    (``draw_report``'s, or ``PictureDrawer.ahead``'s); without it, the report draws them."""
    rep = Report(
        title=f"Cricket {kind} {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
        kind=kind,  # type: ignore[arg-type]
        window_start=start,
        window_end=end,
        model_name=settings.model_name,
        model_version=version,
        results=scored,
        notes=notes,
        missing=[m if isinstance(m, str) else m.describe() for m in missing or []],
        series_scored=series_scored,
    )
    findings = [m for m in missing or [] if not isinstance(m, str)]  # data_missing alerts
    # quote(): Prefect would walk every series' results in these tasks' parameters,
    # looking for futures, before each starts (they hold none). Only for tasks called in
    # the flow: Dask takes a quoted (tuple) parameter of a submitted task apart.
    alerts = alert_window(
        settings, quote(scored), start, end, version, report_link(settings, rep), page=page,
        missing=quote(findings),
    )
    rep.incidents = alerts["incidents"]
    rep.answers = alerts["answers"]
    # the pictures drawn ahead are waited for inside publish-report: the report's time
    path = publish_report(settings, quote(rep),
                          pictures=quote(pictures) if pictures is not None else None)
    run = log_report_to_mlflow(
        settings, quote(rep), path,
        {"scored": len(scored), "events": sum(len(s.events) for s in scored)},
    )
    return {"report": str(path), "mlflow_run": run, "alerts": alerts}


def report_link(settings: Settings, rep: Report) -> str:
    """Where a notification points: ``CRICKET_ALERT_REPORT_URL`` + the report's file
    name when reports are served, else the file's URI."""
    name = report_filename(rep)
    if settings.alert_report_url:
        return settings.alert_report_url.rstrip("/") + "/" + name
    return (settings.reports_path / name).absolute().as_uri()


@flow(
    name="hourly-score",
    flow_run_name=run_name("score"),
    log_prints=True,
    # batch tasks wait on the scoring processes: threads to write finished batches meanwhile
    task_runner=task_runner(threads=waiting_threads()),
)
def hourly_score(
    selector: SeriesSelector = SeriesSelector(),
    window: timedelta = timedelta(hours=1),
    at: datetime | None = None,
    model_version: str | None = None,
) -> dict:
    """Score the last complete ``window`` before ``at`` (default: the run's scheduled
    time, so re-running a past run scores the same window) with ``model_version``
    (default: the champion)."""
    t0 = time.perf_counter()
    settings = Settings()
    at = utc(at) if at is not None else scheduled_time()
    start, end = score_window(at, window)
    if start > utc(datetime.now(tz=start.tzinfo)):
        raise CricketValueError(
            f"the window {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC is in the future: "
            "nothing can be scored yet; give a time at or before now"
        )
    check_series_span("the scored window", window, selector.every)
    ensure_report_dir(settings.reports_path)
    bundle, version = load_model(settings, model_version)
    t_load = time.perf_counter()
    summary = score_range(settings, selector, bundle, version, start, end, kind="score")
    # wall seconds of the flow's own body: the rest of a run's time is its orchestration
    summary["timings"]["load_model"] = round(t_load - t0, 3)
    summary["timings"]["flow"] = round(time.perf_counter() - t0, 3)
    return summary
