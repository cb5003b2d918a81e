"""The report's markdown summary and its events as table rows: what a run's Prefect
artifacts show (a markdown summary, a table of events), beside the HTML report
(:mod:`cricket.report`).

    text = markdown_summary(report, report_path=path)   # for a markdown artifact
    rows = event_rows(report)                            # for a table artifact
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from cricket.explain import as_finite, fmt_duration, looks_like
from cricket.feedback import event_ref
from cricket.report import (
    ANSWER_COLUMNS,
    Report,
    _fmt_num,
    _fmt_score,
    _fmt_time,
    _step_seconds,
    md_escape,
    settled_earlier,
)


def markdown_summary(report: Report, max_rows: int = 50, report_path: Path | None = None) -> str:
    """A short markdown summary: counts, the anomalous series, and the notes."""
    hits = report.anomalous()
    version = report.model_version if report.model_version is not None else "none"
    lines = [
        f"# {md_escape(report.title)}",
        "",
        f"**{md_escape(report.kind)}** run, window {md_escape(_fmt_time(report.window_start))} "
        f"to {md_escape(_fmt_time(report.window_end))}, model {md_escape(report.model_name)} "
        f"version {md_escape(version)}.",
        "",
        f"- series scored: {report.n_series}",
        f"- anomalous series: {len(hits)}",
        f"- events: {report.n_events}",
        f"- series missing data: {len(report.missing)}",
    ]
    if report.missing:
        lines += ["", "**Data missing**", ""] + [f"- {md_escape(m)}" for m in report.missing]
    if report_path is not None:
        lines.append(f"- report: {md_escape(report_path)}")
    if report.notes:
        lines += ["", "**Notes**", ""] + [f"- {md_escape(n)}" for n in report.notes]
    if report.incidents:
        lines += ["", "**Incidents announced**", ""] + [f"- {md_escape(t)}" for t in report.incidents]
    if report.answers:
        lines += ["", "**Labels and silences**", "",
                  "| " + " | ".join(ANSWER_COLUMNS) + " |",
                  "|" + "---|" * len(ANSWER_COLUMNS)]
        lines += ["| " + " | ".join(md_escape(r.get(c, "")) for c in ANSWER_COLUMNS) + " |"
                  for r in report.answers]
    if hits:
        lines += [
            "",
            "| series | events | top severity | peak score | model source |",
            "|---|---:|---:|---:|---|",
        ]
        for r in hits[:max_rows]:  # most severe first
            lines.append(
                f"| {md_escape(r.key)} | {r.n_events} | {md_escape(_fmt_num(r.top_severity))} "
                f"| {md_escape(_fmt_score(r.peak_score))} | {md_escape(r.source)} |"
            )
        if len(hits) > max_rows:
            lines.append(f"\n{len(hits) - max_rows} more anomalous series are not listed.")
    settled = settled_earlier(report.results)
    if not hits and report.results:
        lines += ["", "No new events." if settled else "No anomalies found."]
    if settled:
        lines += ["", "**Earlier events settled by this window** (their records were rewritten)",
                  "", "| series | start | end | peak score |", "|---|---|---|---:|"]
        lines += [f"| {md_escape(key)} | {md_escape(_fmt_time(ev.get('start')))} "
                  f"| {md_escape(_fmt_time(ev.get('end')))} | {md_escape(_fmt_score(ev.get('peak')))} |"
                  for key, ev in settled[:max_rows]]
    return "\n".join(lines) + "\n"


def event_rows(report: Report) -> list[dict[str, object]]:
    """One JSON-safe row per event (series, start, end, peak score, duration, severity,
    the view that fired, what it looks like, the reference ``cricket feedback`` takes),
    for a Prefect table artifact; most severe first."""
    rows: list[dict[str, object]] = []
    for r in report.results:
        if not r.n_events:
            continue
        for _, ev in r.events.iterrows():
            peak = ev.get("peak")
            rows.append(
                {
                    "series": r.key,
                    "start": _fmt_time(ev.get("start")),
                    "end": _fmt_time(ev.get("end")),
                    "peak score": round(float(peak), 1)
                    if peak is not None and math.isfinite(float(peak))
                    else None,
                    "duration": fmt_duration(ev.get("duration_s")),
                    "severity": _severity_or_none(ev.get("severity")),
                    "fired": ev.get("scale") if isinstance(ev.get("scale"), str) else None,
                    "looks like": looks_like(ev.get("scale"), ev.get("actual"),
                                             ev.get("typical"), _step_seconds(r.frame),
                                             ev.get("views")) or None,
                    "answer with": (event_ref(r.key, ev.get("start"))
                                    if pd.notna(ev.get("start")) else None),
                }
            )
    # most severe first (severity ranks; the 0-100 peak crowds at the top)
    rows.sort(key=lambda row: (-(row["severity"] if row["severity"] is not None else -1e9),
                               -(row["peak score"] or 0.0)))  # type: ignore[operator]
    return rows


def _severity_or_none(x: object) -> float | None:
    v = as_finite(x)
    return None if v is None else round(v, 2)
