"""The anomaly report: one self-contained HTML file (its pictures are drawn by
:mod:`cricket.report_pictures`, its markdown summary written by :mod:`cricket.report_markdown`).

The HTML embeds its pictures as base64 PNG data URIs, loads nothing from outside,
runs no JavaScript, and carries a Content-Security-Policy that forbids scripts
anyway. Every piece of text that came from data (series keys, tag values, notes,
titles, model names) is HTML-escaped, so a series tagged
``<img src=x onerror=alert(1)>`` shows as that text.

    report = Report(title=..., kind="score", window_start=..., window_end=...,
                    model_name=..., model_version=..., results=[ScoredSeries(...)])
    path = write_report(report, out_dir)        # <kind>-<YYYYmmddTHHMM>-v<version>.html
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cricket.errors import CricketError
from cricket.explain import as_finite, fmt_duration, looks_like, parse_views
from cricket.feedback import event_ref
from cricket.scoring import ScoredSeries

ReportKind = Literal["score", "retrain", "backfill"]
MAX_PLOTTED = 20
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class Report:
    """Everything one run of the pipeline reports."""

    title: str
    kind: ReportKind
    window_start: datetime | pd.Timestamp
    window_end: datetime | pd.Timestamp
    model_name: str
    model_version: str | int | None
    results: list[ScoredSeries] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: labels and silences that apply (rows of ANSWER_COLUMNS) and incidents announced
    answers: list[dict[str, str]] = field(default_factory=list)
    incidents: list[str] = field(default_factory=list)
    #: series the model knows that sent no data (or far less than expected), described
    missing: list[str] = field(default_factory=list)
    #: series scored in all, when ``results`` holds only some of them (a backfill keeps
    #: the anomalous ones)
    series_scored: int | None = None
    #: pictures drawn ahead (``series_pictures``) by series key; the rest are drawn
    #: when the report is rendered
    pictures: dict[str, str] = field(default_factory=dict)

    @property
    def n_series(self) -> int:
        return self.series_scored if self.series_scored is not None else len(self.results)

    @property
    def n_events(self) -> int:
        return sum(r.n_events for r in self.results)

    def anomalous(self) -> list[ScoredSeries]:
        """Series with at least one event, highest peak score first."""
        return anomalous(self.results)


def settled_earlier(results: list[ScoredSeries]) -> list[tuple[str, dict]]:
    """``(series, record)`` for each event of an earlier window whose end this window's
    data settled (``ScoredSeries.revised``): its record was rewritten, and the scores
    above the threshold in its wake here belong to it, not to a new event."""
    out = []
    for r in results:
        rev = getattr(r, "revised", None)
        if rev is not None and len(rev):
            out.extend((r.key, row) for row in rev.to_dict("records"))
    return sorted(out, key=lambda kr: (_utc(kr[1]["start"]), kr[0]))


def anomalous(results: list[ScoredSeries]) -> list[ScoredSeries]:
    """The series of ``results`` with at least one event, most severe first (then
    highest peak score): the order a report draws them in."""
    hits = [r for r in results if r.n_events]
    return sorted(hits, key=lambda r: (-_finite_or(r.top_severity, -1.0),
                                       -_finite_or(r.peak_score, -1.0), r.key))


# ---------------------------------------------------------------------------- helpers


def _e(value: object) -> str:
    """HTML-escape anything for text or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _finite_or(x: float, default: float) -> float:
    return x if isinstance(x, float | int) and math.isfinite(x) else default


def _utc(t: object) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _fmt_time(t: object) -> str:
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "—"
    try:
        return _utc(t).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, TypeError):
        return str(t)


def _fmt_float(x: object, spec: str, missing: str) -> str:
    """``x`` formatted with ``spec``, or ``missing`` when it is not a finite number."""
    f = as_finite(x)
    return missing if f is None else format(f, spec)


def _fmt_score(x: object) -> str:
    return _fmt_float(x, ".1f", "—")



def _safe_filename_part(text: object) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(text)).strip(".") or "none"


def report_filename(report: Report) -> str:
    """``<kind>-<window_start:%Y%m%dT%H%M>-v<version>.html`` (unsafe characters -> ``_``)."""
    start = _utc(report.window_start).strftime("%Y%m%dT%H%M")
    version = _safe_filename_part(report.model_version if report.model_version is not None else "none")
    return f"{_safe_filename_part(report.kind)}-{start}-v{version}.html"


# ---------------------------------------------------------------------------- HTML

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
header{border-bottom:2px solid #1f4e79;margin-bottom:16px}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.15rem;margin:28px 0 8px}
h3{font-size:1rem;margin:0 0 6px;word-break:break-all;font-family:ui-monospace,Menlo,monospace}
.meta{color:#555;font-size:.9rem;margin:0 0 12px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border:1px solid #dde;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:1.4rem}.card span{color:#666;font-size:.8rem}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.88rem}
th,td{border:1px solid #dde;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.key{font-family:ui-monospace,Menlo,monospace;word-break:break-all}
tr.hit td{background:#fff4ef}
.missing{background:#fdecea;border:1px solid #e0a0a0;border-radius:6px;padding:4px 16px}
.card.missing b{color:#b00020}
.notes{background:#fffbe6;border:1px solid #f0e0a0;border-radius:6px;padding:8px 16px}
section.series{background:#fff;border:1px solid #dde;border-radius:6px;padding:12px;margin:16px 0}
.row{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start}
img.plot{max-width:100%;height:auto}img.pair{max-width:300px;height:auto}
.muted{color:#666;font-size:.85rem}
"""


def _summary_rows(report: Report) -> str:
    ordered = sorted(
        report.results,
        key=lambda r: (-_finite_or(r.top_severity, -1.0), -r.n_events,
                       -_finite_or(r.peak_score, -1.0), r.key),
    )
    rows = []
    for r in ordered:
        cls = ' class="hit"' if r.n_events else ""
        rows.append(
            f"<tr{cls}><td class=\"key\">{_e(r.key)}</td><td class=\"num\">{r.n_events}</td>"
            f"<td class=\"num\">{_e(_fmt_score(r.peak_score))}</td>"
            f"<td class=\"num\">{_e(_fmt_score(r.threshold))}</td><td>{_e(r.source)}</td></tr>"
        )
    return "\n".join(rows)


def _fmt_num(x: object) -> str:
    return _fmt_float(x, ".4g", "-")




def fmt_p(surprise: float) -> str:
    """A surprise (-log10 p) as the chance a person reads: ``p < 1e-12`` past twelve
    (beyond that the tail is extrapolated and the exact figure says nothing more),
    ``p = 3e-05`` in between, ``p = 0.2`` for an unsurprising view."""
    if not math.isfinite(surprise) or surprise >= 12:
        return "p < 1e-12"
    p = 10.0 ** -max(surprise, 0.0)
    return f"p = {p:.1g}" if p < 0.01 else f"p = {p:.2f}"


def fmt_views(views: object) -> str:
    """The stored ``views`` text ("shape 32 582.3, range 1 4.6": each view's peak
    surprise) as "shape 32 p < 1e-12, range 1 p = 3e-05", most surprising first;
    anything else is shown as it is."""
    parsed = parse_views(views)
    if parsed is None:
        return str(views)
    if not parsed:
        return "-"
    ordered = sorted(parsed, key=lambda vs: -vs[1])
    return ", ".join(f"{view} {fmt_p(surprise)}" for view, surprise in ordered)


def by_severity(events: pd.DataFrame) -> pd.DataFrame:
    """Events, most severe first (events without a severity last, by peak score)."""
    if events is None or events.empty:
        return events
    ev = events.copy()
    for col, out in (("severity", "_sev"), ("peak", "_peak")):
        ev[out] = (pd.to_numeric(ev[col], errors="coerce").fillna(-np.inf)
                   if col in ev.columns else -np.inf)
    return ev.sort_values(["_sev", "_peak"], ascending=False).drop(columns=["_sev", "_peak"])


def _events_table(events: pd.DataFrame, step_s: float | None = None) -> str:
    """One row per event, most severe first, explained in the metric's own units: the
    actual and the typical (rebuilt from normal shapes) mean over the event, which view
    fired and, for each view, how unlikely its peak is under normal behaviour (p)."""
    rows = []
    for _, ev in by_severity(events).iterrows():
        rows.append(
            "<tr>"
            f"<td>{_e(_fmt_time(ev.get('start')))}</td><td>{_e(_fmt_time(ev.get('end')))}</td>"
            f"<td class=\"num\">{_e(fmt_duration(ev.get('duration_s')))}</td>"
            f"<td class=\"num\">{_e(_fmt_num(ev.get('severity')))}</td>"
            f"<td class=\"num\">{_e(_fmt_score(ev.get('peak')))}</td>"
            f"<td class=\"num\">{_e(_fmt_num(ev.get('actual')))}</td>"
            f"<td class=\"num\">{_e(_fmt_num(ev.get('typical')))}</td>"
            f"<td>{_e(looks_like(ev.get('scale'), ev.get('actual'), ev.get('typical'), step_s, ev.get('views')) or '-')}</td>"
            f"<td>{_e(ev.get('scale') if isinstance(ev.get('scale'), str) else '-')}</td>"
            f"<td>{_e(fmt_views(ev.get('views')))}</td>"
            "</tr>"
        )
    return (
        "<table><thead><tr><th>start</th><th>end</th><th>duration</th><th>severity</th>"
        "<th>peak score</th><th>actual (mean)</th><th>typical (mean)</th><th>looks like</th>"
        "<th>fired</th>"
        '<th title="each view\'s peak over the event: the chance of a value this unusual '
        'under normal behaviour">chance under normal, by view</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )




def _answer_line(r: ScoredSeries, most: int = 5) -> str:
    """How to answer this series' events, with the references to copy (most severe
    first): the next retrain learns from the answer."""
    if r.events is None or r.events.empty or "start" not in r.events.columns:
        return ""
    refs = [event_ref(r.key, t) for t in by_severity(r.events)["start"].dropna()][:most]
    if not refs:
        return ""
    more = len(r.events) - len(refs)
    return (
        '<p class="muted answer">Was it normal, or a real problem? Tell Cricket, and the '
        "next retrain learns it: <code>cricket feedback normal|anomaly 'EVENT'</code> with "
        "EVENT " + ", ".join(f"<code>{_e(ref)}</code>" for ref in refs)
        + (f" (and {more} more: <code>cricket feedback --help</code>)" if more > 0 else "")
        + "</p>"
    )


def _step_seconds(frame: pd.DataFrame | None) -> float | None:
    if frame is None or len(frame) < 2:
        return None
    # in nanoseconds whatever the index's unit (a microsecond index read as ns gave
    # a step 1000x too small, so the shape pair's axis said 0.004 min for 5 min)
    steps = np.diff(frame.index.as_unit("ns").asi8)
    steps = steps[steps > 0]
    return float(np.median(steps)) / 1e9 if steps.size else None


def _series_section(idx: int, r: ScoredSeries, pictures: str | None = None) -> str:
    parts = [f'<section class="series" id="series-{idx}">', f"<h3>{_e(r.key)}</h3>"]
    parts.append(
        f'<p class="muted">{r.n_events} event(s); peak score {_e(_fmt_score(r.peak_score))}; '
        f"threshold {_e(_fmt_score(r.threshold))}; model: {_e(r.source)}</p>"
    )
    parts.append('<div class="row">')
    if pictures is None:
        from cricket.report_pictures import series_pictures  # matplotlib: only when drawing

        pictures = series_pictures(r)
    parts.append(pictures)
    parts.append("</div>")
    parts.append(_events_table(r.events, _step_seconds(r.frame)))
    parts.append(_answer_line(r))
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: Report, max_plotted: int = MAX_PLOTTED) -> str:
    """The report as one self-contained HTML document (no scripts, no external loads)."""
    hits = report.anomalous()
    plotted = hits[: max(max_plotted, 0)]
    left_out = len(hits) - len(plotted)
    now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC")
    version = report.model_version if report.model_version is not None else "none"

    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(report.title)}</title>",
        f"<style>{_STYLE}</style></head><body><main>",
        "<header>",
        f"<h1>{_e(report.title)}</h1>",
        f'<p class="meta">{_e(report.kind)} run · window {_e(_fmt_time(report.window_start))} '
        f"→ {_e(_fmt_time(report.window_end))} · model {_e(report.model_name)} "
        f"version {_e(version)} · generated {_e(now)}</p>",
        "</header>",
        '<div class="cards">',
        f'<div class="card"><b>{report.n_series}</b><span>series scored</span></div>',
        f'<div class="card"><b>{len(hits)}</b><span>anomalous series</span></div>',
        f'<div class="card"><b>{report.n_events}</b><span>events</span></div>',
        f'<div class="card{" missing" if report.missing else ""}"><b>{len(report.missing)}</b>'
        "<span>series missing data</span></div>",
        "</div>",
    ]
    if report.missing:
        out.append('<div class="missing"><h2>Data missing</h2><p>These series the model knows '
                   "sent no data, or far less than expected, in the window "
                   "(<code>data_missing</code> events):</p><ul>")
        out.extend(f"<li>{_e(m)}</li>" for m in report.missing)
        out.append("</ul></div>")
    if report.notes:
        out.append('<div class="notes"><ul>')
        out.extend(f"<li>{_e(n)}</li>" for n in report.notes)
        out.append("</ul></div>")
    out.extend(_answers_section(report))
    out.append("<h2>Summary</h2>")
    if report.results:
        out.append(
            "<table><thead><tr><th>series</th><th>events</th><th>peak score</th>"
            "<th>threshold</th><th>model source</th></tr></thead><tbody>"
        )
        out.append(_summary_rows(report))
        out.append("</tbody></table>")
    else:
        out.append('<p class="muted">No series were scored in this window.</p>')

    if hits:
        out.append("<h2>Anomalous series</h2>")
        if left_out:
            out.append(
                f'<p class="muted">Showing the {len(plotted)} series with the highest peak '
                f"score; {left_out} more anomalous series are left out (see the summary).</p>"
            )
        out.extend(_series_section(i, r, report.pictures.get(r.key))
                   for i, r in enumerate(plotted, 1))
    settled = settled_earlier(report.results)
    if not hits and report.results:
        out.append('<p class="muted">No new events in this window.</p>' if settled else
                   '<p class="muted">No anomalies found in this window.</p>')
    if settled:
        out.append("<h2>Earlier events settled by this window</h2>")
        out.append(
            '<p class="muted">These events began before this window; its data settled where '
            "they end, and their records were rewritten. Scores above the threshold here in "
            "their wake belong to them, not to new events.</p>"
        )
        out.append("<table><thead><tr><th>series</th><th>start</th><th>end</th>"
                   "<th>duration</th><th>peak score</th><th>severity</th></tr></thead><tbody>")
        out.extend(
            f"<tr><td><code>{_e(key)}</code></td><td>{_e(_fmt_time(ev.get('start')))}</td>"
            f"<td>{_e(_fmt_time(ev.get('end')))}</td>"
            f"<td class=\"num\">{_e(fmt_duration(ev.get('duration_s')))}</td>"
            f"<td class=\"num\">{_e(_fmt_score(ev.get('peak')))}</td>"
            f"<td class=\"num\">{_e(_fmt_num(ev.get('severity')))}</td></tr>"
            for key, ev in settled
        )
        out.append("</tbody></table>")
    out.append("</main></body></html>")
    return "\n".join(out)


class ReportDirError(CricketError):
    """The report folder cannot be created or written."""


def ensure_report_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and check that a file can be written in it, so a run that
    would fail to write its report fails before it writes any score."""
    out_dir = Path(out_dir).expanduser().absolute()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ReportDirError(
            f"cannot write reports to {out_dir} ({exc.strerror or type(exc).__name__}): set "
            "CRICKET_REPORT_DIR (or CRICKET_STATE_DIR) to a writable folder; nothing was "
            "scored or written"
        ) from None
    return out_dir


ANSWER_COLUMNS = ("what", "series", "from", "to", "by", "why", "when")


def _answers_section(report: Report) -> list[str]:
    """Incidents announced, and the labels and silences people gave."""
    out: list[str] = []
    if report.incidents:
        out.append("<h2>Incidents announced</h2><ul>")
        out.extend(f"<li>{_e(t)}</li>" for t in report.incidents)
        out.append("</ul>")
    if report.answers:
        out.append("<h2>Labels and silences</h2><table><thead><tr>")
        out.extend(f"<th>{_e(c)}</th>" for c in ANSWER_COLUMNS)
        out.append("</tr></thead><tbody>")
        for row in report.answers:
            out.append("<tr>" + "".join(f"<td>{_e(row.get(c, ''))}</td>" for c in ANSWER_COLUMNS)
                       + "</tr>")
        out.append("</tbody></table>")
    return out


def write_report(report: Report, out_dir: Path, max_plotted: int = MAX_PLOTTED) -> Path:
    """Render and write the report atomically; returns its path
    ``<out_dir>/<kind>-<window_start:%Y%m%dT%H%M>-v<version>.html``. A folder or disk
    that fails is one line saying that the results in InfluxDB are complete."""
    out_dir = Path(out_dir).expanduser().absolute()
    text = render_html(report, max_plotted=max_plotted)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / report_filename(report)
        _write_atomically(out_dir, target, text)
    except OSError as exc:
        raise ReportDirError(
            f"could not write the report to {out_dir} ({exc.strerror or type(exc).__name__}); "
            "the scores and events in InfluxDB are complete: free space or set "
            "CRICKET_REPORT_DIR to a writable folder and run again for the report"
        ) from None
    return target


def _write_atomically(out_dir: Path, target: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------- markdown

# Data is only ever placed mid-line (newlines flattened), so line-start markers such as
# "-", "+", "1." cannot take effect and are left alone for readability.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!|~])")


def md_escape(value: object) -> str:
    """Escape text from data for markdown: punctuation backslash-escaped, ``& < >`` as
    entities (so no raw HTML gets through), newlines flattened to spaces."""
    text = re.sub(r"[\r\n\t]+", " ", str(value))
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
