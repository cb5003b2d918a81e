"""Scoring: anomaly events (intervals of anomalous points), thresholds, once-per-anomaly
alerts, and what scoring one series over a window found (:class:`ScoredSeries`),
joined across chunks and windows.

``score_series`` is the hourly flow's and the backfill's step (through
``tasks/score.py``); the detector itself is :class:`cricket.detector.WaveformDetector`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cricket.config import DetectorSpec
from cricket.errors import CricketValueError
from cricket.series import SeriesKey, prepare

if TYPE_CHECKING:
    from cricket.detector import WaveformDetector

#: columns of a series' events in time (``ScoredSeries.events``): the settled extent
#: (start, end: first and last anomalous step), peak and mean score, duration, severity
#: (uncapped, for ranking: ``cricket.extent``) and the explanation in the metric's units:
#: which view fired (``shape 32``, ``shape 94``, ``structure 94``, ``range 1``), the actual
#: and the typical (rebuilt from normal shapes) mean over the event.
EVENT_COLUMNS = ["start", "end", "peak", "mean", "duration_s", "severity", "scale", "actual",
                 "typical", "views"]
#: what explains an event (which view fired, actual and typical level, each view's peak),
#: computed from the scored data and not stored: a record read back has none of them
EXPLAIN_COLUMNS = ("scale", "actual", "typical", "views")
#: per-view surprise columns of ``ScoredSeries.frame`` start with this
VIEW_PREFIX = "surprise:"


def mask_runs(mask: np.ndarray, min_gap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The intervals of :func:`events_from_mask` as two int64 arrays: starts and stops
    (exclusive), without the per-interval scores or a DataFrame (what callers that only
    need the bounds use: a DataFrame costs more than the search on an hour of data)."""
    mask = np.asarray(mask, dtype=bool)
    if min_gap < 0:
        raise CricketValueError(f"min_gap must be >= 0 (got {min_gap})")
    # Interval edges: where the mask, padded with False at both ends, changes. They
    # alternate start, stop, start, stop... (one byte per point, no int64 copies).
    padded = np.zeros(mask.size + 2, dtype=bool)
    padded[1:-1] = mask
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts = edges[0::2]
    stops = edges[1::2]  # exclusive
    if min_gap > 0 and starts.size > 1:
        gaps = starts[1:] - stops[:-1]
        new = np.concatenate(([True], gaps >= min_gap))
        starts = starts[new]
        stops = np.concatenate((stops[:-1][new[1:]], stops[-1:]))
    return starts.astype(np.int64, copy=False), stops.astype(np.int64, copy=False)


def events_from_mask(mask: np.ndarray, scores: np.ndarray, min_gap: int = 0) -> pd.DataFrame:
    """Group anomalous points into intervals.

    Contiguous True points of ``mask`` form an interval; intervals separated by fewer
    than ``min_gap`` normal points merge into one. Returns a DataFrame with columns
    ``start_idx``, ``end_idx`` (inclusive), ``peak`` and ``mean`` (of ``scores`` over
    the interval, ignoring NaN). Vectorised: no loop over points.
    """
    mask = np.asarray(mask, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if mask.ndim != 1 or mask.shape != scores.shape:
        raise CricketValueError(
            f"mask and scores must be 1-D of equal length (got {mask.shape} and {scores.shape})"
        )
    starts, stops = mask_runs(mask, min_gap)
    if starts.size == 0:
        return pd.DataFrame(
            {
                "start_idx": np.array([], dtype=np.int64),
                "end_idx": np.array([], dtype=np.int64),
                "peak": np.array([], dtype=np.float64),
                "mean": np.array([], dtype=np.float64),
            }
        )
    # peak, sum and count over each [start, stop): reduceat over interleaved boundaries
    # (the last stop is left out when it is the end: reduceat then runs to the end)
    bounds = np.empty(2 * starts.size, dtype=np.int64)
    bounds[0::2] = starts
    bounds[1::2] = stops
    if stops[-1] == scores.size:
        bounds = bounds[:-1]
    if not np.isnan(np.add.reduce(scores)):  # no NaN (one pass, no copy)
        sums = np.add.reduceat(scores, bounds)[0::2]
        counts = stops - starts
        peak = np.maximum.reduceat(scores, bounds)[0::2]
    else:
        finite = ~np.isnan(scores)
        sums = np.add.reduceat(np.where(finite, scores, 0.0), bounds)[0::2]
        counts = np.add.reduceat(finite.astype(np.int64), bounds)[0::2]
        peak = np.maximum.reduceat(np.where(finite, scores, -np.inf), bounds)[0::2]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    peak = np.where(np.isneginf(peak), np.nan, peak)
    return pd.DataFrame(
        {
            "start_idx": starts.astype(np.int64),
            "end_idx": (stops - 1).astype(np.int64),
            "peak": peak,
            "mean": mean,
        }
    )


def quantile_threshold(errors: np.ndarray, quantile: float, scale: float = 1.0) -> float:
    """``scale`` times the ``quantile`` of the finite ``errors``.

    Raises ValueError when there is no finite error to take a quantile of.
    """
    if not 0 < quantile <= 1:
        raise CricketValueError(f"quantile must be in (0, 1] (got {quantile})")
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    if e.size == 0:
        raise CricketValueError("no finite error to set a threshold from: give more held-out data")
    return float(np.quantile(e, quantile) * scale)


def alert_scores(
    score: np.ndarray,
    hold: int | None = None,
    margin: float = 20.0,
    rearm: float | None = None,
    quiet: int = 32,
) -> np.ndarray:
    """Fire once per anomaly: keep a point's score only where it rises above every
    score of the ``hold`` points before it and either no alert was kept in the last
    ``hold`` points, or it beats the last kept one by ``margin`` (0-100 units), or
    (``rearm`` given) the score has been back below ``rearm`` for ``quiet`` points in a
    row since the last alert (that anomaly is over: the next one is new, as the
    pipeline's events end after ``min_event_gap`` normal points); other points get 0
    (NaN stays NaN, and counts as quiet).

    Causal (uses only earlier points) and independent of any threshold: a stretch of
    high scores (a ramp, a long anomaly) raises one alert, or a few when it keeps
    getting much worse, instead of one per point. ``hold`` None or 0 returns the
    scores unchanged.
    """
    s = np.asarray(score, dtype=np.float64)
    if not hold:
        return s.copy()
    hold = int(hold)
    filled = np.where(np.isnan(s), -np.inf, s)
    padded = np.concatenate((np.full(hold, -np.inf), filled))
    prev_max = np.lib.stride_tricks.sliding_window_view(padded[:-1], hold).max(axis=1)
    rising = np.flatnonzero(filled > prev_max)
    # quiet_end[t]: the last index before t that ends `quiet` quiet points in a row
    quiet_end = np.full(len(s), -1, dtype=np.int64)
    if rearm is not None and len(s):
        q = int(quiet)
        low = ~(filled >= rearm)
        csum = np.concatenate(([0], np.cumsum(~low)))
        idx = np.arange(len(s))
        ends = (idx >= q - 1) & (csum[idx + 1] - csum[np.maximum(idx + 1 - q, 0)] == 0)
        done = np.maximum.accumulate(np.where(ends, idx, -1))
        quiet_end[1:] = done[:-1]
    out = np.where(np.isnan(s), np.nan, 0.0)
    last_t, last_v = -(10**12), -np.inf
    for t in rising.tolist():
        v = filled[t]
        if t - last_t > hold or v >= last_v + margin or quiet_end[t] >= last_t:
            out[t] = v
            last_t, last_v = t, v
    return out


# ---------------------------------------------------------------- series over a window


@dataclass
class ScoredSeries:
    """What scoring found in one series over a window: the pipeline's result, what
    the sinks write and what the report shows.

    ``frame``: indexed by UTC time; columns value, reconstruction, error, score
    (0-100), anomalous (bool). ``events``: columns ``EVENT_COLUMNS`` (start, end in
    UTC, peak, mean, duration_s). ``source``: ``"series"`` or ``"fleet"`` (which
    detector scored it). ``nearest_shapes``: per event, (the windowed segment at its
    peak, the nearest library shape), in the model's scaled units. ``series_key``:
    the structured key for the sinks; when None it is parsed from ``key``.
    ``carried``: events (same columns) whose settled extent starts before the window,
    in its left context, or lies wholly there: what this window's data settles about an
    event of the window before (see :func:`continue_event`); neither written nor reported.
    ``revised``: records of the windows before that :func:`continue_event` revised with
    this window's data (an end moved earlier or later): written (each overwrites the
    record with its start), not reported as this window's events.
    """

    key: str
    frame: pd.DataFrame
    events: pd.DataFrame
    threshold: float
    source: str = "series"
    nearest_shapes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    series_key: SeriesKey | None = None
    carried: pd.DataFrame | None = None
    revised: pd.DataFrame | None = None

    @property
    def n_events(self) -> int:
        return 0 if self.events is None else len(self.events)

    @property
    def peak_score(self) -> float:
        """The highest score in the window (NaN when nothing could be scored)."""
        peaks: list[float] = []
        if self.n_events and "peak" in self.events.columns:
            peaks.append(float(np.nanmax(self.events["peak"].to_numpy(dtype=float))))
        if self.frame is not None and len(self.frame) and "score" in self.frame.columns:
            s = self.frame["score"].to_numpy(dtype=float)
            if np.isfinite(s).any():
                peaks.append(float(np.nanmax(s)))
        peaks = [p for p in peaks if math.isfinite(p)]
        return max(peaks) if peaks else math.nan

    @property
    def top_severity(self) -> float:
        """The largest event severity (NaN without events or severities)."""
        if not self.n_events or "severity" not in self.events.columns:
            return math.nan
        sev = pd.to_numeric(self.events["severity"], errors="coerce").to_numpy(dtype=float)
        return float(np.nanmax(sev)) if np.isfinite(sev).any() else math.nan

    def peak_event_index(self) -> int | None:
        if not self.n_events or "peak" not in self.events.columns:
            return None
        peaks = self.events["peak"].to_numpy(dtype=float)
        if not np.isfinite(peaks).any():
            return 0
        return int(np.nanargmax(peaks))

    def sink_key(self) -> SeriesKey:
        return self.series_key if self.series_key is not None else SeriesKey.parse(self.key)


def score_series(
    key: str | SeriesKey,
    series: pd.Series,
    detector: WaveformDetector,
    source: str,
    window_start: datetime,
    spec: DetectorSpec,
) -> ScoredSeries:
    """Score ``series`` (the window plus its left context) and keep results for points at
    or after ``window_start`` that hold data.

    Per series of an hourly run this is a few small searches; everything around them
    works on arrays (one DataFrame for the scores, one for the events when there are
    any): pandas objects per series cost more than the search itself."""
    series_key = key if isinstance(key, SeriesKey) else None
    key = str(key)
    s = prepare(series, spec)
    times = s.index
    # validated: sorted, so the points before the window are a prefix
    context = int(times.searchsorted(pd.Timestamp(window_start), side="left"))
    values = s.to_numpy(dtype=float)
    sf = detector.score(values, context=context)
    recon = np.asarray(sf.reconstruction, dtype=float)
    error = np.asarray(sf.error, dtype=float)
    score = np.asarray(sf.score, dtype=float)
    out_index = times[context:]
    # the raw values at the prepared steps (the same steps, unless validation sorted
    # or merged them)
    same_steps = times.equals(series.index)
    raw_all = (series.to_numpy(dtype=float) if same_steps
               else series.reindex(times).to_numpy(dtype=float))
    raw = raw_all[context:]
    keep = np.isfinite(raw) & np.isfinite(score)
    columns = {
        "value": raw,
        "reconstruction": recon,
        "error": error,
        "score": score,
        "anomalous": np.asarray(sf.anomalous, dtype=bool),
        **{VIEW_PREFIX + name: np.asarray(v, dtype=float) for name, v in sf.scales.items()},
    }
    if keep.all():
        frame = pd.DataFrame(columns, index=out_index)
    else:  # as frame[keep] takes the rows
        rows_kept = np.flatnonzero(keep)
        frame = pd.DataFrame({c: v[rows_kept] for c, v in columns.items()},
                             index=out_index.take(rows_kept))
    ev_idx = sf.event_columns(spec.min_event_gap)
    freq = getattr(times, "freq", None)
    if freq is not None:
        step = pd.Timedelta(freq)
    else:
        step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(0)
    rows: list[dict] = []
    lead_rows: list[dict] = []
    # an event of the window before is settled here (``carried``) from alerts in the
    # window's first ``reach`` points or in the context's last ones: that window's end
    # left its last samples provisional (cricket.extent.provisional_from)
    settles_before = bool(np.any(sf.anomalous[: sf.reach]) or np.any(sf.lead_anomalous))
    if len(ev_idx["start_idx"]) or settles_before:
        views = {name: np.nan_to_num(v, nan=-np.inf) for name, v in sf.scales.items()}
        rows = _event_rows(ev_idx, out_index, raw, recon, views, step)
        # an extent reaches back into the context only from a run of alerts that starts
        # within the longest segment of the window's start (settle_events looks back at
        # most ``reach`` points): otherwise there is nothing to carry, and no second
        # search
        if settles_before:
            lead = sf.event_columns(spec.min_event_gap, keep_lead=True)
            before = lead["start_idx"] < 0
            lead = {c: v[before] for c, v in lead.items()}
            lead_rows = _event_rows(
                lead, times, raw_all,
                np.r_[np.full(context, np.nan), recon],
                {k: np.r_[np.full(context, -np.inf), v] for k, v in views.items()},
                step, offset=context,
            )
    carried = _events_frame(lead_rows)
    events = _events_frame(rows)
    shapes = detector.nearest_shapes(values, context, ev_idx, score)
    return ScoredSeries(
        key,
        frame,
        events,
        float(detector.threshold_),
        source,
        shapes,
        series_key,
        carried=carried,
    )


#: no events (what ``pd.DataFrame([], columns=EVENT_COLUMNS)`` gives), copied per use:
#: most series of an hour have none, and copying costs a tenth of building it
_NO_EVENTS = pd.DataFrame([], columns=EVENT_COLUMNS)


def _events_frame(rows: list[dict]) -> pd.DataFrame:
    """Events (``EVENT_COLUMNS``) from :func:`_event_rows`' rows."""
    if not rows:
        return _NO_EVENTS.copy()
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def _event_rows(ev_idx: pd.DataFrame | Mapping[str, np.ndarray], index: pd.Index,
                raw: np.ndarray, recon: np.ndarray, views: dict[str, np.ndarray],
                step: pd.Timedelta, offset: int = 0) -> list[dict]:
    """Events in time (``EVENT_COLUMNS``) from the detector's ``ev_idx`` (columns, as
    :meth:`ScoreFrame.event_columns` gives, or its DataFrame), whose indices are
    ``offset`` points into ``index``, ``raw``, ``recon`` and ``views``."""
    rows: list[dict] = []
    # plain arrays: itertuples builds a namedtuple class per call
    cols = {c: np.asarray(ev_idx[c]) for c in ("start_idx", "end_idx", "alert_idx", "peak",
                                               "mean", "severity")}
    for i in range(len(cols["start_idx"])):
        a, b = int(cols["start_idx"][i]) + offset, int(cols["end_idx"][i]) + offset
        alert = int(cols["alert_idx"][i]) + offset
        start, end = index[a], index[b]
        # which view fired: the most surprising one over the event and its alerts
        lo, hi = min(a, alert), max(b, alert)
        peaks = {k: float(v[lo : hi + 1].max()) for k, v in views.items()}
        scale = max(peaks, key=peaks.__getitem__, default="")
        actual, typical = raw[a : b + 1], recon[a : b + 1]
        rows.append(
            {
                "start": start,
                "end": end,
                "peak": float(cols["peak"][i]),
                "mean": float(cols["mean"][i]),
                "duration_s": float((end - start + step).total_seconds()),
                "severity": float(cols["severity"][i]),
                "scale": scale,
                "actual": float(np.nanmean(actual)) if np.isfinite(actual).any() else np.nan,
                "typical": float(np.nanmean(typical)) if np.isfinite(typical).any() else np.nan,
                # the error of each view: its peak surprise (-log10 p) over the event
                "views": ", ".join(f"{k} {v:.1f}" for k, v in peaks.items() if np.isfinite(v)),
            }
        )
    return rows


def join_events(events: pd.DataFrame, max_gap: pd.Timedelta,
                keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """Merge events (sorted by start) that are at most ``max_gap`` apart: an anomaly that
    spans a chunk boundary is scored as two events, one per chunk. Columns in ``keep``
    are kept too, from the part with the highest peak score."""
    if len(events) < 2:
        return events.reset_index(drop=True)
    ev = events.sort_values("start").reset_index(drop=True)
    rows = [ev.iloc[0].to_dict()]
    for row in ev.iloc[1:].to_dict("records"):
        last = rows[-1]
        if row["start"] - last["end"] <= max_gap:
            # duration_s is end - start plus one step: keep that step.
            step = last["duration_s"] - (last["end"] - last["start"]).total_seconds()
            weight = (last["duration_s"] + row["duration_s"]) or 1.0
            last["mean"] = (
                last["mean"] * last["duration_s"] + row["mean"] * row["duration_s"]
            ) / weight
            # severity = peak surprise + log10(duration): the larger peak, the joined length
            peak_s = max(_peak_surprise(last), _peak_surprise(row))
            # the explanation of the most surprising part that has one (a stored record
            # read back has none: the part this window scored explains it)
            if ((_peak_surprise(row) > _peak_surprise(last) and _explained(row))
                    or not _explained(last)):
                for col in EXPLAIN_COLUMNS:
                    last[col] = row.get(col)
            if row["peak"] > last["peak"]:
                for col in keep:
                    last[col] = row.get(col)
            last["end"] = max(last["end"], row["end"])
            last["peak"] = max(last["peak"], row["peak"])
            last["duration_s"] = (last["end"] - last["start"]).total_seconds() + step
            last["severity"] = (
                peak_s + np.log10(max(last["duration_s"] / (step or 1.0), 1.0))
                if np.isfinite(peak_s) else np.nan
            )
        else:
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=[*EVENT_COLUMNS, *keep])


def _explained(row: Mapping) -> bool:
    return isinstance(row.get("scale"), str)


def _peak_surprise(row: dict) -> float:
    """An event's peak surprise, back from its severity (peak + log10 of its samples)."""
    sev = row.get("severity")
    if sev is None or not np.isfinite(sev):
        return -np.inf
    step = row["duration_s"] - (row["end"] - row["start"]).total_seconds()
    return float(sev) - np.log10(max(row["duration_s"] / (step or 1.0), 1.0))


def continue_event(
    events: pd.DataFrame,
    previous: pd.DataFrame | None,
    window_start: pd.Timestamp,
    max_gap: pd.Timedelta,
) -> pd.DataFrame:
    """An event that opens a window may be the rest of one that closed the window before
    (an anomaly does not stop at the hour). When the previous window's last event ended
    within ``max_gap`` of this window's first event, the two become one event that keeps
    the earlier start; written back (an event point's time is its start), it replaces the
    earlier, shorter record instead of adding a second event."""
    if events.empty or previous is None or previous.empty:
        return events
    window_start = pd.Timestamp(window_start)
    first = events.sort_values("start").iloc[0]
    if first["start"] - window_start > max_gap:
        return events
    before = previous[previous["end"] < window_start].sort_values("end")
    if before.empty:
        return events
    last = before.iloc[-1]
    if first["start"] - last["end"] > max_gap:
        return events
    joined = join_events(pd.concat([last.to_frame().T.reindex(columns=EVENT_COLUMNS),
                                    events.reindex(columns=EVENT_COLUMNS)],
                                   ignore_index=True), max_gap)
    joined = joined[joined["end"] >= window_start].reset_index(drop=True)
    prior = last.to_dict()
    rows = [_remember_prior(row, prior, window_start) if row["start"] == last["start"] else row
            for row in joined.to_dict("records")]
    return pd.DataFrame(rows).reindex(columns=[*joined.columns, *PRIOR_COLUMNS.values(), EXTENDED_AT])


def revise_previous(
    events: pd.DataFrame,
    carried: pd.DataFrame | None,
    previous: pd.DataFrame | None,
    window_start: pd.Timestamp,
    max_gap: pd.Timedelta,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """This window's events and the previous windows' records it revises.

    The window before settled its last event without the data after its end (an event
    ending near the hour may be cut short, or run on to the hour). ``carried`` (see
    :class:`ScoredSeries`) is what this window's data settles about it, over the left
    context: a carried event that overlaps (within ``max_gap``) a ``previous`` record
    revises that record, keeping its start (so, written back, it replaces it):
    * when it continues into this window, the record and this window's events up to its
      end become one event (returned among the events, as :func:`continue_event`);
    * when it ends before this window, the record ends where it ends (shortened or
      extended), returned in the second frame; this window has no event for it.
    Without a carried event that matches, :func:`continue_event` decides."""
    empty = pd.DataFrame(columns=EVENT_COLUMNS)
    window_start = pd.Timestamp(window_start)
    if carried is None or carried.empty or previous is None or previous.empty:
        return continue_event(events, previous, window_start, max_gap), empty
    before = previous[previous["start"] < window_start].sort_values("start")
    out = events.reindex(columns=EVENT_COLUMNS).reset_index(drop=True)
    revised, matched = [], False
    for c in carried.sort_values("start").to_dict("records"):
        hits = before[(before["end"] >= c["start"] - max_gap)
                      & (before["start"] <= c["end"] + max_gap)]
        if hits.empty:
            continue
        matched = True
        last = hits.iloc[-1].reindex(EVENT_COLUMNS).to_dict()
        if c["end"] >= window_start:  # it runs on: one event from the earlier start
            mine = out["start"] <= c["end"] + max_gap
            joined = join_events(
                pd.DataFrame([last, *out[mine].to_dict("records")]).reindex(columns=EVENT_COLUMNS),
                pd.Timedelta.max,
            )
            joined = pd.DataFrame([_remember_prior(r, last, window_start)
                                   for r in joined.to_dict("records")])
            out = pd.concat([joined, out[~mine]], ignore_index=True)
            continue
        if not np.isfinite(c["peak"]) and max(c["end"], last["start"]) == last["end"]:
            # settled as stored from alerts in the left context alone: nothing to write
            # (one whose alerts reach into this window is returned: the window's report
            # names the earlier event its scores above the threshold belong to)
            continue
        before_revision = dict(last)
        step = last["duration_s"] - (last["end"] - last["start"]).total_seconds()
        peak_s = max(_peak_surprise(last), _peak_surprise(c))
        last["end"] = max(c["end"], last["start"])
        last["duration_s"] = (last["end"] - last["start"]).total_seconds() + step
        last["peak"] = float(np.fmax(last["peak"], c["peak"]))
        last["severity"] = (peak_s + np.log10(max(last["duration_s"] / (step or 1.0), 1.0))
                            if np.isfinite(peak_s) else np.nan)
        revised.append(_remember_prior(last, before_revision, window_start))
    if not matched:
        return continue_event(events, previous, window_start, max_gap), empty
    out = out.sort_values("start").reset_index(drop=True)
    return out, pd.DataFrame(revised).reindex(
        columns=[*EVENT_COLUMNS, *PRIOR_COLUMNS.values(), EXTENDED_AT])


#: what a record that a window extended remembers of itself before that window (the
#: record's own columns, stored beside them): a re-run of the window restores it and
#: joins the window's events again, instead of joining them twice
PRIOR_COLUMNS = {"end": "prior_end", "peak": "prior_peak", "mean": "prior_mean",
                 "duration_s": "prior_duration_s", "severity": "prior_severity"}
#: the start of the window whose data a continued record last took in
EXTENDED_AT = "extended_at"


def _remember_prior(joined: dict, last: dict, window_start: pd.Timestamp) -> dict:
    for col, prior in PRIOR_COLUMNS.items():
        joined[prior] = last.get(col)
    joined[EXTENDED_AT] = window_start
    return joined


def stored_as_of(previous: pd.DataFrame | None, window_start: pd.Timestamp
                 ) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """The stored records as this window's scoring must see them, and the ones a later
    window already took over.

    * A record this window extended on an earlier run (``extended_at`` is this window)
      is restored to what it was before (its ``prior_*`` columns), so that a re-run joins
      the window's events to the same record as the first run did: same end, peak, mean,
      severity.
    * A record a *later* window extended (``extended_at`` after this window) already holds
      this window's part of it: it is returned apart (second frame) and left as stored.
    Records that start inside the window and were not extended are this window's own
    (re-written by a re-run) and are left out."""
    empty = pd.DataFrame(columns=EVENT_COLUMNS)
    if previous is None or previous.empty:
        return previous, empty
    window_start = pd.Timestamp(window_start)
    prev = previous.reset_index(drop=True)
    if "event_kind" in prev.columns:  # data_missing records are not anomalies to continue
        prev = prev[prev["event_kind"].isna() | (prev["event_kind"] == "")].reset_index(drop=True)
    ext = (pd.to_datetime(prev[EXTENDED_AT], utc=True) if EXTENDED_AT in prev.columns
           else pd.Series(pd.NaT, index=prev.index, dtype="datetime64[ns, UTC]"))
    later = (ext > window_start).to_numpy()
    mine = (ext == window_start).to_numpy()
    if mine.any():
        prev = prev.copy()
        for col, prior in PRIOR_COLUMNS.items():
            if prior in prev.columns:
                prev.loc[mine, col] = prev.loc[mine, prior]
        prev.loc[mine, [c for c in (*PRIOR_COLUMNS.values(), EXTENDED_AT) if c in prev.columns]] = None
    before = (pd.to_datetime(prev["start"], utc=True) < window_start).to_numpy()
    return prev[before & ~later].reset_index(drop=True), prev[later].reset_index(drop=True)


def keep_taken_over(events: pd.DataFrame, taken: pd.DataFrame,
                    max_gap: pd.Timedelta) -> pd.DataFrame:
    """This window's events, where a record a later window took over (see
    :func:`stored_as_of`) stands for the events it covers: written back unchanged, not
    re-joined or cut to this window."""
    if taken.empty:
        return events
    out = events.reset_index(drop=True)
    keep = np.ones(len(out), dtype=bool)
    records = []
    for rec in taken.to_dict("records"):
        covered = ((out["start"] <= rec["end"] + max_gap)
                   & (out["end"] >= rec["start"] - max_gap)).to_numpy(dtype=bool)
        keep &= ~covered
        # the record read back has no explanation: its most surprising covered event's
        explained = [e for e in out[covered].to_dict("records") if _explained(e)]
        if explained and not _explained(rec):
            best = max(explained, key=_peak_surprise)
            rec.update({col: best.get(col) for col in EXPLAIN_COLUMNS})
        records.append(rec)
    taken = pd.DataFrame(records).reindex(columns=list(dict.fromkeys(
        [*taken.columns, *(c for c in EXPLAIN_COLUMNS if c in out.columns)])))
    return (pd.concat([out[keep], taken], ignore_index=True)
            .sort_values("start").reset_index(drop=True))


def settle_with_stored(
    events: pd.DataFrame,
    carried: pd.DataFrame | None,
    stored: pd.DataFrame | None,
    window_start: pd.Timestamp,
    max_gap: pd.Timedelta,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """This window's events and the earlier records it revises, given what is stored
    (``stored``: the records of the week before the window and of the window itself,
    as read back): :func:`stored_as_of`, then :func:`revise_previous`, then
    :func:`keep_taken_over`. Scoring a window twice stores the same events."""
    previous, taken = stored_as_of(stored, window_start)
    events, revised = revise_previous(events, carried, previous, window_start, max_gap)
    return keep_taken_over(events, taken, max_gap), revised


def _revised_by(events: pd.DataFrame, revisions: Mapping) -> pd.DataFrame:
    """``events`` (a copy) with each event whose start a revised record has (``revisions``,
    by start) taking that record's extent, peak and severity; its explanation stays."""
    ev = events.copy()
    if not revisions or ev.empty:
        return ev
    for i, start in zip(ev.index, ev["start"], strict=True):
        rec = revisions.get(pd.Timestamp(start).value)
        if rec is not None:
            for col in ("end", "duration_s", "peak", "severity"):
                if col in ev.columns:
                    ev.at[i, col] = rec.get(col)
    return ev


def merge_by_series(
    parts: Iterable[ScoredSeries], max_gap: pd.Timedelta | None = None
) -> list[ScoredSeries]:
    """Join the chunks of each series (in time order) into one result per series; events
    closer than ``max_gap`` across a chunk boundary become one. A chunk's ``revised``
    records (a later chunk settled where an earlier chunk's event ends, and rewrote its
    record) revise that event here too, so the result says what is stored."""
    by_key: dict[str, list[ScoredSeries]] = {}
    for p in parts:
        by_key.setdefault(p.key, []).append(p)
    out = []
    for key, group in by_key.items():
        group.sort(key=lambda p: p.frame.index[0] if len(p.frame) else pd.Timestamp.min.tz_localize("UTC"))
        # each event keeps its own picture (segment at its peak, nearest shape): when two
        # events across a chunk boundary become one, the pair of the higher peak stays
        pairs: list[tuple] = []
        parts = []
        revisions = {pd.Timestamp(rec["start"]).value: rec for p in group
                     if p.revised is not None for rec in p.revised.to_dict("records")}
        for p in group:
            ev = _revised_by(p.events, revisions)
            shapes = list(p.nearest_shapes)
            ev["_pair"] = [len(pairs) + i if i < len(shapes) else -1 for i in range(len(ev))]
            pairs.extend(shapes)
            parts.append(ev)
        joined = join_events(pd.concat(parts, ignore_index=True),
                             max_gap if max_gap is not None else pd.Timedelta(0), keep=("_pair",))
        shapes = [pairs[int(i)] if 0 <= int(i) < len(pairs) else (None, None)
                  for i in joined["_pair"]] if any(len(p.nearest_shapes) for p in group) else []
        out.append(
            ScoredSeries(
                key,
                pd.concat([p.frame for p in group]),
                joined.drop(columns=["_pair"]),
                group[-1].threshold,
                group[-1].source,
                shapes,
                group[-1].series_key,
            )
        )
    return out
