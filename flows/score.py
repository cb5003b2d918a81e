"""Hourly score: score the last complete window with the champion model and publish."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow

from cricket.config import SeriesSelector


@flow(name="hourly-score", log_prints=True)
def hourly_score(
    selector: SeriesSelector = SeriesSelector(),
    window: timedelta = timedelta(hours=1),
    at: datetime | None = None,
    model_version: str | None = None,
) -> dict:
    raise NotImplementedError  # being written
