"""Reading several fields of one device aligned per step, and writing point results.

Each field of a ``PointSelector`` is read as the waveform pipeline reads a series (one
regular series per device, missing steps NaN) and :func:`cricket.multifield.align` joins
them per device. Results go to the same ``cricket_score`` / ``cricket_event``
measurements as the waveform model's, under the device key
(``psu.load+power+temp{host=...}``); an event carries the field that contributed most as
a string field ``contributor``.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from cricket.influx import lineprotocol as lp
from cricket.influx.base import Sink, Source
from cricket.multifield import PointSelector, align
from cricket.series import SeriesKey


def read_point_frames(
    source: Source, selector: PointSelector, start: datetime, stop: datetime
) -> dict[SeriesKey, pd.DataFrame]:
    """One frame per device over [start, stop) (columns = the selector's fields)."""
    per_field = {
        name: source.read(selector.field_selector(name), start, stop) for name in selector.fields
    }
    return align(selector, per_field)


def _string_field(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def point_event_lines(
    key: SeriesKey, events: pd.DataFrame, model_version: str, model_name: str | None
) -> list[str]:
    """``cricket_event`` lines with the contributing field as ``contributor="..."``."""
    lines = lp.event_lines(key, events, model_version, model_name)
    out = []
    for line, who in zip(lines, events["contributor"], strict=True):
        head, _, ts = line.rpartition(" ")
        out.append(f"{head},contributor={_string_field(who)} {ts}")
    return out


def write_point_results(
    sink: Sink, key: SeriesKey, scored: pd.DataFrame, events: pd.DataFrame,
    model_version: str, model_name: str,
) -> tuple[int, int]:
    """Write the scored rows and the events of one device; returns (scores, events)."""
    judged = scored[scored["distance"].notna()]
    n_scores = sink.write_scores(key, judged, model_version) if len(judged) else 0
    if events.empty:
        return n_scores, 0
    write_lines = getattr(sink, "write_lines", None)  # the InfluxQL and Flux sinks have it
    if write_lines is not None:
        n_events = write_lines(point_event_lines(key, events, model_version, model_name))
    else:  # another sink: the event without the field that broke the correlation
        n_events = sink.write_events(key, events, model_version)
    return n_scores, n_events
