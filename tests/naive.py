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
