"""Calibration: held-out errors become a surprise, and a surprise a 0-100 score.

An error ``e`` becomes a surprise ``s = -log10 P(E >= e)`` under the distribution of
errors on held-out data (data k-means never saw): read from stored quantiles below the
90th percentile, from an exponential tail fitted to the top 10 % above it (so errors
beyond anything held out still rank). The 0-100 score is ``100 * s / (s + 3)``: a
one-in-a-thousand error scores 50 on every series, whatever its units or noise, so one
threshold fits all.
"""

from __future__ import annotations

import numpy as np

from cricket.errors import CricketValueError

MIN_BETA = 0.01  # smallest tail scale (robust-scaled units)
SURPRISE_HALF = 3.0  # surprise (-log10 p) that maps to a score of 50
TAIL_FROM = 0.9  # quantile above which the exponential tail is fitted
N_QUANTILES = 257  # stored quantiles of the held-out errors
RANGE_TOLERANCE = 0.05  # a value this far (share of the trained range) outside it is still in
RANGE_SLOPE = 50.0  # surprise added per trained range beyond the tolerance


def surprise_to_score(s: np.ndarray | float) -> np.ndarray:
    """Map a surprise ``-log10 p`` (>= 0) onto 0-100: ``100 s / (s + 3)``."""
    s = np.maximum(np.asarray(s, dtype=np.float64), 0.0)
    with np.errstate(invalid="ignore"):
        out = 100.0 * s / (s + SURPRISE_HALF)
    # An error beyond anything ever seen has infinite surprise: the top of the scale,
    # not inf/inf = NaN (which would leave the largest anomalies unflagged).
    return np.where(np.isposinf(s), 100.0, out)


class TailCalibrator:
    """Turns errors into surprise ``-log10 P(E >= e)`` from a sample of held-out errors.

    Below the ``TAIL_FROM`` quantile the survival function is read from stored
    quantiles; above it an exponential tail (mean excess ``beta``) extrapolates.
    """

    def __init__(self, quantiles: np.ndarray, beta: float) -> None:
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self.beta = float(beta)

    @classmethod
    def fit(cls, errors: np.ndarray, min_beta: float = MIN_BETA) -> TailCalibrator:
        e = np.asarray(errors, dtype=np.float64)
        e = e[np.isfinite(e)]
        if e.size == 0:
            raise CricketValueError("no held-out error to calibrate the score: give more data")
        q = np.quantile(e, np.linspace(0.0, 1.0, N_QUANTILES))
        u = float(np.quantile(e, TAIL_FROM))
        excess = e[e > u] - u
        if excess.size < 2:
            return cls(q, float(min_beta))
        return cls(q, max(float(excess.mean()), float(min_beta)))

    @classmethod
    def envelope(cls, *cals: TailCalibrator) -> TailCalibrator:
        """The calibration no more surprised by any error than each of ``cals``: at every
        level the largest stored quantile, and the largest tail scale (above the highest
        tail start every tail's surprise is at least this one's)."""
        return cls(np.max([c.quantiles for c in cals], axis=0), max(c.beta for c in cals))

    def surprise(self, errors: np.ndarray) -> np.ndarray:
        e = np.asarray(errors, dtype=np.float64)
        probs = np.linspace(0.0, 1.0, N_QUANTILES)
        u = float(np.interp(TAIL_FROM, probs, self.quantiles))
        # Empirical part: P(E >= e) = 1 - F(e), F interpolated between stored quantiles.
        # np.interp needs increasing x: ties in the quantiles are resolved to the top.
        q = np.maximum.accumulate(self.quantiles)
        cdf = np.interp(e, q, probs, left=0.0, right=1.0)
        surv = np.clip(1.0 - cdf, 1.0 - TAIL_FROM, 1.0)
        # The tail in log space, -log10((1 - TAIL_FROM) exp(-z)): no underflow to an
        # infinite surprise, so the largest errors still rank (severity is uncapped).
        tail = -np.log10(1.0 - TAIL_FROM) + np.maximum(e - u, 0.0) / self.beta * np.log10(np.e)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(e > u, tail, -np.log10(surv))
        return np.where(np.isnan(e), np.nan, out)


def range_surprise(x: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """Surprise of each value against the range ``[lo, hi]`` of the ``n`` values a model
    was trained on: 0 inside it (widened by ``RANGE_TOLERANCE`` of its width), else
    ``log10 n`` (a value beyond all ``n`` seen is rarer than one in ``n``) plus
    ``RANGE_SLOPE`` per range width beyond; NaN where ``x`` is NaN. Causal and per
    point: a spike or a level shift past anything trained on is surprising at once,
    before any segment holding it has passed."""
    x = np.asarray(x, dtype=np.float64)
    width = max(float(hi) - float(lo), 1e-9)
    tol = RANGE_TOLERANCE * width
    with np.errstate(invalid="ignore"):
        over = np.maximum(x - (hi + tol), (lo - tol) - x)
        out = np.where(over > 0, np.log10(max(int(n), 1)) + RANGE_SLOPE * over / width, 0.0)
    return np.where(np.isnan(x), np.nan, out)
