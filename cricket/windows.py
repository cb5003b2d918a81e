"""Time windows, chunks and batches: how the pipeline cuts up its work.

All times are timezone-aware UTC; naive input is taken as UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from cricket.errors import CricketValueError


def utc_timestamp(ts: datetime | str | pd.Timestamp) -> pd.Timestamp:
    """A timezone-aware UTC Timestamp; naive input is taken as UTC."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def utc(ts: datetime | str | pd.Timestamp) -> datetime:
    """A timezone-aware UTC datetime; naive input is taken as UTC."""
    return utc_timestamp(ts).to_pydatetime()


def floor_time(ts: datetime, step: timedelta) -> datetime:
    """Floor ``ts`` to a multiple of ``step`` since the epoch (UTC)."""
    ts = utc(ts)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    n = math.floor((ts - epoch) / step)
    return epoch + n * step


def score_window(at: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """The last complete window before ``at``: a run scheduled at 10:05 scores 09:00-10:00."""
    if window <= timedelta(0):
        raise CricketValueError(
            f"the window must be a positive duration such as '1h' (got {window})"
        )
    end = floor_time(at, window)
    return end - window, end


def chunks(start: datetime, end: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    """Split [start, end) into consecutive chunks of ``step`` (the last may be shorter)."""
    start, end = utc(start), utc(end)
    if start >= end:
        raise CricketValueError(
            f"start {start.isoformat()} is not before end {end.isoformat()}: swap them"
        )
    if step <= timedelta(0):
        raise CricketValueError("chunk must be a positive duration such as '1h'")
    out = []
    t = start
    while t < end:
        out.append((t, min(t + step, end)))
        t += step
    return out


def batched(items: Sequence, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


@dataclass(frozen=True)
class TrainingWindow:
    """What a retrain reads: history [start, holdout_start) to fit on, and the
    held-out tail [holdout_start, end)."""

    start: datetime
    holdout_start: datetime
    end: datetime

    @classmethod
    def ending(cls, end: datetime, train_window: timedelta, holdout: timedelta) -> TrainingWindow:
        """The window of ``train_window`` ending at ``end`` whose last ``holdout`` is
        held out; refused when the holdout leaves no history before it."""
        if holdout >= train_window:
            raise CricketValueError(
                f"holdout ({holdout}) must be shorter than train_window ({train_window}): "
                "the model needs history before the held-out tail"
            )
        end = utc(end)
        return cls(end - train_window, end - holdout, end)
