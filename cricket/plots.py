"""Small matplotlib figures for the anomaly report and the MLflow run artifacts.

Every function draws on a fresh ``matplotlib.figure.Figure`` with the Agg canvas (no
pyplot, no global state, safe in worker threads) and returns PNG bytes; pass ``path``
to also write the file. Figures are small (``DPI`` = 80) so a report of twenty series
stays light. Text that comes from data is drawn with math parsing switched off, so a
series key holding ``$`` is printed as it is and never breaks the renderer.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg backend, explicitly
from matplotlib.figure import Figure

from cricket.series import finite_count, prepare

DPI = 80
PNG_COMPRESS_LEVEL = 1
_VALUE = "#1f4e79"
_RECON = "#e07b00"
_ERROR = "#7f7f7f"
_SCORE = "#b2182b"
_EVENT = "#f4a582"


def _png(fig: Figure, path: str | Path | None = None) -> bytes:
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # zlib level 1: a few % larger files for a third of the encoding time (PNG encoding
    # was ~15% of drawing a report figure at the default level 6)
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


_FIGURES = threading.local()


@contextmanager
def _reused(key: tuple, make: Callable[[], Figure]) -> Iterator[Figure]:
    """A figure of the report's kind ``key``, built once per thread by ``make`` and
    reused: creating the axes and their ticks was a third of the cost of a picture.
    The caller plots the data; afterwards every line, patch and legend is removed, the
    colour cycle restarted and the data and autoscaled view limits reset, so the next picture starts
    from the same blank axes. A figure whose drawing failed is dropped, not reused."""
    figs = _FIGURES.__dict__.setdefault("figures", {})
    fig = figs.pop(key, None) or make()  # popped while in use: a nested call builds its own
    yield fig
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.patches, *ax.collections]:
            artist.remove()
        if ax.legend_ is not None:
            ax.legend_.remove()
        ax.set_prop_cycle(None)
        ax.relim()
        # an axes left without data shows a fresh one's 0-1, not the last picture's range
        if ax.get_autoscalex_on():
            ax.viewLim.intervalx = (0.0, 1.0)
        if ax.get_autoscaley_on():
            ax.viewLim.intervaly = (0.0, 1.0)
    figs[key] = fig


def _events_spans(events: pd.DataFrame | None) -> list[tuple[object, object]]:
    if events is None or len(events) == 0 or not {"start", "end"} <= set(events.columns):
        return []
    return list(zip(events["start"], events["end"], strict=True))


def break_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a NaN row wherever consecutive times are further apart than the
    usual step (a missing stretch, or hours a backfill report leaves out), so lines
    stop at a gap instead of being drawn straight across it."""
    if len(frame) < 3 or not isinstance(frame.index, pd.DatetimeIndex):
        return frame
    steps = frame.index.to_series().diff().iloc[1:]
    step = steps.median()
    gaps = steps[steps > 2 * step]
    if gaps.empty:
        return frame
    filler = pd.DataFrame(np.nan, index=gaps.index - step, columns=frame.columns)
    as_float = frame.astype({c: float for c in frame.columns if frame[c].dtype == bool})
    return pd.concat([as_float, filler]).sort_index()


def plot_series(
    frame: pd.DataFrame,
    threshold: float,
    events: pd.DataFrame | None = None,
    path: str | Path | None = None,
    width: float = 8.0,
) -> bytes:
    """Original vs reconstruction (top) and score with the threshold plus the
    reconstruction error (bottom), with events shaded in both panels.

    ``frame`` is indexed by time with columns value, reconstruction, error, score
    (0-100); ``threshold`` is on the score scale; ``events`` has start and end.
    """
    frame = break_gaps(frame)
    x = frame.index
    dated = isinstance(x, pd.DatetimeIndex)
    if dated:
        # naive UTC datetime64: matplotlib converts those as one array; a tz-aware index
        # went through one Timestamp object per point (most of a day-long picture's cost)
        x = (x.tz_convert("UTC").tz_localize(None) if x.tz is not None else x).to_numpy()
    with _reused(("series", width, dated), lambda: _series_figure(width, dated)) as fig:
        top, bottom, err_ax = fig.axes
        top.plot(x, frame["value"], color=_VALUE, lw=1.0, label="original")
        top.plot(x, frame["reconstruction"], color=_RECON, lw=1.0, ls="--",
                 label="reconstruction")
        top.legend(loc="upper left", fontsize=8, frameon=False, ncols=2)
        bottom.plot(x, frame["score"], color=_SCORE, lw=1.0, label="score")
        bottom.axhline(threshold, color="black", lw=0.8, ls=":",
                       label=f"threshold {threshold:.1f}")
        err_ax.plot(x, frame["error"], color=_ERROR, lw=0.7, alpha=0.8, label="error")
        handles = bottom.get_legend_handles_labels()
        ehandles = err_ax.get_legend_handles_labels()
        bottom.legend(
            handles[0] + ehandles[0], handles[1] + ehandles[1],
            loc="upper left", fontsize=8, frameon=False, ncols=3,
        )
        for start, end in _events_spans(events):
            for ax in (top, bottom):
                ax.axvspan(start, end, color=_EVENT, alpha=0.45, lw=0)
        return _png(fig, path)


def _series_figure(width: float, dated: bool) -> Figure:
    fig = Figure(figsize=(width, 3.6))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    # Fixed margins: a layout engine would cost more than the drawing itself.
    fig.subplots_adjust(left=0.1, right=0.93, top=0.97, bottom=0.12, hspace=0.08)
    top.set_ylabel("value")
    bottom.set_ylim(0, 105)
    bottom.set_ylabel("score")
    err_ax = bottom.twinx()
    err_ax.set_ylabel("error", color=_ERROR, fontsize=8)
    err_ax.tick_params(axis="y", labelsize=7, colors=_ERROR)
    for ax in (top, bottom):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    if dated:
        locator = mdates.AutoDateLocator(maxticks=8)
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return fig


def plot_shape_pair(
    segment: np.ndarray,
    centroid: np.ndarray,
    path: str | Path | None = None,
    label: str = "at peak",
    step_s: float | None = None,
) -> bytes:
    """The actual (windowed) segment at an event's peak beside the nearest normal shape
    of the library, on one shared y axis so their sizes compare. The x axis is the time
    before the peak (minutes when ``step_s``, the series' step in seconds, is given;
    else steps); the y axis the model's scaled units (median 0, IQR 1, windowed)."""
    segment = np.asarray(segment, dtype=float)
    centroid = np.asarray(centroid, dtype=float)
    n = len(segment)
    scale, unit = (step_s / 60.0, "min") if step_s else (1.0, "steps")
    t = (np.arange(n) - (n - 1)) * scale
    with _reused(("pair",), _pair_figure) as fig:
        left, right = fig.axes
        left.plot(t, segment, color=_SCORE, lw=1.3)
        left.set_title(f"actual {label}", fontsize=8, parse_math=False, y=1.0)
        right.plot((np.arange(len(centroid)) - (len(centroid) - 1)) * scale, centroid,
                   color=_VALUE, lw=1.3)
        for ax in (left, right):
            ax.set_xlabel(f"{unit} before the peak", fontsize=7)
        return _png(fig, path)


def _pair_figure() -> Figure:
    fig = Figure(figsize=(3.8, 2.8))
    left, right = fig.subplots(1, 2, sharey=True)
    fig.subplots_adjust(left=0.18, right=0.98, top=0.9, bottom=0.2, wspace=0.08)
    # y=1.0 given: the title keeps its place instead of being measured against the
    # axes' decorations at every draw (nothing is drawn above these axes)
    right.set_title("nearest normal", fontsize=8, y=1.0)
    left.set_ylabel("scaled (windowed)", fontsize=7)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    return fig


def plot_event(
    frame: pd.DataFrame,
    event: pd.Series | dict,
    path: str | Path | None = None,
    margin: float = 1.0,
) -> bytes:
    """One event explained: the actual values against the typical ones (rebuilt from
    normal shapes) in the metric's units (top), and each view's surprise (-log10 p)
    with the event shaded (bottom), over the event and ``margin`` of its length (at
    least 30 steps) either side, on a labelled time axis (UTC)."""
    start, end = pd.Timestamp(event["start"]), pd.Timestamp(event["end"])
    idx = frame.index
    step = (idx[1] - idx[0]) if len(idx) > 1 else pd.Timedelta(seconds=1)
    pad = max((end - start) * margin, step * 30)
    part = frame[(idx >= start - pad) & (idx <= end + pad)]
    x = part.index.tz_convert("UTC").tz_localize(None) if part.index.tz is not None else part.index
    x = x.to_numpy()
    s0 = start.tz_convert("UTC").tz_localize(None) if start.tz is not None else start
    s1 = end.tz_convert("UTC").tz_localize(None) if end.tz is not None else end
    with _reused(("event",), _event_figure) as fig:
        top, bottom = fig.axes
        top.plot(x, part["value"], color=_VALUE, lw=0.9, label="actual")
        top.plot(x, part["reconstruction"], color=_RECON, lw=0.9, ls="--", label="typical")
        top.legend(loc="upper right", fontsize=7, frameon=False, ncols=2)
        fired = event.get("scale") if isinstance(event.get("scale"), str) else ""
        top.set_title(f"most severe event{': ' + fired + ' fired' if fired else ''}",
                      fontsize=8, loc="left", parse_math=False, y=1.0)
        views = [c for c in part.columns if str(c).startswith("surprise:")]
        for c in views:
            bottom.plot(x, part[c], lw=0.9, label=str(c)[len("surprise:"):])
        if views:
            bottom.legend(loc="upper right", fontsize=7, frameon=False, ncols=len(views))
        for ax in (top, bottom):
            ax.axvspan(s0, s1 + step, color=_EVENT, alpha=0.45, lw=0)
        return _png(fig, path)


def _event_figure() -> Figure:
    fig = Figure(figsize=(5.2, 3.4))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    fig.subplots_adjust(left=0.14, right=0.97, top=0.9, bottom=0.16, hspace=0.1)
    top.set_ylabel("value", fontsize=8)
    bottom.set_ylabel("surprise\n(-log10 p)", fontsize=8)
    bottom.set_xlabel("time (UTC)", fontsize=8)
    for ax in (top, bottom):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    return fig


def centroid_gallery(
    centroids: np.ndarray, path: str | Path | None = None, max_shapes: int = 64
) -> bytes:
    """A grid of the library's shapes (at most ``max_shapes``, the most energetic first),
    for the MLflow run of a retrain."""
    c = np.atleast_2d(np.asarray(centroids, dtype=float))
    order = np.argsort(-np.nansum(c * c, axis=1), kind="stable")[:max_shapes]
    n = max(len(order), 1)
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(1.2 * cols, 0.9 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax, idx in zip(axes, order, strict=False):
        ax.plot(c[idx], color=_VALUE, lw=0.9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    shown = len(order)
    fig.suptitle(
        f"{shown} of {len(c)} shapes" if shown < len(c) else f"{len(c)} shapes", fontsize=9
    )
    return _png(fig, path)


def heldout_plot(
    items: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: str | Path | None = None,
    max_series: int = 4,
) -> bytes:
    """Held-out reconstruction for a few series: each item is (name, values,
    reconstruction); one row per series with the absolute error underneath."""
    items = list(items)[:max_series]
    n = max(len(items), 1)
    fig = Figure(figsize=(8.0, 1.9 * n), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n, 1, squeeze=False)).ravel()
    for ax, (name, values, recon) in zip(axes, items, strict=False):
        v = np.asarray(values, dtype=float)
        r = np.asarray(recon, dtype=float)
        ax.plot(v, color=_VALUE, lw=0.9, label="held-out")
        ax.plot(r, color=_RECON, lw=0.9, ls="--", label="reconstruction")
        ax.plot(np.abs(v - r), color=_ERROR, lw=0.7, label="error")
        ax.set_title(str(name), fontsize=8, loc="left", parse_math=False)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        ax.legend(loc="upper right", fontsize=7, frameon=False, ncols=3)
    if not items:
        axes[0].text(0.5, 0.5, "no held-out data", ha="center", va="center")
    return _png(fig, path)


# ---------------------------------------------------------------- the training run


def training_pictures(
    detectors: dict[str, Any],
    fleet: Any,
    holdouts: dict[str, pd.Series],
    spec: Any,
    out_dir: str | Path,
    max_series: int = 4,
) -> dict[str, object]:
    """The pictures a person reviewing a model version looks at: the library of shapes
    (the fleet's, else the first series') and the held-out reconstruction of a few series."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pics: dict[str, object] = {}
    lib_owner = fleet or next((detectors[k] for k in sorted(detectors)), None)
    if lib_owner is not None:
        path = out / "centroid_gallery.png"
        centroid_gallery(lib_owner.library_.centroids_, path=path)
        pics["centroid_gallery"] = path
    rows = []
    for key in sorted(detectors)[:max_series]:
        hold = holdouts.get(key)
        if hold is None or finite_count(hold) < 2 * spec.segment_len:
            continue
        values = prepare(hold, spec).to_numpy(dtype=float)
        sf = detectors[key].score(values)
        rows.append((key, values, np.asarray(sf.reconstruction, dtype=float)))
    if rows:
        path = out / "heldout_reconstruction.png"
        heldout_plot(rows, path=path, max_series=max_series)
        pics["heldout_reconstruction"] = path
    return pics
