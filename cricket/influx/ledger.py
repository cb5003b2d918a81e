"""The backfill ledger: which chunks a model version has finished scoring.

A finished chunk is one point in measurement ``cricket_chunk`` at the chunk's start,
tagged with the model version and a hash of the selector; it is written only after
every score and event of the chunk was written. Writing it again overwrites it, so
the ledger never double-counts. Uses InfluxQL (1.x, 2.x v1 compat, 3.x).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import pandas as pd

from cricket.config import Settings
from cricket.influx import lineprotocol as lp
from cricket.influx.influxql import InfluxQLClient, quote_ident

MEASUREMENT = "cricket_chunk"


def scope_hash(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def _ns(t: datetime) -> int:
    return int(pd.Timestamp(t).tz_convert("UTC").value)


def done_chunks(
    settings: Settings, model_version: str, scope: str, start: datetime, end: datetime
) -> set[datetime]:
    """Start times of the chunks in [start, end) already finished for this version/scope."""
    with InfluxQLClient(settings) as client:
        series = client.query(
            f"SELECT points FROM {quote_ident(MEASUREMENT)} WHERE model_version = $v "
            "AND scope = $s AND time >= $a AND time < $b",
            params={
                "v": str(model_version), "s": scope_hash(scope),
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
) -> None:
    """Record that [start, end) is fully scored by ``model_version``."""
    prefix = lp.series_prefix(
        MEASUREMENT, {"model_version": str(model_version), "scope": scope_hash(scope)}
    )
    line = f"{prefix} points={int(points)}i,end={_ns(end)}i {_ns(start)}"
    with InfluxQLClient(settings) as client:
        client.write_lines([line], database=settings.score_database)
