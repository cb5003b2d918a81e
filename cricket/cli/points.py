"""`cricket points synth | retrain | score | backfill`: several fields of one device.

    cricket points synth --write                      # the multi-field synthetic fleet
    cricket points retrain --fields load,power,temp   # waveform + point model, one version
    cricket points backfill --start 2026-01-07T12:00 --end 2026-01-08T00:00

The point model is a part of the waveform model's versions: ``points retrain`` is the
nightly retrain with a point selector (its waveform part watches ``--field``, by default
the first of the fields), and scoring loads the point part of the champion.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cricket.cli import app
from cricket.cli.common import console, exit_for, fail, one_line_errors, parse_time, run_flow

points_app = typer.Typer(
    name="points",
    help="Several fields of one device judged together (the point model).",
    no_args_is_help=True,
)
app.add_typer(points_app, name="points")

JsonOpt = Annotated[bool, typer.Option("--json", help="print the summary as JSON")]
VersionOpt = Annotated[str | None, typer.Option(help="model version; default champion")]


def _print(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, default=str))
        return
    for k, v in summary.items():
        if k != "events":
            console.print(f"{k}: {v}")
    for e in summary.get("events", []):
        console.print(f"event {e['device']} {e['start']} .. {e['end']}: field {e['contributor']}"
                      f" (peak {e['peak']:.0f})")


@points_app.command("synth")
def synth(
    devices: Annotated[int, typer.Option(min=1, help="devices (psu001...)")] = 6,
    days: Annotated[float, typer.Option(min=0.1, help="days of data")] = 3.0,
    step: Annotated[str, typer.Option(help="sample interval")] = "5m",
    end: Annotated[str, typer.Option(help="end of the data (UTC) or 'now'")] = "now",
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    write: Annotated[bool, typer.Option("--write", help="write it to InfluxDB")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Correlated fields (load, power, temp); anomalies break the correlation while each
    field stays in its normal range (in the last 12 hours)."""
    from cricket.config import Settings
    from cricket.synth_points import make_point_fleet, write_point_fleet

    with one_line_errors():
        fleet = make_point_fleet(n_devices=devices, days=days, step=step, end=parse_time(end),
                                 seed=seed)
        summary = fleet.summary()
        summary["anomalies"] = [
            {"device": str(a.key), "field": a.kind, "start": a.start.isoformat(),
             "end": a.end.isoformat()} for a in fleet.truth
        ]
        if write:
            settings = Settings()
            summary["written"] = write_point_fleet(fleet, settings)
            summary["database"] = settings.influx_database
    if as_json:
        print(json.dumps(summary, default=str))
        return
    console.print(f"{summary['devices']} devices, fields {', '.join(summary['fields'])}, "
                  f"{summary['points']:,} points, {summary['start']} .. {summary['end']}")
    for a in summary["anomalies"]:
        console.print(f"anomaly {a['device']} {a['start']} .. {a['end']}: {a['field']} "
                      "out of line with load")
    if not write:
        console.print("(summary only: add --write to write it to InfluxDB)")


@points_app.command("retrain")
def retrain(
    measurement: Annotated[str, typer.Option(help="measurement holding the fields")] = "psu",
    fields: Annotated[str, typer.Option(help="comma-separated fields")] = "load,power,temp",
    group_by: Annotated[str, typer.Option(help="comma-separated tags naming a device")] = "host",
    every: Annotated[str, typer.Option(help="step the fields are aligned on")] = "5m",
    train_window: Annotated[str, typer.Option(help="a duration such as 7d")] = "7d",
    holdout: Annotated[str, typer.Option(help="held back for the promotion")] = "24h",
    end: Annotated[str, typer.Option(help="end of training (UTC) or 'now'")] = "now",
    n_clusters: Annotated[int | None, typer.Option(help="centroids per device")] = None,
    field: Annotated[str | None, typer.Option(
        help="the field the waveform part of the version watches; default the first field")
    ] = None,
    min_history_points: Annotated[int, typer.Option(
        help="waveform part: less history goes to the fleet library")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """The nightly retrain with a point selector: one version holds the waveform model and
    one point model per device; it is promoted as a whole if not worse."""
    from pydantic import ValidationError

    from cricket.config import parse_duration
    from cricket.flows.retrain import nightly_retrain
    from cricket.multifield import PointSelector, PointSpec

    try:
        selector = PointSelector(
            measurement=measurement, fields=[f.strip() for f in fields.split(",") if f.strip()],
            group_by=[g.strip() for g in group_by.split(",") if g.strip()], every=every,
        )
        spec = PointSpec(**({} if n_clusters is None else {"n_clusters": n_clusters}))
    except ValidationError as exc:
        fail(exc.errors()[0]["msg"])
    summary = run_flow("nightly-retrain", nightly_retrain,
                       selector=selector.field_selector(field or selector.fields[0]),
                       train_window=parse_duration(train_window),
                       holdout=parse_duration(holdout), end=parse_time(end),
                       min_history_points=min_history_points, points=selector, point_spec=spec)
    _print(summary, as_json)


@points_app.command("score")
def score(
    window: Annotated[str, typer.Option(help="the window to score, ending at --end")] = "1h",
    end: Annotated[str, typer.Option(help="end of the window (UTC) or 'now'")] = "now",
    version: VersionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score the last window with the champion's point model; write scores, events,
    incidents, report."""
    from cricket.config import parse_duration
    from cricket.flows.points import points_score

    summary = run_flow("points-score", points_score, window=parse_duration(window),
                       end=parse_time(end), model_version=version)
    _print(summary, as_json)
    exit_for(summary)


@points_app.command("backfill")
def backfill(
    start: Annotated[str, typer.Option(help="first time (UTC)")],
    end: Annotated[str, typer.Option(help="end time (UTC) or 'now'")] = "now",
    version: VersionOpt = None,
    alert: Annotated[bool, typer.Option("--alert", help="announce new incidents")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score [start, end) with the champion's point model (or --version's)."""
    from cricket.flows.points import points_backfill

    summary = run_flow("points-backfill", points_backfill, start=parse_time(start),
                       end=parse_time(end), model_version=version, alert=alert)
    _print(summary, as_json)
    exit_for(summary)
