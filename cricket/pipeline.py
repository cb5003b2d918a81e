"""The pipeline's steps as plain functions: windows, prepare, train, evaluate, score.

Prefect tasks in ``tasks/`` wrap these; a notebook user can call them directly.
Nothing here imports Prefect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from cricket.config import DetectorSpec
from cricket.detector import WaveformDetector
from cricket.errors import CricketValueError
from cricket.influx.base import SeriesKey
from cricket.series import RobustScaler, fill_short_gaps, validate

# ---------------------------------------------------------------- time windows


def utc(ts: datetime | str | pd.Timestamp) -> datetime:
    """A timezone-aware UTC datetime; naive input is taken as UTC."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.to_pydatetime()


def floor_time(ts: datetime, step: timedelta) -> datetime:
    """Floor ``ts`` to a multiple of ``step`` since the epoch (UTC)."""
    ts = utc(ts)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    n = math.floor((ts - epoch) / step)
    return epoch + n * step


def score_window(at: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """The last complete window before ``at``: a run scheduled at 10:05 scores 09:00-10:00."""
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


# ---------------------------------------------------------------- prepare


def prepare(series: pd.Series, spec: DetectorSpec) -> pd.Series:
    """Validate a regular series and fill its short gaps; long gaps stay NaN (the detector
    splits there, so no segment straddles them)."""
    s = validate(series)
    values = fill_short_gaps(s.to_numpy(dtype=float), spec.short_gap)
    return pd.Series(values, index=s.index, name=s.name)


def finite_count(values: np.ndarray | pd.Series) -> int:
    return int(np.isfinite(np.asarray(values, dtype=float)).sum())


# ---------------------------------------------------------------- train


@dataclass
class TrainedSeries:
    """What training one series produced. ``detector`` is None when the series had too
    little history; the fleet library then serves it."""

    key: str
    detector: WaveformDetector | None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def split_holdout(holdout: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The held-out tail is split in two: the first half calibrates the threshold, the
    second half is only ever scored (false alarms and probe recall for promotion)."""
    mid = len(holdout) // 2
    return holdout.iloc[:mid], holdout.iloc[mid:]


def train_series(
    key: str,
    train: pd.Series,
    holdout: pd.Series,
    spec: DetectorSpec,
    min_points: int,
) -> TrainedSeries:
    """Fit one series' detector on ``train``; calibrate on the first half of ``holdout``."""
    x = prepare(train, spec)
    calib, _ = split_holdout(prepare(holdout, spec))
    n = finite_count(x)
    if n < min_points or finite_count(calib) < 2 * spec.segment_len:
        return TrainedSeries(
            key,
            None,
            {"n_train": float(n)},
            reason=f"too little history ({n} points, need {min_points}): served by the fleet library",
        )
    det = WaveformDetector(spec).fit(x.to_numpy(), holdout=calib.to_numpy())
    return TrainedSeries(key, det, training_metrics(det, calib.to_numpy(), n))


def training_metrics(det: WaveformDetector, calib: np.ndarray, n_train: int) -> dict[str, float]:
    """What a reviewer wants per series: how well k-means fitted (inertia per training
    segment), how big held-out errors are, the threshold, how much of the held-out
    calibration half the detector would flag."""
    sf = det.score(calib)
    err = np.asarray(sf.error, dtype=float)
    err = err[np.isfinite(err)]
    lib = det.library_
    segments = max(int(getattr(lib, "n_train_segments_", 0) or 0), 1)
    metrics = {
        "n_train": float(n_train),
        "threshold": float(det.threshold_),
        "inertia_per_segment": float(getattr(lib, "inertia_", np.nan)) / segments,
        "heldout_flagged_fraction": float(np.mean(sf.anomalous)) if len(sf.anomalous) else 0.0,
    }
    if err.size:
        for q in (50, 99):
            metrics[f"heldout_error_p{q}"] = float(np.percentile(err, q))
    return metrics


def overall_metrics(per_series: dict[str, dict[str, float]]) -> dict[str, float]:
    """Means over the series that have each metric (the run's headline numbers)."""
    names = sorted({k for m in per_series.values() for k in m})
    out: dict[str, float] = {"series": float(len(per_series))}
    for name in names:
        vals = [m[name] for m in per_series.values() if name in m and np.isfinite(m[name])]
        if vals:
            out[f"mean_{name}"] = float(np.mean(vals))
    return out


def fleet_training_values(series: Iterable[pd.Series], spec: DetectorSpec, cap: int) -> np.ndarray:
    """Each series robustly scaled on its own, joined with NaN runs so that no segment
    straddles two series; at most ``cap`` points in all (evenly taken across series)."""
    parts = []
    sep = np.full(spec.short_gap + 1, np.nan)
    for s in series:
        v = s.to_numpy(dtype=float)
        if finite_count(v) < 2 * spec.segment_len:
            continue
        scaler = RobustScaler().fit(v[np.isfinite(v)])
        parts.append(scaler.transform(v))
    if not parts:
        return np.array([], dtype=float)
    per = max(cap // len(parts), 2 * spec.segment_len)
    joined = []
    for p in parts:
        joined.append(p[-per:])
        joined.append(sep)
    return np.concatenate(joined[:-1])


def train_fleet(values: np.ndarray, spec: DetectorSpec) -> WaveformDetector | None:
    """The fleet library: one detector over many series, each robustly scaled by itself
    (``fleet_training_values``); it scales each series it scores the same way."""
    if finite_count(values) < 8 * spec.segment_len:
        return None
    return WaveformDetector(spec, per_series_scaling=True).fit(values)


# ---------------------------------------------------------------- score


@dataclass
class ScoredSeries:
    key: str
    frame: pd.DataFrame  # index: UTC time; value, reconstruction, error, score, anomalous
    events: pd.DataFrame  # start, end, peak, mean, duration_s
    threshold: float
    source: str  # "series" or "fleet"
    nearest_shapes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    series_key: SeriesKey | None = None


EVENT_COLUMNS = ["start", "end", "peak", "mean", "duration_s"]


def score_series(
    key: str | SeriesKey,
    series: pd.Series,
    detector: WaveformDetector,
    source: str,
    window_start: datetime,
    spec: DetectorSpec,
) -> ScoredSeries:
    """Score ``series`` (the window plus its left context) and keep results for points at
    or after ``window_start`` that hold data."""
    series_key = key if isinstance(key, SeriesKey) else None
    key = str(key)
    s = prepare(series, spec)
    times = s.index
    context = int((times < pd.Timestamp(window_start)).sum())
    values = s.to_numpy(dtype=float)
    sf = detector.score(values, context=context)
    recon = np.asarray(sf.reconstruction, dtype=float)
    error = np.asarray(sf.error, dtype=float)
    out_index = times[context:]
    raw = series.reindex(out_index).to_numpy(dtype=float)
    frame = pd.DataFrame(
        {
            "value": raw,
            "reconstruction": recon,
            "error": error,
            "score": np.asarray(sf.score, dtype=float),
            "anomalous": np.asarray(sf.anomalous, dtype=bool),
        },
        index=out_index,
    )
    keep = np.isfinite(frame["value"].to_numpy()) & np.isfinite(frame["score"].to_numpy())
    ev_idx = sf.events(spec.min_event_gap)
    freq = getattr(times, "freq", None)
    if freq is not None:
        step = pd.Timedelta(freq)
    else:
        step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(0)
    rows = []
    for e in ev_idx.itertuples(index=False):
        start = out_index[int(e.start_idx)]
        end = out_index[int(e.end_idx)]
        rows.append(
            {
                "start": start,
                "end": end,
                "peak": float(e.peak),
                "mean": float(e.mean),
                "duration_s": float((end - start + step).total_seconds()),
            }
        )
    events = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    shapes = detector.nearest_shapes(values, context, ev_idx, np.asarray(sf.score, dtype=float))
    return ScoredSeries(
        key,
        frame[keep],
        events,
        float(detector.threshold_),
        source,
        shapes,
        series_key,
    )


def join_events(events: pd.DataFrame, max_gap: pd.Timedelta) -> pd.DataFrame:
    """Merge events (sorted by start) that are at most ``max_gap`` apart: an anomaly that
    spans a chunk boundary is scored as two events, one per chunk."""
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
            last["end"] = max(last["end"], row["end"])
            last["peak"] = max(last["peak"], row["peak"])
            last["duration_s"] = (last["end"] - last["start"]).total_seconds() + step
        else:
            rows.append(row)
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


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
    joined = join_events(pd.concat([last.to_frame().T[EVENT_COLUMNS], events[EVENT_COLUMNS]],
                                   ignore_index=True), max_gap)
    return joined[joined["end"] >= window_start].reset_index(drop=True)


def merge_by_series(
    parts: Iterable[ScoredSeries], max_gap: pd.Timedelta | None = None
) -> list[ScoredSeries]:
    """Join the chunks of each series (in time order) into one result per series; events
    closer than ``max_gap`` across a chunk boundary become one."""
    by_key: dict[str, list[ScoredSeries]] = {}
    for p in parts:
        by_key.setdefault(p.key, []).append(p)
    out = []
    for key, group in by_key.items():
        group.sort(key=lambda p: p.frame.index[0] if len(p.frame) else pd.Timestamp.min.tz_localize("UTC"))
        out.append(
            ScoredSeries(
                key,
                pd.concat([p.frame for p in group]),
                join_events(
                    pd.concat([p.events for p in group], ignore_index=True),
                    max_gap if max_gap is not None else pd.Timedelta(0),
                ),
                group[-1].threshold,
                group[-1].source,
                [pair for p in group for pair in p.nearest_shapes],
                group[-1].series_key,
            )
        )
    return out


# ---------------------------------------------------------------- evaluate for promotion


def inject_probes(values: np.ndarray, spec: DetectorSpec, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Copy ``values`` and plant a few known anomalies (a flat stretch at the minimum and a
    spike) so recall can be measured without labels. Returns the copy and probe ranges."""
    rng = np.random.default_rng(seed)
    x = np.array(values, dtype=float)
    n = len(x)
    n_seg = spec.segment_len
    finite = x[np.isfinite(x)]
    if n < 8 * n_seg or finite.size == 0:
        return x, []
    lo, hi = float(np.min(finite)), float(np.max(finite))
    span = (hi - lo) or 1.0
    probes = []
    slots = np.linspace(2 * n_seg, n - 3 * n_seg, 4).astype(int)
    for i, at in enumerate(slots):
        at = int(at + rng.integers(0, n_seg // 2))
        if i % 2 == 0:
            length = 3 * n_seg
            x[at : at + length] = lo - 0.5 * span
        else:
            length = 2
            x[at : at + length] = hi + 2.0 * span
        probes.append((at, min(at + length, n) - 1))
    return x, probes


# ---------------------------------------------------------------- pictures for MLflow


def training_pictures(
    detectors: dict[str, WaveformDetector],
    fleet: WaveformDetector | None,
    holdouts: dict[str, pd.Series],
    spec: DetectorSpec,
    out_dir,  # noqa: ANN001 - a Path
    max_series: int = 4,
) -> dict[str, object]:
    """The pictures a person reviewing a model version looks at: the library of shapes
    (the fleet's, else the first series') and the held-out reconstruction of a few series."""
    from pathlib import Path

    from cricket import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pics: dict[str, object] = {}
    lib_owner = fleet or next((detectors[k] for k in sorted(detectors)), None)
    if lib_owner is not None:
        path = out / "centroid_gallery.png"
        plots.centroid_gallery(lib_owner.library_.centroids_, path=path)
        pics["centroid_gallery"] = path
    rows = []
    for key in sorted(detectors)[:max_series]:
        hold = holdouts.get(key)
        if hold is None or finite_count(hold) < 2 * spec.segment_len:
            continue
        values = prepare(hold, spec).to_numpy(dtype=float)
        sf = detectors[key].score(values)
        rows.append((key, values, np.asarray(sf.reconstruction, dtype=float)))
    if rows:
        path = out / "heldout_reconstruction.png"
        plots.heldout_plot(rows, path=path, max_series=max_series)
        pics["heldout_reconstruction"] = path
    return pics
