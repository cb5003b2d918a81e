"""The point model's report: each event's point against its nearest centroid.

For every device with events: a table of the events naming the field that contributed
most, a scatter of two chosen features (the contributing field against the field it is
most correlated with in the window: normal steps grey, anomalous steps red, the
centroids as black crosses, the event's peak ringed) and per-feature bars (how far each
feature of the peak is from the nearest centroid, in the model's scaled units, with the
peak's and the centroid's values in the fields' own units as labels).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cricket.multifield import PointModel
from cricket.series import SeriesKey

DPI = 80


@dataclass
class DeviceResult:
    key: SeriesKey
    frame: pd.DataFrame  # the fields, as read
    scored: pd.DataFrame  # PointModel.score
    events: pd.DataFrame  # point_events
    model: PointModel

    @property
    def series_key(self) -> SeriesKey:
        """The device key (alerts group on its tags)."""
        return self.key


def scatter_pair(result: DeviceResult, contributor: str) -> tuple[str, str]:
    """The contributing field and the field most correlated with it (|r|) in the window."""
    fields = result.model.fields
    others = [f for f in fields if f != contributor]
    normal = result.frame[~result.scored["anomalous"].to_numpy(dtype=bool)]
    corr = normal[fields].corr()[contributor].drop(contributor).abs().fillna(0.0)
    partner = str(corr.idxmax()) if len(corr) else others[0]
    return partner, contributor


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode()


def peak_row(result: DeviceResult, event: pd.Series) -> pd.Timestamp:
    span = result.scored[(result.scored.index >= event["start"])
                         & (result.scored.index < event["end"])]
    return span["distance"].idxmax()


def scatter_figure(result: DeviceResult, event: pd.Series) -> str:
    x_name, y_name = scatter_pair(result, str(event["contributor"]))
    m = result.model
    bad = result.scored["anomalous"].to_numpy(dtype=bool)
    centers = m.detector_.cluster_centers_ * m.scale_ + m.center_
    ix, iy = m.fields.index(x_name), m.fields.index(y_name)
    t = peak_row(result, event)
    fig = Figure(figsize=(4.2, 3.4))
    ax = fig.add_subplot()
    ax.scatter(result.frame[x_name][~bad], result.frame[y_name][~bad], s=6, c="#bbbbbb",
               label="normal steps")
    ax.scatter(result.frame[x_name][bad], result.frame[y_name][bad], s=14, c="#b2182b",
               label="anomalous steps")
    ax.scatter(centers[:, ix], centers[:, iy], marker="x", c="black", s=40, label="centroids")
    near = m.nearest_centroid(result.frame.loc[t, m.fields].to_numpy(dtype=np.float64))
    ax.plot([result.frame.loc[t, x_name], near[ix]], [result.frame.loc[t, y_name], near[iy]],
            c="black", lw=1)
    ax.scatter([result.frame.loc[t, x_name]], [result.frame.loc[t, y_name]], s=90,
               facecolors="none", edgecolors="black", label="the event's peak")
    ax.set_xlabel(x_name, parse_math=False)
    ax.set_ylabel(y_name, parse_math=False)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def feature_deviations(result: DeviceResult, t: pd.Timestamp) -> pd.DataFrame:
    """Per feature at ``t``: value, nearest centroid's value (own units), and the
    distance between them in scaled units (what the model compares)."""
    m = result.model
    row = result.frame.loc[t, m.fields].to_numpy(dtype=np.float64)
    near = m.nearest_centroid(row)
    return pd.DataFrame({"value": row, "centroid": near,
                         "scaled_distance": np.abs(row - near) / m.scale_}, index=m.fields)


def bars_figure(result: DeviceResult, event: pd.Series) -> str:
    dev = feature_deviations(result, peak_row(result, event))
    fig = Figure(figsize=(4.2, 3.0))
    ax = fig.add_subplot()
    colors = ["#b2182b" if f == event["contributor"] else "#1f4e79" for f in dev.index]
    ax.bar(dev.index, dev["scaled_distance"], color=colors)
    for i, (_, r) in enumerate(dev.iterrows()):
        ax.annotate(f"{r['value']:.3g} vs {r['centroid']:.3g}", (i, r["scaled_distance"]),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("distance from the nearest centroid (scaled)")
    fig.tight_layout()
    return _png(fig)


def _waveform_link(name: str | None) -> list[str]:
    """A link to the waveform model's report of the same window and version (same folder)."""
    if not name:
        return []
    quoted = html.escape(name, quote=True)
    return [f"<p class='waveform-link'>The waveform model's report of the same window and "
            f"version: <a href='{quoted}'>{quoted}</a> (in this folder once its run has "
            "been made).</p>"]


def _missing_html(missing: list[str]) -> list[str]:
    """The devices the model knows that sent no data, or far less than expected."""
    if not missing:
        return []
    return ["<h2 class='missing'>Devices missing data</h2><ul class='missing'>"
            + "".join(f"<li>{html.escape(m)}</li>" for m in missing) + "</ul>"]


def _answers_html(incidents: list[str], answers: list[dict[str, str]]) -> list[str]:
    """The incidents this run opened and the labels/silences on its devices."""
    out = []
    if incidents:
        out.append("<h2>Incidents opened</h2><ul class='incidents'>"
                   + "".join(f"<li>{html.escape(i)}</li>" for i in incidents) + "</ul>")
    if answers:
        out.append("<h2>Labels and silences</h2><table border='1' class='answers'><tr>"
                   "<th>what</th><th>series</th><th>from</th><th>to</th><th>by</th><th>why</th></tr>"
                   + "".join("<tr>" + "".join(f"<td>{html.escape(str(a.get(c, '')))}</td>" for c in
                                              ("what", "series", "from", "to", "by", "why"))
                             + "</tr>" for a in answers) + "</table>")
    return out


def render_html(results: list[DeviceResult], title: str, model_version: str,
                incidents: list[str] | None = None,
                answers: list[dict[str, str]] | None = None,
                waveform_report: str | None = None, missing: list[str] | None = None) -> str:
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>",
             f"<body><h1>{html.escape(title)}</h1>",
             f"<p>point model of version {html.escape(str(model_version))}; "
             f"{len(results)} device(s) scored, "
             f"{sum(len(r.events) for r in results)} event(s).</p>",
             *_missing_html(missing or []),
             *_waveform_link(waveform_report),
             *_answers_html(incidents or [], answers or [])]
    for r in results:
        if r.events.empty:
            continue
        parts.append(f"<h2>{html.escape(str(r.key))}</h2><table border='1'><tr><th>start</th>"
                     "<th>end</th><th>peak</th><th>field that contributed most</th></tr>")
        for _, e in r.events.iterrows():
            parts.append(f"<tr><td>{e['start']}</td><td>{e['end']}</td><td>{e['peak']:.1f}</td>"
                         f"<td class='contributor'>{html.escape(str(e['contributor']))}</td></tr>")
        parts.append("</table>")
        for _, e in r.events.iterrows():
            parts.append(
                f"<div class='event'><h3>{e['start']}: {html.escape(str(e['contributor']))} "
                f"out of line with the other fields</h3>"
                f"<img alt='scatter' src='data:image/png;base64,{scatter_figure(r, e)}'>"
                f"<img alt='per-feature bars' src='data:image/png;base64,{bars_figure(r, e)}'>"
                "</div>"
            )
    quiet = [str(r.key) for r in results if r.events.empty]
    if quiet:
        parts.append("<h2>Quiet devices</h2><ul>"
                     + "".join(f"<li>{html.escape(k)}</li>" for k in quiet) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def markdown_summary(results: list[DeviceResult], model_version: str) -> str:
    lines = [f"Point model version {model_version}: {len(results)} device(s)", "",
             "| device | start | end | peak | field |", "|---|---|---|---|---|"]
    for r in results:
        for _, e in r.events.iterrows():
            lines.append(f"| {r.key} | {e['start']} | {e['end']} | {e['peak']:.1f} | "
                         f"{e['contributor']} |")
    return "\n".join(lines)


def event_table(results: list[DeviceResult]) -> list[dict[str, object]]:
    """One row per event (the Prefect table artifact)."""
    return [{"device": str(r.key), "start": str(e["start"]), "end": str(e["end"]),
             "peak score": round(float(e["peak"]), 1), "field": str(e["contributor"])}
            for r in results for _, e in r.events.iterrows()]


def write_report(results: list[DeviceResult], folder: Path, name: str, title: str,
                 model_version: str, incidents: list[str] | None = None,
                 answers: list[dict[str, str]] | None = None,
                 waveform_report: str | None = None, missing: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(render_html(results, title, model_version, incidents, answers,
                                waveform_report, missing))
    return path
