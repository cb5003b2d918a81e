"""Segmenting, windowing and overlap-add, vectorised (no Python loop over segments).

A series is cut into segments of ``n`` samples. Training segments slide by a small
step (default 2); reconstruction segments slide by ``n / 2`` and are added back
together (overlap-add). The periodic window ``sin(pi * i / n) ** 2`` sums to exactly
one at a hop of ``n / 2``, so a library that holds a segment rebuilds it exactly.

Nothing here modifies the caller's array.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cricket.errors import CricketValueError


def _check_n(n: int) -> int:
    if int(n) != n or n < 2:
        raise CricketValueError(f"segment length must be an integer >= 2 (got {n!r})")
    return int(n)


def _check_even(n: int) -> int:
    n = _check_n(n)
    if n % 2:
        raise CricketValueError(f"segment length must be even (got {n}): reconstruction hops by n/2")
    return n


def window(n: int) -> np.ndarray:
    """The periodic sin² window of length ``n``: ``sin(pi * i / n) ** 2`` for i in 0..n-1.

    ``window(n)[:n//2] + window(n)[n//2:] == 1`` (to rounding) for even ``n``.
    """
    n = _check_n(n)
    return np.sin(np.pi * np.arange(n) / n) ** 2


def sliding_segments(values: np.ndarray, n: int, slide: int) -> np.ndarray:
    """Read-only view of shape ``(m, n)``: segments starting at 0, slide, 2*slide...

    A trailing part shorter than ``n`` starts no segment. ``m`` is
    ``(len(values) - n) // slide + 1`` (0 when ``len(values) < n``).
    """
    n = _check_n(n)
    if int(slide) != slide or slide < 1:
        raise CricketValueError(f"slide must be a positive integer (got {slide!r})")
    values = np.asarray(values)
    if values.ndim != 1:
        raise CricketValueError(f"values must be 1-D (got shape {values.shape})")
    if len(values) < n:
        return np.empty((0, n), dtype=values.dtype)
    view = sliding_window_view(values, n)[:: int(slide)]
    view.flags.writeable = False  # sliding_window_view already is; make sure
    return view


def windowed_segments(values: np.ndarray, n: int, slide: int) -> np.ndarray:
    """New ``(m, n)`` float array: each segment multiplied by :func:`window`."""
    segs = sliding_segments(values, n, slide)
    w = window(n).astype(np.result_type(segs.dtype, np.float32), copy=False)
    return segs * w


def pad_for_reconstruction(values: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Pad ``values`` so that every point is covered by two half-overlapping segments.

    Returns ``(padded, left)``: ``padded[left:left + len(values)]`` is ``values``. The
    left pad is ``n/2``; the right pad is ``n/2`` plus what makes the padded length a
    multiple of ``n/2``. Padding mirrors the series at each end (``numpy.pad`` mode
    ``reflect``; ``edge`` when the series is too short to mirror), so edge segments
    keep a plausible shape. The padded points themselves are discarded after
    reconstruction.
    """
    n = _check_even(n)
    values = np.asarray(values)
    if values.ndim != 1:
        raise CricketValueError(f"values must be 1-D (got shape {values.shape})")
    h = n // 2
    left = h
    right = h + (-len(values)) % h
    if len(values) == 0:
        raise CricketValueError("cannot pad an empty series")
    mode = "reflect" if len(values) > max(left, right) else "edge"
    return np.pad(values, (left, right), mode=mode), left


def overlap_add(segments: np.ndarray, n: int, total_len: int) -> np.ndarray:
    """Add segments placed at hop ``n/2`` (segment k starts at ``k * n/2``).

    Returns a new float array of length ``total_len`` (which must hold every segment).
    Vectorised: with a hop of half a segment, block k of the output is the first half
    of segment k plus the second half of segment k-1.
    """
    n = _check_even(n)
    segments = np.asarray(segments)
    if segments.ndim != 2 or segments.shape[1] != n:
        raise CricketValueError(f"segments must have shape (m, {n}) (got {segments.shape})")
    h = n // 2
    m = segments.shape[0]
    need = (m + 1) * h if m else 0
    if total_len < need:
        raise CricketValueError(
            f"total_len {total_len} is too short for {m} segments of {n} at hop {h} (need {need})"
        )
    dtype = np.result_type(segments.dtype, np.float64)
    out = np.zeros(total_len, dtype=dtype)
    if m == 0:
        return out
    blocks = out[:need].reshape(m + 1, h)
    blocks[:m] += segments[:, :h]
    blocks[1:] += segments[:, h:]
    return out
