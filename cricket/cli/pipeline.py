"""`cricket retrain`, `cricket score`, `cricket backfill`: run the flows from the shell.

They run against Prefect's ephemeral API unless ``PREFECT_API_URL`` is set, show a
spinner while the flow runs, and print a short summary at the end.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated

import typer

from cricket.cli import app
from cricket.cli.common import console, fail, parse_time, run_flow, selector_options

DurationOpt = Annotated[str, typer.Option(help="a duration such as 30min, 1h, 7d")]
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
    every: DurationOpt = "10s",
    train_window: DurationOpt = "7d",
    holdout: DurationOpt = "24h",
    end: Annotated[str | None, typer.Option(help="end of training (UTC); default now")] = None,
    segment_len: Annotated[
        int | None, typer.Option(help="samples per segment  [default: DetectorSpec's]")
    ] = None,
    n_clusters: Annotated[
        int | None, typer.Option(help="shapes in each library  [default: DetectorSpec's]")
    ] = None,
    min_history_points: Annotated[int, typer.Option(help="less history: fleet library")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Run the nightly retrain now: fit, log to MLflow, register, promote if not worse."""
    from cricket.config import DetectorSpec, parse_duration

    selector = selector_options(measurement, field, group_by, tag, every)
    given = {"segment_len": segment_len, "n_clusters": n_clusters}
    spec = _spec(cls=DetectorSpec, **{k: v for k, v in given.items() if v is not None})
    from cricket.flows.retrain import nightly_retrain

    summary = run_flow(
        "nightly-retrain",
        nightly_retrain,
        selector=selector,
        spec=spec,
        train_window=parse_duration(train_window),
        holdout=parse_duration(holdout),
        end=parse_time(end) if end else None,
        min_history_points=min_history_points,
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
    console.print(f"promotion: {verdict}: {summary['decision']}")


@app.command()
def score(
    at: Annotated[str | None, typer.Option(help="score the hour before this time (UTC)")] = None,
    window: DurationOpt = "1h",
    version: VersionOpt = None,
    measurement: MeasurementOpt = "waveform",
    field: FieldOpt = "value",
    group_by: GroupByOpt = "host",
    tag: TagOpt = None,
    every: DurationOpt = "10s",
    as_json: JsonOpt = False,
) -> None:
    """Score the last complete window before --at (default now) and publish the report."""
    from cricket.config import parse_duration
    from cricket.flows.score import hourly_score

    selector = selector_options(measurement, field, group_by, tag, every)
    summary = run_flow(
        "hourly-score",
        hourly_score,
        selector=selector,
        window=parse_duration(window),
        at=parse_time(at) if at else None,
        model_version=version,
    )
    if as_json:
        print(json.dumps(summary, default=str))
        return
    _print_score_summary(summary)


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="range start (UTC), e.g. 2026-11-20T00:00")],
    end: Annotated[str, typer.Option(help="range end (UTC, exclusive)")],
    chunk: DurationOpt = "1h",
    version: VersionOpt = None,
    redo: Annotated[bool, typer.Option(help="score chunks already done again")] = False,
    alert: Annotated[
        bool, typer.Option(help="announce new incidents (a backfill pages nobody by default)")
    ] = False,
    measurement: MeasurementOpt = "waveform",
    field: FieldOpt = "value",
    group_by: GroupByOpt = "host",
    tag: TagOpt = None,
    every: DurationOpt = "10s",
    as_json: JsonOpt = False,
) -> None:
    """Score a past range chunk by chunk; resumes where an interrupted run stopped."""
    from cricket.config import parse_duration
    from cricket.flows.backfill import backfill as backfill_flow

    selector = selector_options(measurement, field, group_by, tag, every)
    summary = run_flow(
        "backfill",
        backfill_flow,
        start=parse_time(start),
        end=parse_time(end),
        chunk=parse_duration(chunk),
        model_version=version,
        selector=selector,
        redo=redo,
        alert=alert,
    )
    if as_json:
        print(json.dumps(summary, default=str))
        return
    console.print(
        f"backfill with version {summary['model_version']}: {summary['scored']} chunks scored, "
        f"{summary['skipped']} already done, {summary['events']} events, "
        f"{summary['points_written']} points written in {summary['seconds']} s"
    )
    for key in summary["anomalous_series"]:
        console.print(f"  anomalous: {key}", markup=False)
    _print_skipped(summary)
    for note in summary.get("notes", [])[:10]:
        console.print(f"  note: {note}", markup=False)
    print_alerts(summary.get("alerts"))


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
    try:
        return cls(**kw)
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


def _print_score_summary(summary: dict) -> None:
    console.print(
        f"scored {summary['scored']} of {summary['series']} series from "
        f"{summary['window_start']} to {summary['window_end']} with version "
        f"{summary['model_version']}: [bold]{summary['events']} events[/]"
    )
    for key in summary["anomalous_series"]:
        console.print(f"  anomalous: {key}", markup=False)
    _print_skipped(summary)
    for note in summary.get("notes", [])[:10]:
        console.print(f"  note: {note}", markup=False)
    print_alerts(summary.get("alerts"))
    if summary.get("report"):
        console.print(f"report: {summary['report']}", markup=False)


__all__ = ["backfill", "retrain", "score", "datetime", "timedelta"]
