"""Thresholds, anomaly events (intervals of anomalous points) and once-per-anomaly alerts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cricket.errors import CricketValueError

EVENT_COLUMNS = ["start_idx", "end_idx", "peak", "mean"]


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
    if min_gap < 0:
        raise CricketValueError(f"min_gap must be >= 0 (got {min_gap})")
    # Interval edges: where the mask, padded with False at both ends, changes. They
    # alternate start, stop, start, stop... (one byte per point, no int64 copies).
    padded = np.zeros(mask.size + 2, dtype=bool)
    padded[1:-1] = mask
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts = edges[0::2]
    stops = edges[1::2]  # exclusive
    if starts.size == 0:
        return pd.DataFrame(
            {
                "start_idx": np.array([], dtype=np.int64),
                "end_idx": np.array([], dtype=np.int64),
                "peak": np.array([], dtype=np.float64),
                "mean": np.array([], dtype=np.float64),
            }
        )
    if min_gap > 0 and starts.size > 1:
        gaps = starts[1:] - stops[:-1]
        new = np.concatenate(([True], gaps >= min_gap))
        starts = starts[new]
        stops = np.concatenate((stops[:-1][new[1:]], stops[-1:]))
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


def alert_scores(score: np.ndarray, hold: int | None = None, margin: float = 20.0) -> np.ndarray:
    """Fire once per anomaly: keep a point's score only where it rises above every
    score of the ``hold`` points before it and either no alert was kept in the last
    ``hold`` points or it beats the last kept one by ``margin`` (0-100 units);
    other points get 0 (NaN stays NaN).

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
    out = np.where(np.isnan(s), np.nan, 0.0)
    last_t, last_v = -(10**12), -np.inf
    for t in rising.tolist():
        v = filled[t]
        if t - last_t > hold or v >= last_v + margin:
            out[t] = v
            last_t, last_v = t, v
    return out
