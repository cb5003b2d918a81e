"""The report's pictures: each plotted series' figures as inline ``<img>`` tags
(:func:`series_pictures`), and :class:`PictureDrawer`, which draws them in a process of
its own while the flow is still scoring.

    html = series_pictures(scored)             # what the report shows for one series

    with PictureDrawer() as drawer:            # a process that draws ahead
        for batch in batches:
            drawer.offer(score(batch))         # the most severe so far are drawn
        pictures = drawer.ahead(final).result()  # {key: html}, for Report.pictures
"""

from __future__ import annotations

import base64
import multiprocessing
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np

from cricket.report import MAX_PLOTTED, _e, _step_seconds, anomalous, by_severity
from cricket.scoring import ScoredSeries


def _img(png: bytes, alt: str, css: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{css}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


_PLOT_ERRORS = (np.linalg.LinAlgError, OverflowError, FloatingPointError, ValueError)


def series_pictures(r: ScoredSeries) -> str:
    """The pictures of one plotted series as HTML (``<img>`` tags with the PNGs inline,
    or a note where a picture cannot be drawn). What drawing a report costs: a flow may
    draw them ahead (``Report.pictures``, :class:`PictureDrawer`) while it scores."""
    from cricket import plots

    parts: list[str] = []
    if r.frame is not None and len(r.frame):
        try:
            png = plots.plot_series(r.frame, r.threshold, r.events)
        except _PLOT_ERRORS as exc:  # values near the float limits cannot be drawn
            parts.append(f'<p class="muted">plot unavailable: {_e(type(exc).__name__)} '
                         "(values too large or too small to draw)</p>")
        else:
            parts.append(_img(png, f"original, reconstruction and score of {r.key}", "plot"))
    else:
        parts.append('<p class="muted">no data points to plot</p>')
    pi = r.peak_event_index()
    if r.n_events and r.frame is not None and len(r.frame):
        try:
            png = plots.plot_event(r.frame, by_severity(r.events).iloc[0])
        except _PLOT_ERRORS:  # values near the float limits cannot be drawn
            png = None
        if png is not None:
            parts.append(_img(png, f"the most severe event of {r.key}: actual against "
                                   "typical, and each view's surprise", "plot"))
    if r.nearest_shapes and pi is not None and pi < len(r.nearest_shapes):
        segment, centroid = r.nearest_shapes[pi]
        if segment is not None and centroid is not None and len(segment) and len(centroid):
            try:
                png = plots.plot_shape_pair(segment, centroid, step_s=_step_seconds(r.frame))
            except _PLOT_ERRORS:
                png = None
            if png is not None:
                parts.append(
                    _img(png, f"segment at the peak of {r.key} and nearest normal shape", "pair")
                )
    return "\n".join(parts)


# ------------------------------------------------------------ drawing in a process


def _warm_up() -> None:
    """Run first in the drawing process: the imports (matplotlib, pandas) are paid
    while the flow still scores its first batch."""
    import cricket.plots  # noqa: F401


def _for_drawing(r: ScoredSeries) -> ScoredSeries:
    """What a picture needs of ``r`` (sent to the drawing process): not the event
    records it carries or revises."""
    return replace(r, carried=None, revised=None)


#: the failures of a process pool that mean "draw in the flow's own process instead"
_NO_PROCESS = (OSError, RuntimeError, ValueError, AssertionError, EOFError)


class PictureDrawer:
    """Draws the pictures of the series a report will show in a separate process, while
    the flow is still scoring later batches. The flow's process is bound by one core
    (the GIL); drawing costs ~0.1 CPU s a picture, three a series; in its own process it
    runs on another core instead of after the last batch.

    Which series a report draws (the ``limit`` most severe, :func:`cricket.report.
    anomalous`) is known only once every batch is scored. Each batch's results are
    :meth:`offer`-ed: the most severe ``limit`` so far are drawn, most severe first,
    ``queued`` at a time, and one that falls out of them before its turn is dropped
    (once out, a series never comes back). :meth:`ahead` takes the final series and
    returns a future of their pictures by key (what ``Report.pictures`` holds); a
    picture that failed or could not be drawn there is left out, and the report draws
    it itself. Where no process can be started, nothing is drawn ahead.
    :meth:`close` ends the process (a ``with`` block does)."""

    def __init__(self, limit: int = MAX_PLOTTED, queued: int = 2,
                 start_method: str = "spawn") -> None:
        self.limit = limit
        self.queued = queued
        self._lock = threading.RLock()
        self._best: list[ScoredSeries] = []
        self._drawing: dict[str, tuple[ScoredSeries, Future]] = {}
        #: pictures drawn, and those drawn for series that were not shown in the end
        self.stats = {"drawn": 0, "dropped": 0}
        self._pool: ProcessPoolExecutor | None = None
        try:
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context(start_method))
            self._pool.submit(_warm_up)
        except _NO_PROCESS:  # e.g. a daemonic process may not start children
            self._close_pool()

    def __enter__(self) -> PictureDrawer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def active(self) -> bool:
        """Whether a drawing process is there (else the report draws every picture)."""
        return self._pool is not None

    def offer(self, results: Iterable[ScoredSeries]) -> None:
        """Results of a batch: those among the ``limit`` most severe so far are drawn."""
        with self._lock:
            if self._pool is None:
                return
            self._best = anomalous([*self._best, *results])[: self.limit]
            kept = {id(r) for r in self._best}
            for key, (r, fut) in list(self._drawing.items()):
                if id(r) not in kept and fut.cancel():  # not started yet: never drawn
                    del self._drawing[key]
            self._pump(self.queued)

    def ahead(self, final: Sequence[ScoredSeries], timeout: float = 300.0) -> _Ahead:
        """The pictures of ``final`` (the series the report shows) by key, as a future
        (``.result()``): what was drawn already, and the rest drawn now."""
        with self._lock:
            self._best = list(final)
            self._pump(len(final))  # no batch is left to score: every one is wanted now
            futures = [(r.key, entry[1]) for r in final
                       if (entry := self._drawing.get(r.key)) is not None and entry[0] is r]
        return _Ahead(futures, timeout)

    def _pump(self, queued: int) -> None:
        """Keep ``queued`` pictures submitted and unfinished, most severe first."""
        if self._pool is None:
            return
        busy = sum(1 for _, fut in self._drawing.values() if not fut.done())
        for r in self._best:
            if busy >= queued:
                break
            if r.key in self._drawing:
                continue
            try:
                fut = self._pool.submit(series_pictures, _for_drawing(r))
            except _NO_PROCESS:  # the process died (BrokenProcessPool is a RuntimeError)
                self._close_pool()
                return
            self._drawing[r.key] = (r, fut)
            busy += 1
            fut.add_done_callback(self._done)

    def _done(self, fut: Future) -> None:
        with self._lock:
            if not fut.cancelled() and fut.exception() is None:
                self.stats["drawn"] += 1
            self._pump(self.queued)

    def close(self) -> None:
        """End the drawing process; pictures not yet drawn are dropped."""
        with self._lock:
            shown = {id(r) for r in self._best}
            self.stats["dropped"] = sum(1 for r, fut in self._drawing.values()
                                        if id(r) not in shown and fut.done()
                                        and not fut.cancelled())
            self._close_pool()

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class _Ahead:
    """The future :meth:`PictureDrawer.ahead` returns."""

    def __init__(self, futures: list[tuple[str, Future]], timeout: float) -> None:
        self._futures = futures
        self._timeout = timeout

    def result(self) -> dict[str, str]:
        """The pictures drawn, by series key (a failed one is left out)."""
        out: dict[str, Any] = {}
        for key, fut in self._futures:
            try:
                out[key] = fut.result(timeout=self._timeout)
            except Exception:  # noqa: BLE001 - a failure or a timeout: the report draws it
                continue
        return out
