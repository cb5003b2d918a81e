"""`cricket retrain`, `cricket score`, `cricket backfill`: run the flows from the shell.

They run against Prefect's ephemeral API unless ``PREFECT_API_URL`` is set, show a
spinner while the flow runs, and print a short summary at the end.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.markup import escape

from cricket.cli import app
from cricket.cli.common import (
    console,
    duration,
    exit_for,
    fail,
    parse_time,
    quiet_prefect,
    run_flow,
    selector_options,
)

# Each duration says what it is for (a duration is written like 10s, 30min, 1h, 7d).
EveryOpt = Annotated[str, typer.Option(help="resample interval of the series (10s, 1min)")]
WindowOpt = Annotated[str, typer.Option(help="length of the window scored (30min, 1h)")]
TrainWindowOpt = Annotated[
    str, typer.Option(help="history to train on, ending at --end (7d, 36h)")
]
HoldoutOpt = Annotated[
    str, typer.Option(help="the last part of the training history kept back to judge the model (24h)")
]
ChunkOpt = Annotated[str, typer.Option(help="the backfill scores its range in chunks this long (1h)")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="show the runs' logs (they always go to the Prefect UI)")
]
# What to watch: the same options on every flow command.
MeasurementOpt = Annotated[str, typer.Option(help="measurement to watch")]
FieldOpt = Annotated[str, typer.Option(help="numeric field")]
GroupByOpt = Annotated[str, typer.Option(help="comma-separated tags naming a series")]
TagOpt = Annotated[list[str] | None, typer.Option(help="tag filter KEY=VALUE (repeatable)")]
VersionOpt = Annotated[str | None, typer.Option(help="model version; default champion")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the summary as JSON")]


@app.command()
def retrain(
    measurement: MeasurementOpt = "waveform",
    field: FieldOpt = "value",
    group_by: GroupByOpt = "host",
    tag: TagOpt = None,
    every: EveryOpt = "10s",
    train_window: TrainWindowOpt = "7d",
    holdout: HoldoutOpt = "24h",
    end: Annotated[str | None, typer.Option(help="end of training (UTC); default now")] = None,
    segment_len: Annotated[
        int | None, typer.Option(help="samples per segment  [default: DetectorSpec's]")
    ] = None,
    n_clusters: Annotated[
        int | None, typer.Option(help="shapes in each library  [default: DetectorSpec's]")
    ] = None,
    min_history_points: Annotated[int, typer.Option(help="less history: fleet library")] = 1000,
    points: Annotated[str | None, typer.Option(
        help="comma-separated fields of the same measurement judged together: the version "
        "also holds a point model (see `cricket points`)")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the nightly retrain now: fit, log to MLflow, register, promote if not worse."""
    quiet_prefect(verbose)
    from cricket.config import DetectorSpec

    # Everything that can be checked is checked before any server starts.
    selector = selector_options(measurement, field, group_by, tag, every)
    given = {"segment_len": segment_len, "n_clusters": n_clusters}
    spec = _spec(cls=DetectorSpec, **{k: v for k, v in given.items() if v is not None})
    train_td = duration("--train-window", train_window)
    holdout_td = duration("--holdout", holdout, allow_zero=True)
    if holdout_td >= train_td:
        fail(f"--holdout {holdout} must be shorter than --train-window {train_window}: the "
             "held-out tail is part of the training history; shorten it")
    end_t = parse_time(end) if end else None
    point_selector = None
    if points is not None:
        from pydantic import ValidationError

        from cricket.multifield import PointSelector

        try:
            point_selector = PointSelector(
                measurement=selector.measurement, tags=selector.tags, group_by=selector.group_by,
                every=selector.every, aggregate=selector.aggregate,
                fields=[f.strip() for f in points.split(",") if f.strip()],
            )
        except ValidationError as exc:
            fail(f"--points {points}: {exc.errors()[0]['msg']}")
    from cricket.flows.retrain import nightly_retrain

    summary = run_flow(
        "nightly-retrain",
        nightly_retrain,
        selector=selector,
        spec=spec,
        train_window=train_td,
        holdout=holdout_td,
        end=end_t,
        min_history_points=min_history_points,
        points=point_selector,
    )
    if as_json:
        print(json.dumps(summary, default=str))
        return
    console.print(
        f"[bold green]version {summary['model_version']}[/] trained on {summary['series']} series "
        f"({summary['series_models']} with their own library, "
        f"{len(summary['fleet_served'])} on the fleet library) in {summary['seconds']} s"
    )
    verdict = "[green]champion[/]" if summary["promoted"] else "[yellow]not promoted[/]"
    console.print(f"promotion: {verdict}: {escape(summary['decision'])}")
    _print_answers(summary.get("labels") or {})
    if summary.get("points"):
        console.print(f"point model: {summary['points']['devices']} device(s) in the same "
                      f"version ({len(summary['points']['skipped'])} skipped)")
    for warning in summary.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    _print_where(summary)


def _print_answers(labels: dict) -> None:
    """What the retrain did with people's answers (`cricket feedback`), when there were any."""
    normal, anomaly = labels.get("normal", 0), labels.get("anomaly", 0)
    if not (normal or anomaly):
        return
    check = labels.get("check")
    text = (f"answers: {normal} normal ({labels.get('shapes_learned', 0)} shapes learnt from "
            f"them), {anomaly} anomaly (kept out of training)")
    if check:
        failed = [*check.get("fires_on_normal", []), *check.get("misses_anomaly", [])]
        text += ("; the new version [yellow]gets "
                 f"{len(failed)} of the {check.get('checked', 0)} checked wrong[/]: "
                 + escape(", ".join(str(f) for f in failed[:5])) if failed
                 else f"; the new version gets all {check.get('checked', 0)} checked right")
    console.print(text)


@app.command()
def score(
    at: Annotated[str | None, typer.Option(help="score the hour before this time (UTC)")] = None,
    window: WindowOpt = "1h",
    version: VersionOpt = None,
    measurement: MeasurementOpt = "waveform",
    field: FieldOpt = "value",
    group_by: GroupByOpt = "host",
    tag: TagOpt = None,
    every: EveryOpt = "10s",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Score the last complete window before --at (default now) and publish the report.
    Exit status 3 when series the model knows sent no data (data_missing events)."""
    quiet_prefect(verbose)
    from cricket.windows import score_window, utc

    selector = selector_options(measurement, field, group_by, tag, every)
    window_td = duration("--window", window)
    at_t = parse_time(at) if at else None
    start, end = _checked(score_window, at_t or utc(datetime.now().astimezone()), window_td)
    if start > utc(datetime.now().astimezone()):
        fail(f"the window {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC is in the future: "
             "give --at a time at or before now")
    from cricket.flows.score import hourly_score

    summary = run_flow(
        "hourly-score",
        hourly_score,
        selector=selector,
        window=window_td,
        at=at_t,
        model_version=version,
    )
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        _print_score_summary(summary)
    exit_for(summary)


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="range start (UTC), e.g. 2026-11-20T00:00")],
    end: Annotated[str, typer.Option(help="range end (UTC, exclusive)")],
    chunk: ChunkOpt = "1h",
    version: VersionOpt = None,
    redo: Annotated[bool, typer.Option(help="score chunks already done again")] = False,
    alert: Annotated[
        bool, typer.Option(help="announce new incidents (a backfill pages nobody by default)")
    ] = False,
    measurement: MeasurementOpt = "waveform",
    field: FieldOpt = "value",
    group_by: GroupByOpt = "host",
    tag: TagOpt = None,
    every: EveryOpt = "10s",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Score a past range chunk by chunk; resumes where an interrupted run stopped.
    Exit status 3 when series the model knows sent no data (data_missing events)."""
    quiet_prefect(verbose)
    from cricket.windows import chunks, utc

    selector = selector_options(measurement, field, group_by, tag, every)
    start_t, end_t = parse_time(start), parse_time(end)
    chunk_td = duration("--chunk", chunk)
    _checked(chunks, start_t, end_t, chunk_td)  # refuses end <= start, with the fix
    if start_t >= utc(datetime.now().astimezone()):
        fail(f"--start {start} is in the future: a backfill scores past data")
    from cricket.flows.backfill import backfill as backfill_flow

    summary = run_flow(
        "backfill",
        backfill_flow,
        start=start_t,
        end=end_t,
        chunk=chunk_td,
        model_version=version,
        selector=selector,
        redo=redo,
        alert=alert,
    )
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        console.print(
            f"backfill with version {summary['model_version']}: {summary['scored']} chunks "
            f"scored, {summary['skipped']} already done, {summary['events']} events, "
            f"{summary['points_written']} points written in {summary['seconds']} s"
        )
        _print_details(summary)
    exit_for(summary)


def print_alerts(alerts: dict | None) -> None:
    """Incidents announced, and the labels and silences that applied."""
    if not alerts:
        return
    for title in alerts.get("incidents", []):
        console.print(f"  incident: {title}", markup=False)
    if alerts.get("silenced"):
        console.print(f"  {alerts['silenced']} incident(s) inside a silence: not announced")
    for row in alerts.get("answers", []):
        console.print(
            f"  {row['what']} on {row['series']} {row['from']} to {row['to']} by {row['by']}: "
            f"{row['why']}", markup=False,
        )


def _spec(cls, **kw):  # noqa: ANN001, ANN202
    from pydantic import ValidationError

    try:
        return cls(**kw)
    except ValidationError as exc:
        parts = []
        for e in exc.errors():
            name = ".".join(str(p) for p in e.get("loc", ()))
            option = "--" + name.replace("_", "-")
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            parts.append(msg.replace(name, option) if name and name in msg else f"{option}: {msg}")
        fail("; ".join(parts))


def _checked(fn, *args):  # noqa: ANN001, ANN002, ANN202
    """``fn(*args)`` from the pure time helpers; their ValueError is the user's to fix."""
    try:
        return fn(*args)
    except ValueError as exc:
        fail(str(exc))


def _print_skipped(summary: dict) -> None:
    skipped = summary.get("skipped_series") or []
    if skipped:
        console.print(
            f"  warning: {len(skipped)} series skipped (results cannot be written back), the "
            f"others were scored: {', '.join(map(repr, skipped[:5]))}",
            markup=False,
        )


def _print_missing(summary: dict) -> None:
    missing = summary.get("data_missing", [])
    if missing:
        console.print(
            f"[bold red]{len(missing)} series sent no data or far less than expected[/] "
            "(data_missing events):"
        )
        for line in missing[:10]:
            console.print(f"  missing: {line}", markup=False)
        if len(missing) > 10:
            console.print(f"  ... and {len(missing) - 10} more (see the report)")


def _print_where(summary: dict) -> None:
    if summary.get("prefect_api"):
        console.print(f"[dim]{escape(summary['prefect_api'])}[/]")


def _print_score_summary(summary: dict) -> None:
    console.print(
        f"scored {summary['scored']} of {summary['series']} series from "
        f"{summary['window_start']} to {summary['window_end']} with version "
        f"{summary['model_version']}: [bold]{summary['events']} events[/]"
    )
    _print_details(summary)


def _print_details(summary: dict) -> None:
    """What a score or backfill summary says below its first line: the anomalous and
    skipped series, notes, alerts, missing data, the report and where things ran."""
    for key in summary["anomalous_series"]:
        console.print(f"  anomalous: {key}", markup=False)
    _print_skipped(summary)
    for note in summary.get("notes", [])[:10]:
        console.print(f"  note: {note}", markup=False)
    print_alerts(summary.get("alerts"))
    _print_missing(summary)
    if summary.get("report"):
        console.print(f"report: {summary['report']}", markup=False)
    _print_where(summary)


__all__ = ["backfill", "retrain", "score", "datetime", "timedelta"]
