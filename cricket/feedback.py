"""Learn from answers: labels on stretches of a series, and what a retrain does with
them. No I/O here (the store is ``cricket.influx.answers``).

* ``normal``: "this is how this series looks sometimes". The stretch is kept out of the
  calibration (it must not raise the bar for everything else), and after fitting, its
  segments that the library cannot rebuild well are added to the library as shapes
  (:func:`learn_normal`), so the same pattern no longer fires. A challenger that still
  fires on a labelled-normal stretch is not promoted.
* ``anomaly``: "this was a real problem". The stretch is kept out of training and
  calibration, so the retrain does not learn it as normal, and it is a probe every
  challenger must still find (:func:`check_labels`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cricket.errors import CricketError
from cricket.windows import utc_timestamp as _ts

NORMAL = "normal"
ANOMALY = "anomaly"
LABELS = (NORMAL, ANOMALY)

#: shapes one label may add to one library at most
MAX_SHAPES_PER_LABEL = 256
#: a segment is covered when its distance to the nearest shape is at most this quantile
#: of the held-out errors the scale was calibrated on
COVER_QUANTILE = 0.5


class FeedbackError(CricketError):
    """A label or silence that cannot be stored as given; the message says why."""


@dataclass(frozen=True)
class Label:
    """A person's answer about a stretch [start, end] (inclusive) of one series."""

    id: str
    series: str
    label: str  # normal | anomaly
    start: pd.Timestamp
    end: pd.Timestamp
    by: str
    reason: str
    created: pd.Timestamp
    event: str = ""  # the event it answers, SERIES@START, when given that way

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "series": self.series, "label": self.label,
            "start": self.start.isoformat(), "end": self.end.isoformat(), "by": self.by,
            "reason": self.reason, "created": self.created.isoformat(), "event": self.event,
        }


def make_label(
    series: str, label: str, start: Any, end: Any, by: str, reason: str,
    created: Any = None, event: str = "",
) -> Label:
    if label not in LABELS:
        raise FeedbackError(f"a label is 'normal' or 'anomaly', not {label!r}")
    a, b = _ts(start), _ts(end)
    if b < a:
        raise FeedbackError(f"the stretch ends ({b.isoformat()}) before it starts ({a.isoformat()}): swap them")
    if not series or "{" not in series:
        raise FeedbackError(
            f"{series!r} is not a series key: give it as cricket prints it, "
            "e.g. 'waveform.value{host=cricket001}'"
        )
    created = _ts(created if created is not None else pd.Timestamp.now(tz="UTC"))
    if a > created:
        raise FeedbackError(
            f"the stretch starts in the future ({a.isoformat()}): label what has happened; "
            "for planned maintenance use `cricket silence add`"
        )
    text = f"{series}|{label}|{a.isoformat()}|{b.isoformat()}|{created.isoformat()}"
    return Label(hashlib.sha256(text.encode()).hexdigest()[:10], series, label, a, b, by,
                 reason, created, event)


def parse_event_ref(ref: str) -> tuple[str, pd.Timestamp]:
    """``SERIES@START`` (as reports and notifications print events) -> (series, start)."""
    series, sep, start = ref.rpartition("@")
    if not sep or not series:
        raise FeedbackError(
            f"{ref!r} does not name an event: give SERIES@START as the report lists it, "
            "e.g. 'waveform.value{host=cricket001}@2026-11-24T13:22:00Z', or use "
            "--series/--start/--end"
        )
    try:
        return series, _ts(start)
    except (ValueError, TypeError) as exc:
        raise FeedbackError(f"{start!r} in {ref!r} is not a time (use 2026-11-24T13:22:00Z)") from exc


def event_ref(series: str, start: Any) -> str:
    return f"{series}@{_ts(start).strftime('%Y-%m-%dT%H:%M:%SZ')}"


# --------------------------------------------------------------------------- training data
def mask_labelled(series: pd.Series, labels: Iterable[Label]) -> pd.Series:
    """A copy of ``series`` with the labelled stretches set to NaN (no segment then
    straddles them: the detector splits at long gaps)."""
    out = series.copy()
    for lab in labels:
        out[(out.index >= lab.start) & (out.index <= lab.end)] = np.nan
    return out


@dataclass
class LabelledStretch:
    """A label with the series' values over it plus ``context`` points either side
    (what scoring would see)."""

    label: Label
    values: pd.Series

    @property
    def inside(self) -> np.ndarray:
        idx = self.values.index
        return np.asarray((idx >= self.label.start) & (idx <= self.label.end))


def _scaled_segments(det: Any, lib: Any, scaled: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Windowed segments of ``lib``'s length ending at each True of ``rows`` (full,
    gap-free ones only)."""
    from cricket.segments import window

    n = int(lib.segment_len)
    if len(scaled) < n:
        return np.empty((0, n))
    segs = np.lib.stride_tricks.sliding_window_view(scaled, n)  # ends at n-1, n, ...
    ends = np.arange(n - 1, len(scaled))
    keep = rows[ends] & np.isfinite(segs).all(axis=1)
    return segs[keep] * window(n)


def learn_normal(det: Any, stretches: Sequence[LabelledStretch]) -> int:
    """Add to each of the detector's shape libraries the segments of the labelled-normal
    stretches it cannot rebuild well (greedily: the worst segment first, until every
    segment is within the median held-out error of some shape). Segments that end
    within one segment of the stretch count (they hold the pattern).
    Returns the number of shapes added."""
    added = 0
    for st in stretches:
        values = np.asarray(st.values.to_numpy(dtype=float))
        scaled = det.to_model_units(values)
        inside = st.inside
        for k, lib in enumerate(det.libraries_):
            n = int(lib.segment_len)
            # an event's extent is where the score crossed the threshold: the pattern
            # may begin up to a segment earlier, and segments end up to one after it
            rows = inside.copy()
            where = np.flatnonzero(inside)
            if where.size:
                rows[max(where[0] - n, 0) : min(where[-1] + n, len(rows))] = True
            segs = _scaled_segments(det, lib, scaled, rows)
            if not len(segs):
                continue
            probs = np.linspace(0.0, 1.0, len(det.calibrators_[k].quantiles))
            tol = float(np.interp(COVER_QUANTILE, probs, det.calibrators_[k].quantiles))
            _, dist = lib.nearest(segs)
            new = []
            for _ in range(MAX_SHAPES_PER_LABEL):
                worst = int(np.argmax(dist))
                if dist[worst] <= tol:
                    break
                shape = segs[worst].copy()
                new.append(shape)
                dist = np.minimum(dist, np.sqrt(((segs - shape) ** 2).sum(axis=1)))
            if new:
                c = np.vstack([lib.centroids_, np.asarray(new, dtype=np.float32)])
                lib.centroids_ = np.ascontiguousarray(c, dtype=np.float64)
                lib.n_clusters_ = len(lib.centroids_)
                added += len(new)
    return added


# --------------------------------------------------------------------------- promotion check
@dataclass
class LabelCheck:
    """How a model does on the labelled stretches: ``fires_on_normal`` and
    ``misses_anomaly`` list the labels it got wrong (``label id: series``)."""

    fires_on_normal: list[str] = field(default_factory=list)
    misses_anomaly: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.fires_on_normal and not self.misses_anomaly

    def reason(self) -> str:
        parts = []
        if self.fires_on_normal:
            parts.append(f"fires on {len(self.fires_on_normal)} labelled-normal stretch(es) "
                         f"({', '.join(self.fires_on_normal[:3])})")
        if self.misses_anomaly:
            parts.append(f"misses {len(self.misses_anomaly)} labelled anomaly(ies) "
                         f"({', '.join(self.misses_anomaly[:3])})")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"fires_on_normal": self.fires_on_normal, "misses_anomaly": self.misses_anomaly,
                "checked": self.checked}


def check_labels(detector_for: Any, stretches: Sequence[LabelledStretch]) -> LabelCheck:
    """Score every labelled stretch with the detector ``detector_for(series)`` returns
    (``(detector, source)``, as ``ModelBundle.detector_for``; a fleet detector scales
    each series itself): a normal stretch must raise
    no anomalous point, an anomaly must raise at least one inside it (or within one
    segment after it: a score needs the segment that ends there)."""
    out = LabelCheck()
    for st in stretches:
        try:
            det, _source = detector_for(st.label.series)
        except Exception:  # noqa: BLE001 - a series the model does not serve: nothing to check
            continue
        values = st.values.to_numpy(dtype=float)
        if not np.isfinite(values).any():
            continue
        hits = np.asarray(det.score(values, context=0).anomalous, dtype=bool)
        inside = st.inside
        name = f"{st.label.id}: {st.label.series}"
        out.checked += 1
        if st.label.label == NORMAL:
            if hits[inside].any():
                out.fires_on_normal.append(name)
        else:
            reach = inside.copy()
            last = np.flatnonzero(inside)
            if last.size:
                reach[last[-1] : min(last[-1] + det.spec.segment_len, len(reach))] = True
            if not hits[reach].any():
                out.misses_anomaly.append(name)
    return out


def labels_by_series(labels: Iterable[Label]) -> Mapping[str, list[Label]]:
    out: dict[str, list[Label]] = {}
    for lab in labels:
        out.setdefault(lab.series, []).append(lab)
    return out
