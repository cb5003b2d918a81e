"""Thresholds, 0-100 scores and anomaly events (intervals of anomalous points)."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
        raise ValueError(
            f"mask and scores must be 1-D of equal length (got {mask.shape} and {scores.shape})"
        )
    if min_gap < 0:
        raise ValueError(f"min_gap must be >= 0 (got {min_gap})")
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
        raise ValueError(f"quantile must be in (0, 1] (got {quantile})")
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    if e.size == 0:
        raise ValueError("no finite error to set a threshold from: give more held-out data")
    return float(np.quantile(e, quantile) * scale)


def to_score_0_100(errors: np.ndarray, threshold: float, at_threshold: float = 50.0) -> np.ndarray:
    """Map errors (>= 0) onto 0-100 so that ``threshold`` lands on ``at_threshold``.

    Monotone and saturating: ``score = 100 * r / (r + k)`` with ``r = error /
    threshold`` and ``k`` chosen so that ``r = 1`` gives ``at_threshold``. NaN stays NaN.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0 (got {threshold})")
    if not 0 < at_threshold < 100:
        raise ValueError(f"at_threshold must be in (0, 100) (got {at_threshold})")
    k = 100.0 / at_threshold - 1.0
    r = np.maximum(np.asarray(errors, dtype=np.float64), 0.0) / threshold
    return 100.0 * r / (r + k)


def from_score_0_100(
    scores: np.ndarray, threshold: float, at_threshold: float = 50.0
) -> np.ndarray:
    """Inverse of :func:`to_score_0_100` (scores of 100 map to +inf)."""
    k = 100.0 / at_threshold - 1.0
    s = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return threshold * k * s / (100.0 - s)
