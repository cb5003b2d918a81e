"""Score batches in processes forked from the flow's own once the model is loaded.

An hourly run of a large fleet is bound by one core on local threads: reading,
scoring and formatting a batch is numpy between Python and pandas work that holds the
GIL, so two worker threads mostly wait on each other. ``ScoringProcesses`` forks one
process per worker thread right after the champion is loaded: each starts with the
decoded detectors (shared with the flow's process, copy-on-write), imports nothing and
is sent nothing but a batch's keys. A ``score-batch`` task (still a Prefect task run in
a worker thread, with its retries and logs) hands its batch to a process and waits;
the process reads the batch, scores it with the same code as a thread would
(``score_keys_batch``), settles its events with the stored ones, formats its result
lines (the same bytes) and sends everything back; ``write-results`` then only posts
the formatted requests. The report's pictures are drawn by the same processes: while
batches score, one at a time, those of the most severe series so far (a series that
falls out of them before its turn is never drawn); once every batch is handed out, all
of them; whatever is left once every batch is in (``draw``), both cores at once, while
the flow sends the alerts.

The processes never touch Prefect, MLflow or logging handlers: their warnings travel
back with the batch and are logged by the task. A process that dies (killed, out of
memory) breaks the pool; the batch that met it and every later one are scored in the
flow's process as before, with a warning.

Only where forking is sound and pays: Linux, a bundle held in memory (not read on
demand from files, whose handles a fork would share), local threads (Dask and
Prefect's process pool already score elsewhere), more than one batch.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta
from typing import Any

from cricket.tasks.score import ScoreBatch, score_keys_batch, sub_bundle

from cricket.config import SeriesSelector, Settings
from cricket.model import ModelBundle
from cricket.report_pictures import _for_drawing, series_pictures
from cricket.scoring import ScoredSeries
from cricket.series import SeriesKey

#: a run of at least this many series scores in processes (forking two processes of
#: the flow's size costs ~0.1 s; below this the threads are done sooner)
PROCESS_SERIES = 200

#: what the scoring processes work with: set in the flow's process just before they are
#: forked (and cleared right after), so each process starts with it
_WORK: tuple[Settings, SeriesSelector, ModelBundle, int] | None = None

PR_SET_PDEATHSIG = 1  # prctl(2)


def can_fork(bundle: ModelBundle) -> bool:
    """Whether processes forked from this one can score with ``bundle``: Linux (fork
    is the platform's own way to start a process) and every detector in memory."""
    return (sys.platform.startswith("linux")
            and "fork" in multiprocessing.get_all_start_methods()
            and type(bundle.detectors) is dict)


class ScoringProcesses:
    """``workers`` processes forked now, each holding ``bundle``: see the module
    docstring. Use as a context manager (the processes end with it)."""

    def __init__(self, settings: Settings, selector: SeriesSelector, bundle: ModelBundle,
                 workers: int) -> None:
        global _WORK
        self.workers = workers
        self.broken = False
        self._drawing: dict[str, tuple[ScoredSeries, Future]] = {}  # pictures queued
        self._shown: list[ScoredSeries] = []
        self._queued: int | None = 0
        self._lock = threading.RLock()
        _WORK = (settings, selector, bundle, os.getpid())
        # Objects alive now are left out of the garbage collector's passes (in the
        # processes too): a pass writes to every object it visits, which would copy
        # the model's pages into each process.
        gc.freeze()
        try:
            self.pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("fork"), initializer=_started)
            # with fork, the first submission starts every process: now, while _WORK
            # holds this run's model
            self.pool.submit(_ready).result()
        finally:
            gc.unfreeze()
            _WORK = None

    def score(self, keys: list[SeriesKey], start: datetime, end: datetime,
              model_version: str | None, context: timedelta | None, log: Any
              ) -> ScoreBatch | None:
        """The batch of ``keys`` scored in a process (``score_keys_batch``), its
        warnings logged to ``log``; None when the processes are gone (the caller
        scores it itself)."""
        if self.broken:
            return None
        try:
            done, warnings = self.pool.submit(
                _score, keys, start, end, model_version, context).result()
        except BrokenProcessPool as exc:
            self.broken = True
            log.warning("a scoring process ended unexpectedly (%s): the run's remaining "
                        "batches are scored in the flow's own process", exc)
            return None
        for message in warnings:
            log.warning("%s", message)
        return done

    def draw_ahead(self, shown: list[ScoredSeries], queued: int | None = None) -> None:
        """Draw the pictures of ``shown`` (the series the report would show so far, most
        severe first) in the processes, at most ``queued`` of them waiting or being
        drawn at a time (None: all of them now): each joins the queue behind the batches
        already handed out. A queued picture of a series no longer among them is taken
        back where it has not started."""
        with self._lock:
            self._shown, self._queued = list(shown), queued
            keep = {id(r) for r in shown}
            for key, (r, fut) in list(self._drawing.items()):
                if id(r) not in keep and fut.cancel():
                    del self._drawing[key]
            self._pump()

    def _pump(self) -> None:
        busy = sum(1 for _, fut in self._drawing.values() if not fut.done())
        for r in self._shown:
            if self.broken or (self._queued is not None and busy >= self._queued):
                return
            entry = self._drawing.get(r.key)
            if entry is not None and entry[0] is r:
                continue
            try:
                fut = self.pool.submit(series_pictures, _for_drawing(r))
            except (BrokenProcessPool, RuntimeError):  # broken, or shut down
                self.broken = True
                return
            self._drawing[r.key] = (r, fut)
            busy += 1
            fut.add_done_callback(self._drawn)

    def _drawn(self, fut: Future) -> None:
        with self._lock:
            if not self.broken:
                self._pump()

    def draw(self, shown: list[ScoredSeries]) -> Pictures:
        """The report's pictures of ``shown`` (``series_pictures``) once every batch is
        scored: those drawn ahead, the rest drawn now in the processes, one series a
        job (the flow's process goes on with the last writes and the alerts)."""
        self.draw_ahead(shown)
        with self._lock:
            if self.broken:
                return Pictures([])
            return Pictures([(r.key, entry[1]) for r in shown
                             if (entry := self._drawing.get(r.key)) is not None
                             and entry[0] is r])

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ScoringProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pictures:
    """What :meth:`ScoringProcesses.draw` returns: ``result()`` gives the pictures by
    series key; one that failed (or whose process died) is left out, and the report
    draws it itself."""

    def __init__(self, futures: list[tuple[str, Future]]) -> None:
        self._futures = futures

    def result(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, fut in self._futures:
            try:
                out[key] = fut.result()
            except Exception:  # noqa: BLE001 - the report draws it
                continue
        return out


class _Warnings:
    """A logger's ``warning`` for the scoring processes: kept, sent back with the batch."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def warning(self, msg: str, *args: object) -> None:
        self.messages.append(msg % args if args else msg)


def _started() -> None:
    """In each new process: end with the flow's process (a killed or cancelled run must
    not leave processes holding the model behind: they would wait for work forever),
    and one BLAS thread for its life (a batch is small products; more threads would
    only compete with the other processes)."""
    from threadpoolctl import threadpool_limits

    try:  # Linux: SIGKILL when the thread that forked this process ends
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - not Linux's C library
        pass
    if _WORK is not None and os.getppid() != _WORK[3]:  # it ended before prctl
        os._exit(1)
    threadpool_limits(1, user_api="blas")


def _ready() -> bool:
    return _WORK is not None


def _score(keys: list[SeriesKey], start: datetime, end: datetime,
           model_version: str | None, context: timedelta | None
           ) -> tuple[ScoreBatch, list[str]]:
    if _WORK is None:  # pragma: no cover - only a process forked with its work runs this
        raise RuntimeError("this process was not started by ScoringProcesses")
    settings, selector, bundle, _ = _WORK
    log = _Warnings()
    done = score_keys_batch(settings, selector, sub_bundle(bundle, keys), keys, start, end,
                            model_version, context, log, format_results=True)
    return done, log.messages
