"""Tasks around the backfill ledger (which chunks are finished)."""

from __future__ import annotations

from datetime import datetime

from cricket.tasks.common import IO_TASK
from prefect import task

from cricket.config import Settings
from cricket.influx import ledger


@task(name="done-chunks", timeout_seconds=120, **IO_TASK)
def done_chunks(
    settings: Settings, model_version: str, scope: str, start: datetime, end: datetime
) -> set[datetime]:
    return ledger.done_chunks(settings, model_version, scope, start, end)


@task(name="mark-chunk-done", timeout_seconds=120, **IO_TASK)
def mark_chunk_done(
    settings: Settings, model_version: str, scope: str, start: datetime, end: datetime,
    points: int, expected: int | None = None,
) -> bool:
    """Record a finished chunk; returns False (and records nothing) for an incomplete one."""
    return ledger.mark_done(settings, model_version, scope, start, end, points, expected)
