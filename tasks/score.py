"""Score: extract a window plus context for a batch of series and score it."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import get_run_logger, task

from cricket.config import SeriesSelector, Settings
from cricket.influx.base import SeriesKey
from cricket.model import ModelBundle
from cricket.pipeline import ScoredSeries, score_series
from tasks.common import CPU_TASK, IO_BACKOFF, IO_RETRIES
from tasks.extract import read_window


@task(
    name="score-batch",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
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
) -> tuple[list[ScoredSeries], list[str]]:
    """Score [start, end) of each series in ``keys`` with one segment of left context.
    Returns the scored series and notes (series without data or without a model)."""
    log = get_run_logger()
    spec = bundle.spec
    context = spec.segment_len * selector.every
    data = read_window(settings, selector, keys, start - context, end)
    scored, notes = [], []
    for key in keys:
        name = str(key)
        s = data.get(key)
        if s is None or s[s.index >= start].notna().sum() == 0:
            notes.append(f"{name}: no data in this window")
            continue
        try:
            det, source = bundle.detector_for(name)
        except KeyError as exc:
            notes.append(f"{name}: {exc}")
            log.warning("%s", exc)
            continue
        scored.append(score_series(key, s, det, source, start, spec))
    return scored, notes


def context_for(bundle: ModelBundle, selector: SeriesSelector) -> timedelta:
    return bundle.spec.segment_len * selector.every
