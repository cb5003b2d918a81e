"""Backfill: score every chunk of a past range through the hourly scoring code."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow

from cricket.config import SeriesSelector


@flow(name="backfill", log_prints=True)
def backfill(
    start: datetime,
    end: datetime,
    chunk: timedelta = timedelta(hours=1),
    model_version: str | None = None,
    selector: SeriesSelector = SeriesSelector(),
) -> dict:
    raise NotImplementedError  # being written
