"""How much work a request implies, and the documented bounds beyond which it is refused
before anything is read or allocated.

A request is series x steps: a 1 ms step over a day is 86 million points per series, a
1 s chunk over a year is 31 million chunks. Each point costs about 8 bytes in every
array that holds it, and a series is held in a few such arrays while it is read,
prepared and scored, so a batch of series must fit in memory with room to spare.
Core module: no I/O.
"""

from __future__ import annotations

from datetime import timedelta

from cricket.errors import CricketValueError

#: steps in one series read at once (a retrain's window, a scored window plus context):
#: 20 million steps is 160 MB per copy of the series
MAX_STEPS_PER_SERIES = 20_000_000
#: points (series x steps) held by one batch: about 1.6 GB for its raw values alone
MAX_POINTS_PER_BATCH = 200_000_000
#: chunks in one backfill (each is a scoring run with its own queries and tasks)
MAX_CHUNKS = 20_000


class ResourceLimitError(CricketValueError):
    """A request larger than the documented bounds: refused before any work."""


def steps(span: timedelta, every: timedelta) -> int:
    return int(span / every) if every > timedelta(0) else 0


def check_series_span(what: str, span: timedelta, every: timedelta) -> int:
    """Refuse reading ``span`` of one series at ``every`` when it exceeds
    ``MAX_STEPS_PER_SERIES``. Returns the steps."""
    n = steps(span, every)
    if n > MAX_STEPS_PER_SERIES:
        raise ResourceLimitError(
            f"{what} of {span} at a step of {every} is {n:,} points per series, more than "
            f"the {MAX_STEPS_PER_SERIES:,} one series may hold in memory: use a coarser "
            "step (--every) or a shorter window"
        )
    return n


def check_batch(what: str, n_steps: int, series: int, batch_size: int) -> None:
    """Refuse when one batch of ``min(series, batch_size)`` series of ``n_steps`` each
    exceeds ``MAX_POINTS_PER_BATCH``."""
    per_batch = n_steps * max(min(series, batch_size), 1)
    if per_batch > MAX_POINTS_PER_BATCH:
        fit = max(MAX_POINTS_PER_BATCH // max(n_steps, 1), 1)
        raise ResourceLimitError(
            f"{what}: {min(series, batch_size)} series of {n_steps:,} points per batch is "
            f"{per_batch:,} points, more than the {MAX_POINTS_PER_BATCH:,} a batch may "
            f"hold: set CRICKET_BATCH_SIZE to {fit} or less, or use a coarser step"
        )


def check_chunks(start_end: timedelta, chunk: timedelta, every: timedelta) -> int:
    """Refuse a backfill chunk shorter than one step, or more than ``MAX_CHUNKS``
    chunks. Returns the number of chunks."""
    if chunk < every:
        raise ResourceLimitError(
            f"the chunk ({chunk}) is shorter than one step ({every}): a chunk must hold at "
            "least one step; use --chunk 1h"
        )
    n = -(-start_end // chunk)
    if n > MAX_CHUNKS:
        raise ResourceLimitError(
            f"a backfill of {start_end} in chunks of {chunk} is {n:,} chunks, more than "
            f"{MAX_CHUNKS:,}: use a longer --chunk (1h or more)"
        )
    return n
