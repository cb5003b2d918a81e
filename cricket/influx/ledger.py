"""The backfill ledger: which chunks a model has finished scoring.

A finished chunk is one point in measurement ``cricket_chunk`` at the chunk's start,
tagged with the model name, the model version and a hash of the selector; it is written
only after every score and event of the chunk was written, and only when the chunk was
*complete*: at least ``COMPLETE_FRACTION`` of the points it should hold (series x steps)
were scored. A chunk scored before its data arrived (0 points, or far fewer than
expected) is therefore not recorded, and the next backfill scores it again once the late
data is in. Writing a ledger point again overwrites it, so the ledger never
double-counts. Two models (names) with the same version number keep separate ledgers.
Uses InfluxQL (1.x, 2.x v1 compat, 3.x).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import pandas as pd

from cricket.config import Settings
from cricket.influx import lineprotocol as lp
from cricket.influx.influxql import InfluxQLClient, quote_ident

MEASUREMENT = "cricket_chunk"
#: a chunk counts as finished when at least this fraction of its expected points was scored
COMPLETE_FRACTION = 0.9


def scope_hash(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def _ns(t: datetime) -> int:
    return int(pd.Timestamp(t).tz_convert("UTC").value)


def is_complete(points: int, expected: int) -> bool:
    """Whether a chunk that scored ``points`` of ``expected`` counts as finished."""
    return points > 0 and points >= COMPLETE_FRACTION * expected


def done_chunks(
    settings: Settings, model_version: str, scope: str, start: datetime, end: datetime,
    model_name: str | None = None,
) -> set[datetime]:
    """Start times of the chunks in [start, end) already finished by this model
    (``model_name``, default ``settings.model_name``, and version) for this scope."""
    name = model_name or settings.model_name
    with InfluxQLClient(settings) as client:
        series = client.query(
            f"SELECT points FROM {quote_ident(MEASUREMENT)} WHERE model_version = $v "
            "AND model_name = $n AND scope = $s AND time >= $a AND time < $b",
            params={
                "v": str(model_version), "n": name, "s": scope_hash(scope),
                "a": _ns(start), "b": _ns(end),
            },
            database=settings.score_database,
        )
    out: set[datetime] = set()
    for s in series:
        for row in s.get("values") or []:
            out.add(pd.Timestamp(row[0], unit="ns", tz="UTC").to_pydatetime())
    return out


def mark_done(
    settings: Settings,
    model_version: str,
    scope: str,
    start: datetime,
    end: datetime,
    points: int,
    expected: int | None = None,
    model_name: str | None = None,
) -> bool:
    """Record that [start, end) is fully scored by the model, when it is complete
    (``points`` of ``expected``, see :func:`is_complete`). Returns whether it was
    recorded; an incomplete chunk is left for the next backfill."""
    if not is_complete(points, points if expected is None else expected):
        return False
    tags = {
        "model_name": model_name or settings.model_name,
        "model_version": str(model_version),
        "scope": scope_hash(scope),
    }
    prefix = lp.series_prefix(MEASUREMENT, tags)
    fields = f"points={int(points)}i,end={_ns(end)}i"
    if expected is not None:
        fields += f",expected={int(expected)}i"
    line = f"{prefix} {fields} {_ns(start)}"
    with InfluxQLClient(settings) as client:
        client.write_lines([line], database=settings.score_database)
    return True
