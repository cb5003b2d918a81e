"""Nightly retrain: learn each series' normal shapes and register a new model version."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow

from cricket.config import DetectorSpec, SeriesSelector


@flow(name="nightly-retrain", log_prints=True)
def nightly_retrain(
    selector: SeriesSelector = SeriesSelector(),
    spec: DetectorSpec = DetectorSpec(),
    train_window: timedelta = timedelta(days=7),
    holdout: timedelta = timedelta(hours=24),
    end: datetime | None = None,
) -> dict:
    raise NotImplementedError  # being written
