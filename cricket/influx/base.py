"""The interface every InfluxDB source and sink implements.

A *series key* names one series: measurement, field and the values of the group-by
tags, written ``waveform.value{host=cricket001}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import pandas as pd

from cricket.config import SeriesSelector


@dataclass(frozen=True, order=True)
class SeriesKey:
    measurement: str
    field: str
    tags: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # sorted (key, value)

    @classmethod
    def make(cls, measurement: str, field: str, tags: dict[str, str] | None = None) -> SeriesKey:
        return cls(measurement, field, tuple(sorted((tags or {}).items())))

    @property
    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)

    def __str__(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in self.tags)
        return f"{self.measurement}.{self.field}{{{inner}}}"

    @classmethod
    def parse(cls, text: str) -> SeriesKey:
        """Inverse of ``str(key)`` for keys whose tag values hold no ``,`` ``=`` or ``}``."""
        head, _, rest = text.partition("{")
        measurement, _, fld = head.rpartition(".")
        tags = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if p)
        return cls.make(measurement, fld, tags)


class InfluxError(RuntimeError):
    """A failure talking to InfluxDB. The message names the server and what to do."""


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
        super().__init__(message)
        self.written = written
        self.first_unwritten = first_unwritten
        self.last_unwritten = last_unwritten


class Source(Protocol):
    def discover(self, selector: SeriesSelector) -> list[SeriesKey]:
        """The series keys the selector matches (may be empty)."""

    def read(
        self, selector: SeriesSelector, start: datetime, stop: datetime
    ) -> dict[SeriesKey, pd.Series]:
        """One regular series per key over [start, stop): a float64 Series indexed by a
        UTC DatetimeIndex with frequency ``selector.every``, missing steps as NaN."""

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
