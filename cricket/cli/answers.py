"""People's answers: `cricket feedback normal|anomaly` and `cricket silence add|list|remove`.

    cricket feedback normal 'waveform.value{host=cricket004}@2026-11-24T13:22:00Z' --reason "backup job"
    cricket feedback anomaly --series 'waveform.value{host=cricket006}' --start T --end T
    cricket silence add --series 'waveform.value{host=cricket00*}' --start T --end T --reason "maintenance"
    cricket silence list
    cricket silence remove ID

Stored in InfluxDB (``cricket_label``, ``cricket_silence``) with who, when and why;
nothing is deleted (a removed silence is kept, marked removed, with who removed it).
"""

from __future__ import annotations

import getpass
import json
import os
from typing import Annotated

import typer

from cricket.cli import app
from cricket.cli.common import console, fail, one_line_errors, parse_time, tag_options

feedback_app = typer.Typer(
    name="feedback",
    help="Tell Cricket an event was normal, or a real anomaly; the next retrain learns it.",
    no_args_is_help=True,
)
silence_app = typer.Typer(
    name="silence",
    help="Maintenance windows: scoring goes on, notifications do not.",
    no_args_is_help=True,
)
app.add_typer(feedback_app, name="feedback")
app.add_typer(silence_app, name="silence")

EventArg = Annotated[
    str | None, typer.Argument(help="the event, SERIES@START as reports and notifications print it")
]
SeriesOpt = Annotated[str | None, typer.Option(help="series key, e.g. 'waveform.value{host=h1}'")]
TimeOpt = Annotated[str | None, typer.Option(help="UTC time, e.g. 2026-11-24T13:00, or now-30m")]
ReasonOpt = Annotated[str, typer.Option(help="why (kept with the answer)")]
ByOpt = Annotated[str | None, typer.Option(help="who (default: $CRICKET_USER or the login name)")]


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return os.environ.get("CRICKET_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _store():  # noqa: ANN202 - heavy import kept inside
    from cricket.config import Settings
    from cricket.influx.answers import AnswerStore

    return AnswerStore(Settings())


def _run(fn):  # noqa: ANN001, ANN202
    with one_line_errors():
        return fn()


def _stretch(event: str | None, series: str | None, start: str | None, end: str | None):  # noqa: ANN202
    """(series, start, end, event ref) from an event reference or --series/--start/--end."""
    import pandas as pd

    from cricket.feedback import event_ref, parse_event_ref

    if event:
        name, t0 = parse_event_ref(event)
        if end:
            return name, t0, pd.Timestamp(parse_time(end)), event_ref(name, t0)
        t0, t1 = _event_at(name, t0)
        return name, t0, t1, event_ref(name, t0)
    if not (series and start and end):
        fail("name the stretch: an EVENT (SERIES@START), or --series, --start and --end")
    return series, pd.Timestamp(parse_time(start)), pd.Timestamp(parse_time(end)), ""


def _event_at(name: str, t0):  # noqa: ANN001, ANN202
    """(start, end) of the stored event of ``name`` that ``t0`` names: the one starting
    then, else the only one holding ``t0`` or starting within its minute (a summary that
    printed 04:22 for an event from 04:21:50 or 04:22:10). Otherwise fail, listing the
    series' events within a day as references to copy."""
    import pandas as pd

    from cricket.config import Settings
    from cricket.feedback import event_ref
    from cricket.influx.influxql import InfluxQLSource

    day = pd.Timedelta(days=1)
    with InfluxQLSource(Settings()) as src:
        found = src.read_events(name, t0 - day, t0 + day)
    if not found.empty:
        spans = found.groupby("start")["end"].max()  # one row per model version scored
        exact = spans[spans.index == t0]
        minute = t0.floor("min")
        near = spans[((spans.index <= t0) & (spans >= t0))
                     | ((spans.index >= minute) & (spans.index < minute + pd.Timedelta(minutes=1)))]
        for hits in (exact, near):
            if len(hits) == 1:
                return pd.Timestamp(hits.index[0]), pd.Timestamp(hits.iloc[0])
        nearest = sorted(spans.index, key=lambda s: abs(s - t0))[:5]
        fail(
            f"no single event of {name} starts at {t0:%Y-%m-%d %H:%M:%S} UTC in the score "
            "database; its events within a day of then: "
            + ", ".join(event_ref(name, s) for s in sorted(nearest))
            + " (copy one, or give --end)"
        )
    fail(
        f"no event of {name} within a day of {t0:%Y-%m-%d %H:%M:%S} UTC in the score "
        "database: check the series and the time, or give --end (or --series/--start/--end)"
    )


def _label(kind: str, event, series, start, end, reason: str, by: str | None) -> None:  # noqa: ANN001
    from cricket.feedback import make_label

    def go():  # noqa: ANN202
        name, t0, t1, ref = _stretch(event, series, start, end)
        lab = make_label(name, kind, t0, t1, _who(by), reason, event=ref)
        with _store() as store:
            store.save_label(lab)
        return lab

    lab = _run(go)
    console.print(
        f"labelled {lab.series} {lab.start:%Y-%m-%d %H:%M:%S} to {lab.end:%Y-%m-%d %H:%M:%S} "
        f"UTC as {kind} (label {lab.id}, by {lab.by}); the next retrain "
        + ("learns this shape as normal" if kind == "normal"
           else "keeps it out of training and must still find it"),
        markup=False,
    )


@feedback_app.command("normal")
def normal(
    event: EventArg = None, series: SeriesOpt = None, start: TimeOpt = None,
    end: TimeOpt = None, reason: ReasonOpt = "", by: ByOpt = None,
) -> None:
    """This event (or stretch) is normal: the next retrain learns its shape."""
    _label("normal", event, series, start, end, reason, by)


@feedback_app.command("anomaly")
def anomaly(
    event: EventArg = None, series: SeriesOpt = None, start: TimeOpt = None,
    end: TimeOpt = None, reason: ReasonOpt = "", by: ByOpt = None,
) -> None:
    """This was a real problem: kept out of training, and every challenger must find it."""
    _label("anomaly", event, series, start, end, reason, by)


@feedback_app.command("list")
def list_labels(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every label: series, stretch, who, when, why."""
    labels = _run(lambda: _store().labels())
    if as_json:
        print(json.dumps([lab.to_dict() for lab in labels]))
        return
    if not labels:
        console.print("no labels yet")
    for lab in labels:
        console.print(
            f"{lab.id}  {lab.label:<7} {lab.series} {lab.start:%Y-%m-%d %H:%M} to "
            f"{lab.end:%Y-%m-%d %H:%M}  by {lab.by} at {lab.created:%Y-%m-%d %H:%M}"
            + (f": {lab.reason}" if lab.reason else ""),
            markup=False,
        )


@silence_app.command("add")
def silence_add(
    start: Annotated[str, typer.Option(help="UTC start, e.g. 2026-11-24T22:00, or now")],
    end: Annotated[str, typer.Option(help="UTC end (exclusive), e.g. 2026-11-25T02:00, or now+2h")],
    reason: Annotated[str, typer.Option(help="why (e.g. 'kernel upgrade')")],
    series: Annotated[
        str | None, typer.Option(help="series key or glob, e.g. 'waveform.value{host=web*}'")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE the series must carry")] = None,
    by: ByOpt = None,
) -> None:
    """Silence matching series from START to END: events are scored, not announced."""
    import pandas as pd

    from cricket.alerts import Silence, silence_id
    from cricket.feedback import FeedbackError

    tags = tag_options(tag)
    t0, t1 = pd.Timestamp(parse_time(start)), pd.Timestamp(parse_time(end))

    def go():  # noqa: ANN202
        if t1 <= t0:
            raise FeedbackError(f"the silence ends ({t1}) before it starts ({t0}): swap them")
        created = pd.Timestamp.now(tz="UTC")
        s = Silence(
            id=silence_id(series or "", tags, t0, t1, created), start=t0, end=t1,
            reason=reason, by=_who(by), created=created, series=series or "",
            tags=tuple(sorted(tags.items())),
        )
        with _store() as store:
            store.save_silence(s)
        return s

    s = _run(go)
    console.print(
        f"silence {s.id}: {s.scope} from {s.start:%Y-%m-%d %H:%M} to {s.end:%Y-%m-%d %H:%M} "
        f"UTC (by {s.by}: {s.reason})",
        markup=False,
    )


@silence_app.command("list")
def silence_list(
    include_removed: Annotated[bool, typer.Option("--all", help="also removed ones")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The silences: scope, window, who, why."""
    silences = _run(lambda: _store().silences(include_removed=include_removed))
    if as_json:
        print(json.dumps([
            {"id": s.id, "scope": s.scope, "start": s.start.isoformat(), "end": s.end.isoformat(),
             "by": s.by, "reason": s.reason, "removed": s.removed, "removed_by": s.removed_by}
            for s in silences
        ]))
        return
    if not silences:
        console.print("no silences")
    for s in silences:
        gone = f"  [removed by {s.removed_by}]" if s.removed else ""
        console.print(
            f"{s.id}  {s.scope}  {s.start:%Y-%m-%d %H:%M} to {s.end:%Y-%m-%d %H:%M} UTC  "
            f"by {s.by}: {s.reason}{gone}",
            markup=False,
        )


@silence_app.command("remove")
def silence_remove(silence: Annotated[str, typer.Argument(help="the silence id")], by: ByOpt = None) -> None:
    """End a silence now (it stays in the list with --all, marked removed)."""
    from dataclasses import replace

    from cricket.feedback import FeedbackError

    def go():  # noqa: ANN202
        with _store() as store:
            found = [s for s in store.silences() if s.id == silence]
            if not found:
                raise FeedbackError(
                    f"no active silence {silence!r}: `cricket silence list` shows the ids"
                )
            s = replace(found[0], removed=True, removed_by=_who(by))
            store.save_silence(s)
        return s

    s = _run(go)
    console.print(f"removed silence {s.id} ({s.scope}, by {s.removed_by})", markup=False)
