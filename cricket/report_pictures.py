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
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
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


#: how much lower the drawing process's priority is than the flow's (``os.nice``)
NICE = 5
#: how long the report waits in all for pictures the process has not drawn yet, once
#: every batch is in (it overlaps the last writes and the alerts); then it draws them
WAIT_S = 1.0


def _for_drawing(r: ScoredSeries) -> ScoredSeries:
    """What a picture needs of ``r`` (sent to the drawing process): not the event
    records it carries or revises."""
    return replace(r, carried=None, revised=None)


def _send(stream: Any, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def _receive(stream: Any) -> Any:
    """The next message, or None at the end of the stream."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    n = int.from_bytes(head, "little")
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)  # noqa: S301 - between this program's own two processes


class DrawingProcess:
    """One child process that draws :func:`series_pictures` for the series sent to it
    (it imports this module and matplotlib, nothing of the parent's, whatever ran the
    parent: a served flow run's main module is Prefect's engine, which a
    multiprocessing child would import again, ~2 CPU s). Messages
    are pickles between the two processes over the child's stdin and a copy of its
    stdout (its own prints go to stderr). ``submit`` returns a future; the child dying
    fails every future not finished, and later submits raise RuntimeError."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[int, Future] = {}
        self._next = 0
        self._broken: str | None = None
        # run where this very cricket package is found first (not the working folder's)
        root = Path(__file__).resolve().parent.parent
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from cricket.report_pictures import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root,
        )
        self._reader = threading.Thread(target=self._read, name="picture-results", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def submit(self, r: ScoredSeries) -> Future:
        fut: Future = Future()
        with self._lock:
            if self._broken is not None:
                raise RuntimeError(f"the drawing process is gone ({self._broken})")
            job, self._next = self._next, self._next + 1
            self._futures[job] = fut
            try:
                _send(self._proc.stdin, (job, r))
            except (OSError, ValueError) as exc:  # a closed pipe: the process is gone
                del self._futures[job]
                self._broken = type(exc).__name__
                raise RuntimeError(f"the drawing process is gone ({exc})") from None
        return fut

    def _read(self) -> None:
        while (msg := _receive(self._proc.stdout)) is not None:
            job, ok, value = msg
            with self._lock:
                fut = self._futures.pop(job, None)
            if fut is None:
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(RuntimeError(value))
        with self._lock:
            self._broken = self._broken or "ended"
            left, self._futures = list(self._futures.values()), {}
        for fut in left:
            fut.set_exception(RuntimeError("the drawing process ended before drawing this"))

    def close(self) -> None:
        """End the process (what it has not drawn yet is dropped)."""
        with self._lock:
            self._broken = self._broken or "closed"
        for stream in (self._proc.stdin,):
            try:
                stream.close()
            except OSError:
                pass
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill is not refused
            pass
        self._reader.join(timeout=10)
        self._proc.stdout.close()


def _serve() -> None:
    """The drawing process: draw each series received, send back its pictures."""
    out = os.fdopen(os.dup(1), "wb")  # the messages; print() and warnings go to stderr
    os.dup2(2, 1)
    jobs: queue.Queue = queue.Queue()

    def take() -> None:  # read ahead, so the parent's writes never wait on a drawing
        while (msg := _receive(sys.stdin.buffer)) is not None:
            jobs.put(msg)
        jobs.put(None)

    threading.Thread(target=take, daemon=True).start()
    # below the flow's priority: on cores the flow and others keep busy, drawing ahead
    # must not slow the batches it overlaps (it takes what they leave)
    try:
        os.nice(NICE)
    except OSError:  # pragma: no cover - lowering one's own priority is always allowed
        pass
    import cricket.plots  # noqa: F401 - imported while the first batch scores

    while (msg := jobs.get()) is not None:
        job, r = msg
        try:
            reply = (job, True, series_pictures(r))
        except Exception as exc:  # noqa: BLE001 - sent back: the report draws it itself
            reply = (job, False, f"{type(exc).__name__}: {exc}")
        try:
            _send(out, reply)
        except OSError:  # the parent is gone
            return


class PictureDrawer:
    """Draws the pictures of the series a report will show in a separate process, while
    the flow is still scoring later batches. The flow's process is bound by one core
    (the GIL); drawing costs ~0.1 CPU s a picture, three a series; in its own process it
    runs on another core instead of after the last batch.

    Which series a report draws (the ``limit`` most severe, :func:`cricket.report.
    anomalous`) is known only once every batch is scored. Each batch's results are
    :meth:`offer`-ed: the most severe ``limit`` so far are drawn, most severe first,
    ``queued`` at a time (a series that falls out of them before its turn is never
    sent; once out, a series never comes back). :meth:`ahead` takes the final series and
    returns a future of their pictures by key (what ``Report.pictures`` holds); a
    picture that failed or could not be drawn there is left out, and the report draws
    it itself. Where no process can be started, nothing is drawn ahead.
    :meth:`close` ends the process (a ``with`` block does)."""

    def __init__(self, limit: int = MAX_PLOTTED, queued: int = 2) -> None:
        self.limit = limit
        self.queued = queued
        self._lock = threading.RLock()
        self._best: list[ScoredSeries] = []
        self._drawing: dict[str, tuple[ScoredSeries, Future]] = {}
        #: pictures drawn, and those drawn for series that were not shown in the end
        self.stats = {"drawn": 0, "dropped": 0}
        self._process: DrawingProcess | None = None
        try:
            self._process = DrawingProcess()
        except OSError:  # no process can be started here: the report draws them
            self._process = None

    def __enter__(self) -> PictureDrawer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def active(self) -> bool:
        """Whether a drawing process is there (else the report draws every picture)."""
        return self._process is not None

    def offer(self, results: Iterable[ScoredSeries]) -> None:
        """Results of a batch: those among the ``limit`` most severe so far are drawn."""
        with self._lock:
            if self._process is None:
                return
            self._best = anomalous([*self._best, *results])[: self.limit]
            self._pump(self.queued)

    def ahead(self, final: Sequence[ScoredSeries], timeout: float = WAIT_S) -> _Ahead:
        """The pictures of ``final`` (the series the report shows) by key, as a future
        (``.result()``): what was drawn already, and the rest drawn now; ``.result()``
        waits at most ``timeout`` seconds in all for those not drawn yet (the process runs
        below the flow's priority: on a busy machine the report draws what is late)."""
        with self._lock:
            self._best = list(final)
            self._pump(None)  # no batch is left to score: every one is wanted now
            futures = [(r.key, entry[1]) for r in final
                       if (entry := self._drawing.get(r.key)) is not None and entry[0] is r]
        return _Ahead(futures, timeout)

    def _pump(self, queued: int | None) -> None:
        """Keep ``queued`` pictures sent and unfinished (None: all), most severe first."""
        if self._process is None:
            return
        busy = sum(1 for _, fut in self._drawing.values() if not fut.done())
        for r in self._best:
            if queued is not None and busy >= queued:
                break
            if r.key in self._drawing:
                continue
            try:
                fut = self._process.submit(_for_drawing(r))
            except RuntimeError:  # the process died: the report draws the rest
                self._process = None
                return
            self._drawing[r.key] = (r, fut)
            busy += 1
            fut.add_done_callback(self._done)

    def _done(self, fut: Future) -> None:
        with self._lock:
            if fut.exception() is None:
                self.stats["drawn"] += 1
            self._pump(self.queued)

    def close(self) -> None:
        """End the drawing process; pictures not yet drawn are dropped."""
        with self._lock:
            shown = {id(r) for r in self._best}
            self.stats["dropped"] = sum(1 for r, fut in self._drawing.values()
                                        if id(r) not in shown and fut.done()
                                        and fut.exception() is None)
            process, self._process = self._process, None
        if process is not None:
            process.close()


class _Ahead:
    """The future :meth:`PictureDrawer.ahead` returns."""

    def __init__(self, futures: list[tuple[str, Future]], timeout: float) -> None:
        self._futures = futures
        self._timeout = timeout

    def pending(self) -> list[str]:
        """Keys of the pictures the process has not drawn yet."""
        return [key for key, fut in self._futures if not fut.done()]

    def joined(self, here: Any) -> _Joined:
        """A future of these pictures completed by ``here``'s (a future of the pictures
        drawn in the flow of those :meth:`pending` now: both drawn at once, the late
        ones are not waited for)."""
        return _Joined(self, here)

    def result(self, timeout: float | None = None) -> dict[str, str]:
        """The pictures drawn, by series key (a failed or late one is left out)."""
        out: dict[str, Any] = {}
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        for key, fut in self._futures:
            try:
                out[key] = fut.result(timeout=max(deadline - time.monotonic(), 0.0))
            except Exception:  # noqa: BLE001 - a failure or a timeout: the report draws it
                continue
        return out


class _Joined:
    """What :meth:`_Ahead.joined` returns."""

    def __init__(self, ahead: _Ahead, here: Any) -> None:
        self._ahead = ahead
        self._here = here

    def result(self) -> dict[str, str]:
        here = self._here.result() if self._here is not None else {}
        return {**self._ahead.result(timeout=0.0), **here}
