"""Line protocol: escaping and fast, vectorised formatting of Cricket's points.

What Cricket writes (both sinks, InfluxQL and Flux, write the same points):

``cricket_score``  one point per scored step, time = the step.
    tags:   the series key's tags, plus ``model_name`` and ``model_version`` (two models
            scoring the same series and hour never overwrite each other) and ``series``
            (``str(key)``, e.g. ``waveform.value{host=cricket001}``, unambiguous for any
            tag values; it keeps scores of two series with the same tags but a
            different measurement or field apart)
    fields: value, reconstruction, error, score (float; a NaN or inf field is left out
            of that point), anomalous (integer 0/1 so it can be summed and counted)

``cricket_event``  one point per anomaly event, time = the event start.
    tags:   as above
    fields: start, end (integer epoch nanoseconds, UTC), peak, mean (float, 0-100 score),
            duration_s (float)

``cricket_event`` with tag ``event_kind=data_missing``  one point per series the model knows
    that sent no data (or far less than expected) in a scored window, time = the window
    start. fields: start, end, peak, mean (0-100: the share of the expected points that is
    missing), duration_s, received, expected (integers). Anomaly events carry no ``event_kind``.

Same time + same tags overwrite, so writing a window twice leaves one copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import pandas as pd

from cricket.influx.base import InfluxError
from cricket.series import SeriesKey

try:  # orjson writes numpy arrays of numbers to text several times faster than repr
    import orjson

    _OPT = orjson.OPT_SERIALIZE_NUMPY
    _dumps = orjson.dumps
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    _dumps = None

SCORE_MEASUREMENT = "cricket_score"
EVENT_MEASUREMENT = "cricket_event"
SCORE_FIELDS = ("value", "reconstruction", "error", "score")
EVENT_FIELDS = ("peak", "mean", "duration_s")
EVENT_OPTIONAL_FIELDS = ("severity",)  # written when the frame has them
#: a continued record's own values before the window that extended it (see
#: ``cricket.scoring.stored_as_of``), written where a row has them
PRIOR_FIELDS = ("prior_peak", "prior_mean", "prior_duration_s", "prior_severity")
#: times of a continued record, written as ns after its start (floats are exact up to
#: 104 days; an absolute ns time would lose its last digits in a column with gaps)
OFFSET_FIELDS = {"prior_end": "prior_end_offset_ns", "extended_at": "extended_at_offset_ns"}
RESERVED_TAGS = ("model_name", "model_version", "series")
#: InfluxDB refuses a series key (measurement and tags) longer than 65,535 bytes
MAX_KEY_BYTES = 65_535

_BAD = ("\n", "\r")
_AMBIGUOUS = re.compile(r"\\([,= \\]|$)")


def _refuse_newline(kind: str, text: str) -> None:
    if any(c in text for c in _BAD):
        raise InfluxError(
            f"{kind} {text!r} contains a newline, which line protocol cannot carry: "
            "rename it (metric names and tag values never need newlines)"
        )


def _refuse_ambiguous_backslash(kind: str, text: str) -> None:
    # InfluxDB 1.x keeps backslashes literally except before , = and space, where they
    # escape; a name with a backslash before those (or at its end) cannot be written
    # unambiguously.
    if _AMBIGUOUS.search(text):
        raise InfluxError(
            f"{kind} {text!r} has a backslash before ',', '=', ' ' or at its end, which line "
            "protocol cannot write unambiguously: rename it"
        )


def escape_measurement(name: str) -> str:
    _refuse_newline("measurement", name)
    if not name:
        raise InfluxError("measurement name must not be empty")
    _refuse_ambiguous_backslash("measurement", name)
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_key(text: str, kind: str = "tag") -> str:
    """Escape a tag key, tag value or field key (backslashes stay literal)."""
    _refuse_newline(kind, text)
    _refuse_ambiguous_backslash(kind, text)
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_string_field(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def series_prefix(measurement: str, tags: dict[str, str]) -> str:
    """``measurement,tag=value,...`` with tags sorted by key; empty tag values dropped
    (InfluxDB does not store them)."""
    parts = [escape_measurement(measurement)]
    for k in sorted(tags):
        v = tags[k]
        if v == "":
            continue
        parts.append(f"{escape_key(k, 'tag key')}={escape_key(v, 'tag value')}")
    return ",".join(parts)


def result_tags(key: SeriesKey, model_version: str, model_name: str | None = None) -> dict[str, str]:
    tags = key.tag_dict
    for name in RESERVED_TAGS:
        if name in tags:
            raise InfluxError(
                f"series {key} has a tag named {name!r}, which Cricket uses on its results: "
                "rename the tag or leave it out of group_by"
            )
    tags["model_version"] = str(model_version)
    if model_name:
        tags["model_name"] = str(model_name)
    tags["series"] = str(key)
    return tags


def unwritable(key: SeriesKey, model_version: str = "0", model_name: str | None = None) -> str | None:
    """Why results of ``key`` cannot be written as line protocol (a tag value with a
    newline, an ambiguous backslash, a reserved tag name), or None when they can. The
    pipeline skips such a series with a note instead of failing the whole run."""
    try:
        prefix = series_prefix(EVENT_MEASUREMENT, result_tags(key, model_version, model_name))
    except InfluxError as exc:
        return str(exc)
    if len(prefix.encode()) > MAX_KEY_BYTES:
        return (
            f"its results' series key would be {len(prefix.encode()):,} bytes (tag values "
            f"plus the series tag), more than the {MAX_KEY_BYTES:,} InfluxDB stores: shorten "
            "the tag values"
        )
    return None


def to_ns(index: pd.Index | Sequence[object]) -> np.ndarray:
    """Epoch nanoseconds of a time index; naive times are taken as UTC. (A tz-aware
    index holds UTC epoch integers already: no conversion is needed to read them.)"""
    idx = index if isinstance(index, pd.DatetimeIndex) else pd.DatetimeIndex(index)
    return idx.as_unit("ns").asi8


def _floats(col: pd.Series) -> np.ndarray:
    """A column as float64 (NaN for missing): without a copy when it is float64."""
    if col.dtype == np.float64:
        return col.to_numpy()
    return pd.to_numeric(col).to_numpy(dtype=np.float64, na_value=np.nan)


def _float_texts(col: np.ndarray) -> list[str]:
    """``repr`` of every float (non-finite entries: any placeholder). orjson's text is
    the same shortest round-trip digits and is byte-identical to ``repr`` for 0 and
    1e-4 <= |x| < 1e16 (outside that, repr writes ``1e-05`` where orjson writes
    ``0.00001``): the whole column goes through orjson and only the entries outside
    that range are written again by ``repr`` (scores hold a few tiny errors, and one of
    them used to send the whole column through ``repr``, about 20x slower)."""
    if _dumps is not None and len(col):
        col = np.ascontiguousarray(col, dtype=np.float64)
        texts = _dumps(col, option=_OPT)[1:-1].decode().split(",")
        a = np.abs(col)
        with np.errstate(invalid="ignore"):
            odd = np.flatnonzero(((a < 1e-4) & (a != 0)) | ((a >= 1e16) & np.isfinite(a)))
        for j in odd.tolist():
            texts[j] = float.__repr__(float(col[j]))
        return texts
    return list(map(float.__repr__, col.tolist()))


def _int_texts(col: np.ndarray) -> list[str]:
    if _dumps is not None and len(col):
        return _dumps(np.ascontiguousarray(col, dtype=np.int64), option=_OPT)[1:-1].decode().split(",")
    return list(map(int.__str__, col.tolist()))


def float_lines(
    prefix: str,
    times_ns: np.ndarray,
    columns: dict[str, np.ndarray],
    int_columns: dict[str, np.ndarray] | None = None,
) -> list[str]:
    """One line per row: ``prefix f1=..,f2=..,i1=..i <ns>``. Non-finite floats are left
    out of their row; a row left with no field at all is dropped.

    Floats are written as ``repr`` writes them (shortest round-trip). Numbers are turned
    to text a column at a time and the lines assembled by C-level ``map``/``zip``/
    ``str.join`` (no Python bytecode per row): several times faster than a format call
    per row, which matters when writing millions of points."""
    int_columns = int_columns or {}
    names = [escape_key(n, "field") for n in columns]
    inames = [escape_key(n, "field") for n in int_columns]
    fl = [np.asarray(c, dtype=np.float64) for c in columns.values()]
    il = [np.asarray(c).astype(np.int64) for c in int_columns.values()]
    n = len(times_ns)
    if n == 0:
        return []
    finite = np.ones(n, dtype=bool)
    for c in fl:
        finite &= np.isfinite(c)
    # pieces of a complete row, in order: literal, value, literal, value, ..., time
    literals = [f"{nm}=" for nm in names] + [f"{nm}=" for nm in inames]
    literals[0] = f"{prefix} {literals[0]}"
    literals[1:] = ["," + x for x in literals[1:]]
    texts_f = [_float_texts(c) for c in fl]
    texts_i = [_int_texts(c) for c in il]
    ts = _int_texts(np.asarray(times_ns, dtype=np.int64))
    cols: list[Iterable[str]] = []
    for i, (lit, txt) in enumerate(zip(literals, [*texts_f, *texts_i], strict=True)):
        if i > len(texts_f):  # the previous field was an integer: it ends in "i"
            lit = "i" + lit
        cols += [repeat(lit, n), txt]
    cols += [repeat("i " if texts_i else " ", n), ts]
    out = list(map("".join, zip(*cols, strict=False)))  # repeat() is endless
    if finite.all():
        return out
    # rows with a NaN/inf: rebuild them without the non-finite fields (rare)
    keep = np.ones(n, dtype=bool)
    for j in np.flatnonzero(~finite).tolist():
        parts = [
            f"{nm}={t[j]}" for nm, c, t in zip(names, fl, texts_f, strict=True) if np.isfinite(c[j])
        ]
        parts += [f"{nm}={t[j]}i" for nm, t in zip(inames, texts_i, strict=True)]
        if parts:
            out[j] = f"{prefix} {','.join(parts)} {ts[j]}"
        else:
            keep[j] = False
    return out if keep.all() else [x for x, k in zip(out, keep.tolist(), strict=True) if k]


def score_lines(
    key: SeriesKey, frame: pd.DataFrame, model_version: str, model_name: str | None = None
) -> list[str]:
    missing = [c for c in (*SCORE_FIELDS, "anomalous") if c not in frame.columns]
    if missing:
        raise InfluxError(f"score frame for {key} lacks columns {missing}")
    prefix = series_prefix(SCORE_MEASUREMENT, result_tags(key, model_version, model_name))
    flags = frame["anomalous"]
    if flags.dtype == bool:
        anomalous = flags.to_numpy().astype(np.int64)
    else:
        anomalous = flags.fillna(False).to_numpy().astype(bool).astype(np.int64)
    return float_lines(
        prefix,
        to_ns(frame.index),
        {c: _floats(frame[c]) for c in SCORE_FIELDS},
        {"anomalous": anomalous},
    )


def event_lines(
    key: SeriesKey, events: pd.DataFrame, model_version: str, model_name: str | None = None
) -> list[str]:
    missing = [c for c in ("start", "end", *EVENT_FIELDS) if c not in events.columns]
    if missing:
        raise InfluxError(f"event frame for {key} lacks columns {missing}")
    if events.empty:
        return []
    prefix = series_prefix(EVENT_MEASUREMENT, result_tags(key, model_version, model_name))
    start = to_ns(events["start"])
    end = to_ns(events["end"])
    floats = {
        c: _floats(events[c])
        for c in (*EVENT_FIELDS, *EVENT_OPTIONAL_FIELDS, *PRIOR_FIELDS)
        if c in events.columns
    }
    for col, name in OFFSET_FIELDS.items():
        if col in events.columns:
            at = pd.DatetimeIndex(pd.to_datetime(events[col], utc=True))
            floats[name] = np.where(at.isna(), np.nan, (to_ns(at) - start).astype(np.float64))
    return float_lines(prefix, start, floats, {"start": start, "end": end})


DATA_MISSING = "data_missing"
KIND_TAG = "event_kind"


def missing_lines(
    key: SeriesKey, events: pd.DataFrame, model_version: str, model_name: str | None = None
) -> list[str]:
    """``data_missing`` events (see ``cricket.missing.missing_events``): tagged
    ``event_kind=data_missing`` beside the anomaly events of the same series."""
    if events.empty:
        return []
    tags = result_tags(key, model_version, model_name)
    if KIND_TAG in tags:
        raise InfluxError(f"series {key} has a tag named {KIND_TAG!r}, which Cricket uses on "
                          "its data_missing events: rename the tag")
    tags[KIND_TAG] = DATA_MISSING
    start = to_ns(events["start"])
    return float_lines(
        series_prefix(EVENT_MEASUREMENT, tags),
        start,
        {c: events[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in EVENT_FIELDS},
        {
            "start": start,
            "end": to_ns(events["end"]),
            "received": events["received"].to_numpy(dtype=np.int64),
            "expected": events["expected"].to_numpy(dtype=np.int64),
        },
    )


def series_lines(key: SeriesKey, series: pd.Series) -> list[str]:
    """Raw metric points ``measurement,tags field=value <ns>`` (non-finite values skipped)."""
    prefix = series_prefix(key.measurement, key.tag_dict)
    values = pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    return float_lines(prefix, to_ns(series.index), {key.field: values})


def result_batches(
    results: Iterable[tuple[SeriesKey, pd.DataFrame | None, pd.DataFrame | None]],
    model_version: str,
    model_name: str | None,
    size: int,
    counts: dict[str, int],
) -> Iterator[list[str]]:
    """Score and event lines of many series, ``(key, frame, events)`` each, cut into
    batches of ``size`` lines that span series: an hour of a fleet is a few hundred
    points per series, so one request per series would cost the server a request and a
    WAL fsync for every few hundred points. Lines are formatted lazily, series by
    series, as the batches are consumed; ``counts["scores"]`` and ``counts["events"]``
    add up the lines formatted."""
    buf: list[str] = []
    for key, frame, events in results:
        if frame is not None and len(frame):
            lines = score_lines(key, frame, model_version, model_name)
            counts["scores"] = counts.get("scores", 0) + len(lines)
            buf += lines
        if events is not None and len(events):
            lines = event_lines(key, events, model_version, model_name)
            counts["events"] = counts.get("events", 0) + len(lines)
            buf += lines
        if len(buf) >= size:
            full = len(buf) - len(buf) % size
            for lo in range(0, full, size):
                yield buf[lo : lo + size]
            buf = buf[full:]
    if buf:
        yield buf


@dataclass(frozen=True)
class Body:
    """One request's lines, joined and encoded ahead of the POST (for example in the
    process that scored them): ``InfluxQLClient.write_batches`` posts it as it is."""

    data: bytes
    count: int  # lines (points) in it

    def lines(self) -> list[str]:
        return self.data.decode().split("\n") if self.data else []


@dataclass
class Formatted:
    """Result lines formatted ahead (``formatted``), ready to post: the request bodies
    and the points of each kind (``scores``, ``events``) in them."""

    bodies: list[Body]
    counts: dict[str, int] = field(default_factory=dict)


def formatted(
    results: Iterable[tuple[SeriesKey, pd.DataFrame | None, pd.DataFrame | None]],
    model_version: str,
    model_name: str | None,
    size: int,
) -> Formatted:
    """``result_batches`` joined into request bodies now: the same bytes the sink would
    post, formatted where the results are (a scoring process), not where they are
    posted."""
    counts: dict[str, int] = {}
    bodies = [Body("\n".join(b).encode(), len(b))
              for b in result_batches(results, model_version, model_name, size, counts) if b]
    return Formatted(bodies, counts)


def batches(lines: Sequence[str], size: int) -> Iterable[tuple[int, int]]:
    for i in range(0, len(lines), size):
        yield i, min(i + size, len(lines))


def line_time(line: str) -> pd.Timestamp:
    """The timestamp of one line protocol line (its last token)."""
    return pd.Timestamp(int(line.rsplit(" ", 1)[1]), unit="ns", tz="UTC")
