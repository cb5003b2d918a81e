"""Missing data: a series the model knows that sent no data, or far less than expected,
in a scored window is an event of its own (``data_missing``): for the people on call a
series that stops reporting is an incident, not an empty report.

Pure: counts in, findings out (the flows count, write and report them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

#: a series that sent fewer than this share of the points a window should hold
MISSING_BELOW = 0.5


@dataclass(frozen=True)
class MissingData:
    """One series that sent no data (``received == 0``) or far less than expected."""

    key: str
    received: int
    expected: int

    @property
    def severity(self) -> float:
        """0-100, like an anomaly score: the share of the expected points that is missing."""
        if self.expected <= 0:
            return 0.0
        return round(100.0 * (1.0 - min(self.received, self.expected) / self.expected), 3)

    def describe(self) -> str:
        if self.received == 0:
            return f"{self.key}: no data (expected {self.expected} points)"
        return f"{self.key}: {self.received} of {self.expected} expected points"


def expected_points(start: datetime, end: datetime, every: timedelta) -> int:
    """Steps of ``every`` in [start, end)."""
    if every <= timedelta(0):
        return 0
    return int((pd.Timestamp(end) - pd.Timestamp(start)) // pd.Timedelta(every))


def find_missing(
    known: Iterable[str],
    received: Mapping[str, int],
    expected: int,
    below: float = MISSING_BELOW,
) -> list[MissingData]:
    """The ``known`` series whose ``received`` count (0 when absent) is under ``below`` of
    ``expected``, sorted by key."""
    if expected <= 0:
        return []
    out = []
    for key in sorted(set(known)):
        n = int(received.get(key, 0))
        if n < below * expected:
            out.append(MissingData(key, n, expected))
    return out


def missing_events(item: MissingData, start: datetime, end: datetime) -> pd.DataFrame:
    """The window as one ``data_missing`` event, in the event frame's columns (start, end,
    peak, mean, duration_s) plus ``received`` and ``expected``."""
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    return pd.DataFrame(
        [{
            "start": s,
            "end": e,
            "peak": item.severity,
            "mean": item.severity,
            "duration_s": float((e - s).total_seconds()),
            "received": item.received,
            "expected": item.expected,
        }]
    )
