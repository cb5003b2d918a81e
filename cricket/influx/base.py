"""The interface every InfluxDB source and sink implements.

A *series key* names one series: measurement, field and the values of the group-by
tags, written ``waveform.value{host=cricket001}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import pandas as pd

from cricket.config import SeriesSelector
from cricket.errors import CricketError


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
        """``measurement.field{k=v,...}``. Unambiguous: every character that delimits a
        part (``{`` in the measurement; ``.`` and ``{`` in the field; ``,`` ``=`` ``{``
        ``}`` in tag keys and values) and ``%`` itself are percent-encoded (``,`` is
        ``%2C``), so two different keys never render to the same text and :meth:`parse`
        inverts it exactly. No backslash is added, so the text is also a tag value that
        line protocol can carry (the ``series`` tag of results). Names without those
        characters render as before (``waveform.value{host=a}``)."""
        inner = ",".join(f"{_esc(k, _TAG_SPECIAL)}={_esc(v, _TAG_SPECIAL)}" for k, v in self.tags)
        head = f"{_esc(self.measurement, _MEAS_SPECIAL)}.{_esc(self.field, _FIELD_SPECIAL)}"
        return f"{head}{{{inner}}}"

    @classmethod
    def parse(cls, text: str) -> SeriesKey:
        """Inverse of ``str(key)``: ``SeriesKey.parse(str(k)) == k`` for every key."""
        head, brace, body = text.partition("{")
        if not brace or not body.endswith("}") or "." not in head:
            raise ValueError(f"{text!r} is not a series key such as waveform.value{{host=a}}")
        measurement, _, fld = head.rpartition(".")
        tags: dict[str, str] = {}
        for part in body[:-1].split(",") if body[:-1] else []:
            k, eq, v = part.partition("=")
            if not eq:
                raise ValueError(f"{text!r} is not a series key: tag {part!r} has no '='")
            tags[_unesc(k)] = _unesc(v)
        return cls.make(_unesc(measurement), _unesc(fld), tags)


_MEAS_SPECIAL = "%{"
_FIELD_SPECIAL = "%.{"
_TAG_SPECIAL = "%,={}"
_PERCENT = re.compile(r"%([0-9A-F]{2})")


def _esc(text: str, special: str) -> str:
    if not any(c in text for c in special):
        return text
    return "".join(f"%{ord(c):02X}" if c in special else c for c in text)


def _unesc(text: str) -> str:
    return _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), text) if "%" in text else text


class InfluxError(CricketError):
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
