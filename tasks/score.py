"""Score: extract a window plus context for a batch of series and score it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from cricket.tasks.common import CPU_TASK, IO_BACKOFF, IO_RETRIES, retry_if_retryable
from cricket.tasks.extract import read_window
from prefect import get_run_logger, task

from cricket.config import DetectorSpec, SeriesSelector, Settings
from cricket.extent import window_context
from cricket.influx import lineprotocol as lp
from cricket.influx import make_source
from cricket.influx.base import Source
from cricket.model import ModelBundle, scoring_copy
from cricket.scoring import ScoredSeries, score_series, settle_with_stored
from cricket.search import one_blas_thread
from cricket.series import SeriesKey


@dataclass
class ScoreBatch:
    """What scoring one batch produced: scored series, notes (series without data or
    without a model) and seconds per stage (``extract``, ``score``)."""

    scored: list[ScoredSeries]
    notes: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # series whose results cannot be written
    #: the results' lines formatted where they were scored (a scoring process), for
    #: ``write_results``; None: formatted when written
    ready: lp.Formatted | None = None


def sub_bundle(bundle: ModelBundle, keys: Iterable[object]) -> ModelBundle:
    """The part of ``bundle`` that scores ``keys``: their own detectors and the fleet
    fallback. What a score task receives (and Dask ships), instead of every series'
    detector; scoring with it gives exactly what the whole bundle gives."""
    names = dict.fromkeys(str(k) for k in keys)
    # by key, not over every detector: a bundle opened from its folder reads only these
    mine = {k: bundle.detectors[k] for k in names if k in bundle.detectors}
    return replace(bundle, detectors=mine, extra={})


@task(
    name="score-batch",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
    retry_condition_fn=retry_if_retryable,
    timeout_seconds=1800,
    **CPU_TASK,
)
def score_batch(
    settings: Settings,
    selector: SeriesSelector,
    bundle: ModelBundle,
    keys: list[SeriesKey],
    start: datetime,
    end: datetime,
    model_version: str | None = None,
    context: timedelta | None = None,
    processes: Any = None,
) -> ScoreBatch:
    """Score [start, end) of each series in ``keys`` with ``context`` of history before
    ``start`` (default: what ``bundle``'s detectors need, ``context_for``). The flows pass
    the whole model's context to every batch: a series' reconstruction (its overlap-add
    grid starts where the data starts) and a fleet-served series' own scaling depend on
    how much history was read, so a fixed context keeps what is stored independent of
    the batch a series lands in. ``bundle`` needs only these keys' detectors (see
    ``sub_bundle``). With
    ``model_version``, an event that opens the window continues the event of the same
    version that closed the previous window, and the previous window's last event is
    revised (shortened or extended) where this window's data settles its end (see
    ``revise_previous``). ``processes``: the run's scoring processes
    (``cricket.tasks.score_processes.ScoringProcesses``), which hold the model and score
    the batch there (the same code, the same results) while this thread waits."""
    log = get_run_logger()
    if processes is not None:
        done = processes.score(keys, start, end, model_version, context, log)
        if done is not None:
            return done
    return score_keys_batch(settings, selector, bundle, keys, start, end, model_version,
                            context, log)


def score_keys_batch(
    settings: Settings,
    selector: SeriesSelector,
    bundle: ModelBundle,
    keys: list[SeriesKey],
    start: datetime,
    end: datetime,
    model_version: str | None,
    context: timedelta | None,
    log: Any,
    format_results: bool = False,
) -> ScoreBatch:
    """What ``score_batch`` does, without Prefect (``log``: where warnings go). With
    ``format_results``, the results' lines are formatted here too (``ScoreBatch.ready``)."""
    spec = bundle.spec
    t0 = time.perf_counter()
    notes: list[str] = []
    skipped: list[str] = []
    writable = []
    for key in keys:  # a series whose results cannot be written must not fail the others
        why = lp.unwritable(key, model_version or "0", settings.model_name)
        if why is None:
            writable.append(key)
        else:
            skipped.append(str(key))
            notes.append(f"skipped {key}: {why}")
            log.warning("skipped series %r: %s", str(key), why)
    keys = writable
    # one source (one HTTP client) for the batch's window and its previous events
    source = make_source(settings)
    try:
        if context is None:
            context = context_for(bundle, selector)
        data = read_window(settings, selector, keys, start - context, end, source=source)
        t1 = time.perf_counter()
        # each series is a few small matrix products: BLAS threads would only compete
        # with the other workers' batches (and wait on each other on a busy machine)
        with one_blas_thread():
            scored = _score_keys(keys, data, bundle, start, spec, notes, log)
        if model_version is not None:
            gap = selector.every * (spec.min_event_gap + 1)
            # the records an event of this window may continue or revise, or (on a
            # re-run) be part of already: an event near the window's start, or one the
            # next window's context reaches (which that window may have revised)
            near = [i for i, res in enumerate(scored)
                    if (res.carried is not None and not res.carried.empty) or (
                        not res.events.empty
                        and (res.events["start"].min() - pd.Timestamp(start) <= gap
                             or pd.Timestamp(end) - res.events["end"].max() <= context + gap))]
            stored = stored_events(settings, [scored[i].series_key or scored[i].key
                                              for i in near],
                                   start, model_version, source=source, until=end)
            for i in near:
                res = scored[i]
                events, revised = settle_with_stored(
                    res.events, res.carried, stored[str(res.series_key or res.key)],
                    pd.Timestamp(start), gap,
                )
                scored[i] = replace(res, events=events, revised=revised)
    finally:
        source.close()
    ready = None
    if format_results and model_version is not None and settings.influx_source == "influxql":
        from cricket.tasks.publish import result_items

        ready = lp.formatted(result_items(scored), str(model_version), settings.model_name,
                             settings.influx_write_batch)
    t2 = time.perf_counter()
    return ScoreBatch(scored, notes, {"extract": t1 - t0, "score": t2 - t1}, skipped, ready)


def _score_keys(keys: list[SeriesKey], data: dict, bundle: ModelBundle, start: datetime,
                spec: DetectorSpec, notes: list[str], log: Any) -> list[ScoredSeries]:
    scored = []
    for key in keys:
        name = str(key)
        s = data.pop(key, None)
        if s is None or not _has_data_from(s, start):
            notes.append(f"{name}: no data in this window")
            continue
        try:
            det, source = bundle.detector_for(name)
        except KeyError as exc:
            notes.append(f"{name}: {exc}")
            log.warning("%s", exc)
            continue
        # A fresh copy per series: what scoring caches on a detector (search tables,
        # ~3 MB each at 150 shapes) is freed with it, so memory stays one series' worth
        # instead of growing with every detector the flow's bundle holds.
        scored.append(score_series(key, s, scoring_copy(det), source, start, spec))
    return scored


def _has_data_from(s: pd.Series, start: datetime) -> bool:
    """Whether ``s`` holds a value at or after ``start`` (on arrays: a boolean-indexed
    Series per series costs more than this whole check)."""
    if s.dtype == np.float64 and s.index.is_monotonic_increasing:
        at = s.index.searchsorted(pd.Timestamp(start), side="left")
        return not np.isnan(s.to_numpy()[at:]).all()
    return bool(s[s.index >= start].notna().any())


#: how far back an event that continues into a window may have started
EVENT_LOOKBACK = timedelta(days=7)


def previous_events(
    settings: Settings, key: SeriesKey | str, start: datetime, model_version: str,
    source: Source | None = None, until: datetime | None = None,
) -> pd.DataFrame | None:
    """Events of ``key`` by ``model_version`` that started in the week before ``start``
    (up to ``until`` when given: the window's own records too, which a later window may
    have extended), or None where the source cannot read results back (e.g. Flux).
    ``source``: an open source to use (left open), else one is opened for the call."""
    own = source is None
    src = make_source(settings) if source is None else source
    try:
        return src.read_events(
            key, start - EVENT_LOOKBACK, until or start, model_version=model_version,
            model_name=settings.model_name,
        )
    finally:
        if own:
            src.close()


def stored_events(
    settings: Settings, keys: list[SeriesKey | str], start: datetime, model_version: str,
    source: Source, until: datetime | None = None,
) -> dict[str, pd.DataFrame | None]:
    """:func:`previous_events` of each of ``keys``, by name: in one query per batch where
    the source reads many series' records at once (InfluxQL), else series by series."""
    if not keys:
        return {}
    many = getattr(source, "read_events_of", None)
    if many is not None:
        return many(keys, start - EVENT_LOOKBACK, until or start,
                    model_version=model_version, model_name=settings.model_name)
    return {str(k): previous_events(settings, k, start, model_version, source=source,
                                    until=until) for k in keys}


def context_for(bundle: ModelBundle, selector: SeriesSelector) -> timedelta:
    """Left context the bundle's detectors need: two of their longest segments (a
    detector with a dominant-period scale needs more than ``spec.segment_len``), so the
    window settles the previous window's provisional end as one pass would
    (``cricket.extent.window_context``)."""
    dets = [*bundle.detectors.values(), *([bundle.fleet] if bundle.fleet is not None else [])]
    steps = max((d.context_len + 1 for d in dets), default=bundle.spec.segment_len)
    return window_context(max(steps, bundle.spec.segment_len)) * selector.every
