"""Cross-fitted calibration: the base scale's tail checked on both ends of the history.

A scale's surprise is calibrated on its library's errors on held-out data: the last
``holdout_fraction`` of the history, which k-means never saw. That sample covers only the
most recent stretch, and on real metrics its upper tail does not hold on later data: on
the NAB dev files an error above the held-out 99th percentile came on 3.7 % of later
steps outside the labelled anomalies, and the second half of a held-out sample exceeded
its own first half's 99th percentile on 4.7 %. A short recent stretch misses the rare
bursts of real metrics (another weekday, a busy evening); the exponential tail fitted
above it then calls ordinary bursts one-in-100,000 events.

The cure checks the tail on a second out-of-sample stretch, from the other end of the
history: a *sibling* library, fitted like the model's own (same segment length and
settings, the same number of training values) on the *end* of the history, rebuilds the
*start* it never saw. Each end gives a calibration; an error is no rarer than either says
(:meth:`cricket.calibration.TailCalibrator.envelope`: the larger quantile at every level,
the heavier tail). A quiet start never makes the recent tail look rarer; a busy start
makes its kind of burst ordinary. The sibling is then dropped: the model's library, its
scaler and what a bundle stores are as before (only the calibration's quantiles and tail
scale differ), so older bundles load and score as they did. Cost: one more k-means fit of
the base scale per detector.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cricket.calibration import TailCalibrator
from cricket.segments import window
from cricket.shapes import ShapeLibrary

#: gap-free pieces of ``x`` for segments of ``m`` (``WaveformDetector._pieces``)
Pieces = Callable[[np.ndarray, int], list[tuple[int, np.ndarray]]]
#: a shape library of segment length ``m`` fitted on ``x`` (``WaveformDetector._fit_library``)
FitLibrary = Callable[[int, np.ndarray], "ShapeLibrary | None"]
MIN_ERRORS = 8  # fewer sibling errors than this: the held-out calibration alone


def trailing_errors(lib: ShapeLibrary, x: np.ndarray, pieces: Pieces) -> np.ndarray:
    """Distance of each windowed segment of ``x`` that lies wholly inside one gap-free piece
    (``pieces(x, m)``) to its nearest shape in ``lib``, at the segment's last point; NaN
    where no such segment ends."""
    m = int(lib.segment_len)
    out = np.full(len(x), np.nan)
    w = window(m)
    for start, piece in pieces(x, m):
        segs = np.lib.stride_tricks.sliding_window_view(piece, m) * w
        _, dist = lib.nearest(segs)
        out[start + m - 1 : start + len(piece)] = dist
    return out


def sibling_errors(
    history: np.ndarray, n_front: int, m: int, fit_library: FitLibrary, pieces: Pieces
) -> np.ndarray:
    """Out-of-sample errors at segment length ``m`` over ``history[:n_front]`` from a library
    fitted (``fit_library(m, values)``) on ``history[n_front:]``: the sibling of a library
    fitted on ``history[:-n_front]`` and calibrated on ``history[-n_front:]``. Only the
    finite errors (none when the sibling cannot be fitted)."""
    if not 0 < n_front < len(history):
        return np.empty(0)
    lib = fit_library(m, history[n_front:])
    if lib is None:
        return np.empty(0)
    err = trailing_errors(lib, history[:n_front], pieces)
    return err[np.isfinite(err)]


def crossfit_calibrator(
    held_err: np.ndarray,
    history: np.ndarray,
    n_held: int,
    m: int,
    fit_library: FitLibrary,
    pieces: Pieces,
) -> TailCalibrator:
    """The calibration of a scale whose library was fitted on ``history[:-n_held]`` and made
    the errors ``held_err`` on the held-out ``history[-n_held:]``: that of ``held_err``,
    enveloped with the sibling's (:func:`sibling_errors`) on ``history[:n_held]``."""
    held = TailCalibrator.fit(held_err)
    front = sibling_errors(history, n_held, m, fit_library, pieces)
    if front.size < MIN_ERRORS:
        return held
    return TailCalibrator.envelope(held, TailCalibrator.fit(front))
