"""The interface every InfluxDB source and sink implements.

Series are named by :class:`cricket.series.SeriesKey` (``waveform.value{host=cricket001}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import pandas as pd

from cricket.config import SeriesSelector
from cricket.errors import CricketError
from cricket.series import SeriesKey


class InfluxError(CricketError):
    """A failure talking to InfluxDB. The message names the server and what to do.
    ``retryable`` only where the server did not answer or answered 5xx after the
    client's own retries: a missing database or refused credentials do not heal."""


class InfluxWriteError(InfluxError):
    """A write that failed after its retries. ``written`` points made it; the points
    from ``first_unwritten`` to ``last_unwritten`` did not."""

    def __init__(
        self,
        message: str,
        written: int = 0,
        first_unwritten: pd.Timestamp | None = None,
        last_unwritten: pd.Timestamp | None = None,
    ) -> None:
        super().__init__(message, retryable=True)
        self.written = written
        self.first_unwritten = first_unwritten
        self.last_unwritten = last_unwritten


class Source(Protocol):
    """What the pipeline's tasks use of a source (``cricket.influx.make_source``)."""

    def discover(self, selector: SeriesSelector) -> list[SeriesKey]:
        """The series keys the selector matches (may be empty)."""

    def read(
        self,
        selector: SeriesSelector,
        start: datetime,
        stop: datetime,
        keys: Sequence[SeriesKey] | None = None,
    ) -> dict[SeriesKey, pd.Series]:
        """One regular series per key over [start, stop): a float64 Series indexed by a
        UTC DatetimeIndex with frequency ``selector.every``, missing steps as NaN.
        ``keys``: only those series (None: every series the selector matches)."""

    def read_events(
        self,
        key_or_selector: SeriesKey | SeriesSelector | str,
        start: datetime,
        stop: datetime,
        model_version: str | None = None,
        model_name: str | None = None,
    ) -> pd.DataFrame | None:
        """Events written to ``cricket_event`` in [start, stop) (columns start, end,
        peak, mean, duration_s, ...), or None for a source that cannot read results
        back."""

    def close(self) -> None: ...


class Sink(Protocol):
    def write_scores(self, key: SeriesKey, frame: pd.DataFrame, model_version: str) -> int:
        """Write per-point results to measurement ``cricket_score``. ``frame`` is indexed
        by UTC time with columns value, reconstruction, error, score, anomalous.
        Returns the number of points written. Same time + tags overwrite."""

    def write_events(self, key: SeriesKey, events: pd.DataFrame, model_version: str) -> int:
        """Write events to measurement ``cricket_event``: columns start, end (UTC
        timestamps), peak, mean, duration_s; the point's time is the event start."""

    def close(self) -> None: ...
