"""Gaps, as the detector reads them: which segments a series with missing steps holds,
and how a segment that spans a gap is matched to the shape library.

- Gaps of at most ``spec.short_gap`` steps are interpolated (:func:`cricket.series.
  fill_short_gaps`); longer ones stay missing, and nothing is ever invented for them.
- A segment wholly inside data (a gap-free piece, :func:`pieces`) is matched as it is.
- A segment that spans a longer gap (or starts inside one) is matched on its *observed*
  samples only (:func:`spanning_errors`): its distance to each shape counts only the
  positions that hold data, and is rescaled to a whole segment's by the share of the
  window's energy (``sum w^2``) observed. It needs its own last sample (a missing step
  gets no score) and at least ``MIN_OBSERVED`` of the window's energy; so after an outage
  longer than a segment, scoring resumes half a segment later, on the data after it, and
  a point whose segment misses the middle of its window (a gap of 8 or more steps about
  half a segment back, at 32 samples) stays unscored.

Irregular series (rows at uneven times on a regular grid: 18-77 % of the steps of NAB's
traffic files are missing) would otherwise leave most of their rows unscored, because
any gap longer than ``short_gap`` broke every segment over it. The calibration is the
held-out errors of whole segments; a spanning segment's rescaled distance runs at or
below a whole one's on the same data (gaps punched into gap-free series: surprise >= 2
on 2.2 % of spanning segments against 3.3 % of whole ones), so it alerts no more readily.
On data without gaps beyond ``short_gap`` nothing here runs: its scores are unchanged.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cricket.segments import window
from cricket.series import fill_short_gaps, split_at_gaps

__all__ = ["MIN_OBSERVED", "masked_nearest", "pieces", "spanning_errors"]

#: least share of the window's energy (sum of w^2) a spanning segment must observe
MIN_OBSERVED = 0.5
_CHUNK = 1 << 18  # elements of a (segments x shapes) block


def pieces(scaled: np.ndarray, short_gap: int, n: int) -> list[tuple[int, np.ndarray]]:
    """Gap-free pieces of at least ``n`` samples after short gaps are filled, as
    ``(start offset, piece)``."""
    return split_at_gaps(fill_short_gaps(scaled, short_gap), n)


def masked_nearest(
    segments: np.ndarray, observed: np.ndarray, centroids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row of ``segments`` counting only its ``observed``
    positions: ``(index, squared distance over those positions)``. ``segments`` (m, n)
    are windowed and hold 0 where not observed; ``observed`` is (m, n) of 0/1.
    ``sum_i o_i (s_i - c_i)^2 = |s|^2 - 2 s.c + o.c^2`` as matrix products in blocks;
    the chosen centroid's distance is then summed directly (no cancellation)."""
    s = np.asarray(segments, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    m = len(s)
    idx = np.empty(m, dtype=np.intp)
    if m == 0:
        return idx, np.empty(0)
    shift = c.mean(axis=0)  # both sides shifted: small numbers, the same distances
    c0 = c - shift
    s0 = (s - shift) * o
    ct2, csq = -2.0 * c0.T, (c0 * c0).T
    step = max(1, _CHUNK // max(len(c), 1))
    for lo in range(0, m, step):
        hi = min(lo + step, m)
        g = s0[lo:hi] @ ct2 + o[lo:hi] @ csq  # |s|^2 is the same for every centroid
        idx[lo:hi] = np.argmin(g, axis=1)
    diff = (s0 - c0[idx]) * o
    return idx, np.einsum("ij,ij->i", diff, diff)


def spanning_errors(
    filled: np.ndarray, centroids: np.ndarray, scored: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distances of the segments that span a gap: ``(end positions, distances)``.

    ``filled``: the scaled series with short gaps filled (NaN where missing);
    ``centroids``: the library's shapes (k, n); ``scored``: the distance each whole
    segment got, by its end (NaN where none ends). A position is scored here when it
    holds data, no whole segment ends there, ``n - 1`` positions precede it, and the
    segment ending there observes at least ``MIN_OBSERVED`` of the window's energy; its
    distance is the masked one (:func:`masked_nearest`) rescaled to a whole segment,
    ``sqrt(d^2 / share observed)``."""
    x = np.asarray(filled, dtype=np.float64)
    n = int(np.shape(centroids)[1])
    obs = np.isfinite(x)
    at = np.flatnonzero(obs & np.isnan(scored))
    at = at[at >= n - 1]
    if at.size == 0:
        return at, np.empty(0)
    w = window(n)
    energy = w * w
    seen = sliding_window_view(obs, n)[at - n + 1]
    share = seen @ energy / energy.sum()
    keep = share >= MIN_OBSERVED
    at, seen, share = at[keep], seen[keep], share[keep]
    if at.size == 0:
        return at, np.empty(0)
    segs = sliding_window_view(np.where(obs, x, 0.0), n)[at - n + 1] * w
    _, d2 = masked_nearest(segs, seen, centroids)
    return at, np.sqrt(d2 / share)
