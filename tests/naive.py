"""Plain, obviously-correct reference implementations (as STUMPY keeps a naive module).

This is the notebook's per-segment loop (reference/001, "Reconstruction from
Clusters") with its bugs fixed: an integer slide (``n // 2``, not ``n / 2``), no
in-place windowing of the caller's data, the reconstruction it computes is the one it
returns, errors are absolute, and distances are computed directly per centroid rather
than by one ``predict`` call per segment. It also covers the first and last half
segment: the series is padded by zeros (the values do not matter) and the segments
that reach into the padding are matched on their real points only, which is the rule
``cricket.shapes`` documents.
"""

from __future__ import annotations

import math

import numpy as np


def window(n: int) -> np.ndarray:
    return np.array([math.sin(math.pi * i / n) ** 2 for i in range(n)])


def sliding_chunker(data: np.ndarray, window_len: int, slide_len: int) -> list[np.ndarray]:
    """The notebook's chunker: copies, and drops a trailing short chunk."""
    chunks = []
    for pos in range(0, len(data), slide_len):
        chunk = np.copy(data[pos : pos + window_len])
        if len(chunk) != window_len:
            continue
        chunks.append(chunk)
    return chunks


def training_segments(data: np.ndarray, n: int, slide: int) -> np.ndarray:
    w = window(n)
    return np.array([seg * w for seg in sliding_chunker(data, n, slide)])


def overlap_add(segments: np.ndarray, n: int, total_len: int) -> np.ndarray:
    out = np.zeros(total_len)
    h = n // 2
    for k, seg in enumerate(segments):
        out[k * h : k * h + n] += seg
    return out


def reconstruct(
    data: np.ndarray, centroids: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reconstruction, nearest index per segment, distance per segment)."""
    data = np.asarray(data, dtype=float)
    h = n // 2
    left = h
    right = h + (-len(data)) % h
    padded = np.concatenate([np.zeros(left), data, np.zeros(right)])
    real = np.concatenate([np.zeros(left), np.ones(len(data)), np.zeros(right)])
    w = window(n)
    recon = np.zeros(len(padded))
    idx, dist = [], []
    for pos in range(0, len(padded) - n + 1, h):
        segment = padded[pos : pos + n] * w  # a new array: the data is not touched
        mask = real[pos : pos + n]
        d = [math.sqrt(float(np.sum(mask * (segment - c) ** 2))) for c in centroids]
        j = int(np.argmin(d))
        idx.append(j)
        dist.append(d[j])
        recon[pos : pos + n] += centroids[j]
    return recon[left : left + len(data)], np.array(idx), np.array(dist)


def residuals(data: np.ndarray, centroids: np.ndarray, n: int) -> np.ndarray:
    return np.abs(np.asarray(data, dtype=float) - reconstruct(data, centroids, n)[0])


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    out = np.empty(len(x))
    for i in range(len(x)):
        lo = max(i - width // 2, 0)
        hi = min(i - width // 2 + width, len(x))
        out[i] = np.mean(x[lo:hi])
    return out


def events(
    mask: np.ndarray, scores: np.ndarray, min_gap: int
) -> list[tuple[int, int, float, float]]:
    """Intervals of True, merged when fewer than ``min_gap`` False points separate them."""
    runs: list[list[int]] = []
    for i, m in enumerate(mask):
        if not m:
            continue
        if runs and i - runs[-1][1] - 1 < min_gap:
            runs[-1][1] = i
        elif runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    out = []
    for a, b in runs:
        s = scores[a : b + 1]
        out.append((a, b, float(np.nanmax(s)), float(np.nanmean(s))))
    return out


# ------------------------------------------------------------------ the shipped score
# WaveformDetector's score, point by point, from the definitions in cricket/detector.py
# and cricket/calibration.py: no vectorisation, no search tables, no piece bookkeeping.


def fill_short_gaps(x: np.ndarray, max_gap: int) -> np.ndarray:
    """Each run of at most ``max_gap`` NaN with data on both sides, filled linearly."""
    x = np.array(x, dtype=float)
    i = 0
    while i < len(x):
        if not math.isnan(x[i]):
            i += 1
            continue
        j = i
        while j < len(x) and math.isnan(x[j]):
            j += 1
        if 0 < i and j < len(x) and j - i <= max_gap:
            for k in range(i, j):
                x[k] = x[i - 1] + (x[j] - x[i - 1]) * (k - i + 1) / (j - i + 1)
        i = j
    return x


def trailing_errors(x: np.ndarray, centroids: np.ndarray, n: int,
                    spanning: bool = True) -> np.ndarray:
    """Per point: the distance of the windowed segment that ends there to its nearest
    centroid; NaN where the n points up to it are not all numbers. With ``spanning``, a
    segment with missing points is matched on its observed points only, when the point
    itself is observed and the observed points hold at least half of the window's energy
    (sum of w^2): the squared distance over them, divided by that share."""
    w = window(n)
    energy = sum(v * v for v in w)
    out = np.full(len(x), np.nan)
    for i in range(n - 1, len(x)):
        seg = x[i - n + 1 : i + 1]
        seen = [not math.isnan(v) for v in seg]
        if all(seen):
            out[i] = min(math.sqrt(float(np.sum((seg * w - c) ** 2))) for c in centroids)
            continue
        share = sum(w[j] ** 2 for j in range(n) if seen[j]) / energy
        if not spanning or not seen[-1] or share < 0.5:
            continue
        best = min(sum((seg[j] * w[j] - c[j]) ** 2 for j in range(n) if seen[j]) for c in centroids)
        out[i] = math.sqrt(best / share)
    return out


def tail_calibration(errors: np.ndarray, n_quantiles: int = 257, tail_from: float = 0.9,
                     min_beta: float = 0.01) -> tuple[np.ndarray, float]:
    """(stored quantiles, tail scale): the quantiles at 0, 1/256, ..., 1 of the finite
    errors, and the mean excess over the ``tail_from`` quantile (at least ``min_beta``)."""
    e = np.sort(np.asarray(errors, dtype=float)[np.isfinite(errors)])
    probs = [k / (n_quantiles - 1) for k in range(n_quantiles)]
    q = np.array([np.quantile(e, p) for p in probs])
    u = np.quantile(e, tail_from)
    excess = [v - u for v in e if v > u]
    beta = min_beta if len(excess) < 2 else max(sum(excess) / len(excess), min_beta)
    return q, beta


def surprise(e: float, quantiles: np.ndarray, beta: float, tail_from: float = 0.9) -> float:
    """-log10 P(E >= e): one minus the CDF read linearly between the stored quantiles
    (at most 1 - tail_from below the tail), an exponential tail of scale ``beta``
    above the ``tail_from`` quantile."""
    if math.isnan(e):
        return math.nan
    m = len(quantiles) - 1
    probs = [k / m for k in range(m + 1)]
    q = list(np.maximum.accumulate(quantiles))
    pos = tail_from * m  # the tail's start, read off the stored quantiles
    u = quantiles[int(pos)] + (quantiles[min(int(pos) + 1, m)] - quantiles[int(pos)]) * (pos - int(pos))
    if e > u:
        p = (1 - tail_from) * math.exp(-(e - u) / beta)
    else:
        if e < q[0]:
            cdf = 0.0
        elif e >= q[-1]:
            cdf = 1.0
        else:
            k = max(i for i in range(m + 1) if q[i] <= e)
            cdf = probs[k] + (probs[k + 1] - probs[k]) * (e - q[k]) / (q[k + 1] - q[k])
        p = min(max(1 - cdf, 1 - tail_from), 1.0)
    return math.inf if p == 0 else -math.log10(p)


def score(s: float) -> float:
    """0-100 from a surprise: 100 s / (s + 3), 100 for an infinite surprise."""
    if math.isnan(s):
        return math.nan
    return 100.0 if math.isinf(s) else 100.0 * s / (s + 3.0)


def detector_scores(values: np.ndarray, det, spanning: bool = True) -> np.ndarray:  # noqa: ANN001
    """The 0-100 score of every point of ``values`` by a fitted WaveformDetector, read
    from its learned numbers (scalers, centroids, stored quantiles, tail scales).
    ``spanning=False``: segments over a gap are not scored (the rule before they were)."""
    x = np.array(values, dtype=float)
    x[np.isinf(x)] = np.nan
    if det.per_series_scaling:  # a fleet detector scales each series by itself
        finite = x[np.isfinite(x)]
        q1, med, q3 = np.percentile(finite, [25, 50, 75])
        iqr = q3 - q1 if q3 > q1 else (np.std(finite) or 1.0)
        x = (x - med) / iqr
    unfilled = (x - det.scaler_.center_) / det.scaler_.scale_
    x = fill_short_gaps(unfilled, det.spec.short_gap)
    out = np.full(len(x), np.nan)
    base_nan = None
    for lib, cal in zip(det.libraries_, det.calibrators_, strict=True):
        errs = trailing_errors(x, lib.centroids_, lib.segment_len, spanning)
        if base_nan is None:  # the range view scores where the base scale does
            base_nan = [math.isnan(e) for e in errs]
        for i, e in enumerate(errs):
            s = surprise(e, cal.quantiles, cal.beta)
            if not math.isnan(s) and (math.isnan(out[i]) or s > out[i]):
                out[i] = s
    cal = getattr(det, "spread_calibrator_", None)
    if cal is not None:  # lost periodic structure: the spread over one period
        m = det.spread_len_
        for i in range(m - 1, len(x)):
            win = x[i - m + 1 : i + 1]
            if any(math.isnan(v) for v in win):
                continue
            mean = sum(win) / m
            sd = math.sqrt(sum((v - mean) ** 2 for v in win) / m)
            s = surprise(-math.log10(sd + 1e-6), cal.quantiles, cal.beta)
            if math.isnan(out[i]) or s > out[i]:
                out[i] = s
    bounds = getattr(det, "range_", None)
    if bounds is not None:  # the value itself outside the trained range, widened by 5 %
        lo, hi, n = bounds
        width = max(hi - lo, 1e-9)
        for i, v in enumerate(unfilled):
            if math.isnan(v) or base_nan[i]:
                continue
            over = max(v - (hi + 0.05 * width), (lo - 0.05 * width) - v)
            s = math.log10(n) + 50.0 * over / width if over > 0 else 0.0
            if math.isnan(out[i]) or s > out[i]:
                out[i] = s
    cal = getattr(det, "noise_calibrator_", None)
    if cal is not None:  # lost noise: the spread of second differences over a segment
        m = det.spec.segment_len
        for i in range(m - 1, len(x)):
            win = x[i - m + 1 : i + 1]
            if any(math.isnan(v) for v in win):
                continue
            d2 = [win[j + 2] - 2 * win[j + 1] + win[j] for j in range(m - 2)]
            mean = sum(d2) / len(d2)
            sd = math.sqrt(sum((v - mean) ** 2 for v in d2) / len(d2))
            s = surprise(-math.log10(sd + 1e-6), cal.quantiles, cal.beta)
            if math.isnan(out[i]) or s > out[i]:
                out[i] = s
    return np.array([score(s) for s in out])
