"""Extract: find the series a selector matches and read windows of them."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from cricket.tasks.common import IO_TASK
from prefect import get_run_logger, task

from cricket.config import SeriesSelector, Settings
from cricket.influx import make_source
from cricket.influx.base import Source
from cricket.series import SeriesKey


@task(name="discover-series", timeout_seconds=300, **IO_TASK)
def discover_series(settings: Settings, selector: SeriesSelector) -> list[SeriesKey]:
    """The series keys the selector matches, sorted."""
    source = make_source(settings)
    try:
        keys = sorted(source.discover(selector))
    finally:
        source.close()
    get_run_logger().info("selector %s matched %d series", selector.measurement, len(keys))
    return keys


def read_window(
    settings: Settings,
    selector: SeriesSelector,
    keys: list[SeriesKey],
    start: datetime,
    stop: datetime,
    source: Source | None = None,
) -> dict[SeriesKey, pd.Series]:
    """Read [start, stop) for ``keys`` only (InfluxQL names the batch's series in the
    query itself, so a batch never reads the rest of the fleet). ``source``: an open
    source to read with (left open), else one is opened for the call."""
    if not keys:
        return {}
    own = source is None
    src = make_source(settings) if source is None else source
    try:
        return src.read(selector, start, stop, keys=keys)
    finally:
        if own:
            src.close()
