"""ShapeLibrary: learn normal waveform shapes with k-means and rebuild data from them.

Training cuts the series into windowed segments (``segment_len`` samples, sliding by
``train_slide``) and clusters them; the centroids are the library of normal shapes.
Scoring cuts the data into windowed segments at a hop of half a segment, replaces each
by its nearest centroid (one batched search) and overlap-adds them. Where the data has
a shape the library never saw, the reconstruction is poor; the per-point error is the
anomaly signal.

The library works on clean, contiguous float arrays: no NaN, no inf. Fill or split
gaps first with :mod:`cricket.series`. ``fit`` also takes a list of contiguous pieces
(segments never straddle two pieces).

Models save to one ``.npz`` file (arrays plus the parameters as JSON text, with a
format version) and load with ``allow_pickle=False``: loading never executes code.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from cricket.scoring import events_from_mask, quantile_threshold
from cricket.segments import window, windowed_segments
from cricket.series import BadSeriesError

FORMAT_VERSION = 1
# Score-matrix elements per chunk of the nearest-centroid search: 2**18 float32 scores
# (1 MiB) stay in a core's L2 cache through the GEMM, argmin and near-tie check.
_CHUNK_ELEMENTS = 1 << 18
# Largest table of centroid half-pairs that overlap-add builds for a call (elements).
_PAIR_TABLE_ELEMENTS = 1 << 20

__all__ = [
    "FORMAT_VERSION",
    "Analysis",
    "BadSeriesError",
    "FormatVersionError",
    "NotFittedError",
    "ShapeLibrary",
    "as_clean_values",
    "check_format_version",
]


class FormatVersionError(ValueError):
    """A saved model was written in a format this version of Cricket does not read."""


def check_format_version(meta: dict[str, Any], kind: str) -> None:
    """Raise :class:`FormatVersionError` unless ``meta`` is state of ``kind`` at the
    current format version."""
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"this {kind} was saved in format version {version!r}, but this Cricket reads "
            f"format version {FORMAT_VERSION}: retrain the model, or load it with the "
            "Cricket version that wrote it"
        )
    if meta.get("kind") != kind:
        raise ValueError(f"the saved state is a {meta.get('kind')!r}, not a {kind}")


def as_clean_values(values: Any, min_len: int = 1, what: str = "values") -> np.ndarray:
    """``values`` as a 1-D float64 array, or a :class:`BadSeriesError` saying what is
    wrong (non-numeric, not 1-D, NaN/inf, shorter than ``min_len``) and what to do."""
    if isinstance(values, pd.Series | pd.Index):
        values = values.to_numpy()
    arr = np.asarray(values)
    if arr.dtype == bool:
        raise BadSeriesError(
            f"{what} are booleans, not measurements: convert with .astype(float) if 0/1 is meant"
        )
    if arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise BadSeriesError(
                f"{what} must be numeric (got dtype {arr.dtype}): convert them with "
                "pd.to_numeric or clean the series with cricket.series.validate"
            ) from exc
    if arr.ndim != 1:
        raise BadSeriesError(f"{what} must be a 1-D series (got shape {arr.shape})")
    arr = arr.astype(np.float64, copy=False)
    # One pass without a temporary: the sum is finite when every value is (it can also
    # overflow to inf for huge finite values; the exact check below then finds nothing).
    bad = None if np.isfinite(np.add.reduce(arr)) else ~np.isfinite(arr)
    if bad is not None and bad.any():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(bad.sum()) - n_nan
        first = int(np.flatnonzero(bad)[0])
        raise BadSeriesError(
            f"{what} contain {n_nan} NaN and {n_inf} infinite value(s) (first at index "
            f"{first}): the shape library needs clean contiguous data; fill or split gaps "
            "first with cricket.series (fill_short_gaps, split_at_gaps)"
        )
    if len(arr) < min_len:
        raise BadSeriesError(
            f"{what} hold {len(arr)} point(s), shorter than one segment ({min_len}): "
            "give a longer series or use a shorter segment_len"
        )
    return arr


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of width ``width``; windows shrink at the ends."""
    n = len(x)
    if width <= 1 or n == 0:
        return x.copy()
    c = np.empty(n + 1)
    c[0] = 0.0
    np.cumsum(x, out=c[1:])
    a = width // 2  # window of point i is [i - a, i - a + width)
    out = np.empty(n)
    lo_i, hi_i = min(a, n), max(min(n - width + a + 1, n), min(a, n))
    # interior: full windows, by slicing
    if hi_i > lo_i:
        mid = out[lo_i:hi_i]
        np.subtract(c[lo_i - a + width : hi_i - a + width], c[lo_i - a : hi_i - a], out=mid)
        if width & (width - 1):
            mid /= width
        else:  # a power of two: the product is the same number, and faster
            mid *= 1.0 / width
    # ends: shrinking windows
    ends = np.r_[np.arange(0, lo_i), np.arange(hi_i, n)].astype(np.intp)
    lo = np.maximum(ends - a, 0)
    hi = np.minimum(ends - a + width, n)
    out[ends] = (c[hi] - c[lo]) / (hi - lo)
    return out


def _count_distinct_rows(rows: np.ndarray) -> int:
    """Number of distinct rows (by a 64-bit hash per row; collisions only lower it)."""
    if len(rows) == 0:
        return 0
    hashes = pd.util.hash_pandas_object(pd.DataFrame(rows), index=False).to_numpy()
    return int(np.unique(hashes).size)


@dataclass(frozen=True)
class Analysis:
    """One reconstruction pass over a series (arrays of the series' length, except
    ``segment_errors``: one per reconstruction segment)."""

    reconstruction: np.ndarray
    residual: np.ndarray
    score: np.ndarray
    segment_errors: np.ndarray


@dataclass(frozen=True)
class _SearchTables:
    """What the nearest-centroid search and overlap-add derive from the centroids."""

    centroids: np.ndarray  # a private copy, to notice when the library changes
    window: np.ndarray  # (n,) the sin² window
    shift: np.ndarray  # (n,) mean centroid, subtracted from both sides
    c0: np.ndarray  # (k, n) shifted centroids
    c_sq: np.ndarray  # (k,) |c0|²
    ct2: np.ndarray  # (n, k) -2 c0ᵀ
    ct2_32: np.ndarray
    c_sq32: np.ndarray
    # ct2_32 with |c0|² folded into row 0, for windowed rows: the window is 0 at i=0,
    # so every windowed row is -shift[0] there, a constant that folds in too, and the
    # product then needs a column of ones where that constant was.
    ct2_32_folded: np.ndarray
    tol_c: float
    eps: float
    first: np.ndarray  # (k, h) first halves (+0.0, as overlap-add onto zeros gives)
    second: np.ndarray  # (k, h) second halves

    @classmethod
    def build(cls, c: np.ndarray, n: int) -> _SearchTables:
        h = n // 2
        v = c.mean(axis=0)
        c0 = c - v
        c_sq = np.einsum("ij,ij->i", c0, c0)
        ct2 = -2.0 * c0.T
        return cls(
            centroids=c.copy(),
            window=window(n),
            shift=v,
            c0=c0,
            c_sq=c_sq,
            ct2=ct2,
            ct2_32=np.ascontiguousarray(ct2, dtype=np.float32),
            c_sq32=c_sq.astype(np.float32),
            ct2_32_folded=np.ascontiguousarray(
                np.vstack([c_sq + (-v[0]) * ct2[0], ct2[1:]]), dtype=np.float32
            ),
            tol_c=float(c_sq.max()),
            eps=8.0 * (n + 2) * float(np.finfo(np.float32).eps),
            first=c[:, :h] + 0.0,
            second=np.ascontiguousarray(c[:, h:]),
        )

    def matches(self, c: np.ndarray) -> bool:
        return c.shape == self.centroids.shape and np.array_equal(c, self.centroids)

    def overlap_add(self, idx: np.ndarray, length: int) -> np.ndarray:
        """Overlap-add at hop h of centroids ``idx`` (segments of the series padded by
        h at each end, as :func:`cricket.segments.overlap_add` would place them),
        returning the ``length`` points of the series itself: block q of the series is
        the first half of segment q+1 plus the second half of segment q. For long
        series, a table of every (first half + second half) pair makes that one
        gather per block instead of two and an add."""
        k, h = self.first.shape
        q = len(idx) - 1
        if k * k <= q and k * k * h <= _PAIR_TABLE_ELEMENTS:
            pairs = self.first[:, None, :] + self.second[None, :, :]
            out = np.take(pairs.reshape(k * k, h), idx[1:] * k + idx[:-1], axis=0)
        else:
            out = np.take(self.first, idx[1:], axis=0)
            out += np.take(self.second, idx[:-1], axis=0)
        return out.reshape(q * h)[:length]


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None
_blas_controller: Any = None


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS on one thread, as scikit-learn's KMeans does for its
    chunked distance products: each chunk's product is small, and waking BLAS
    threads for it costs more than it saves (much more on a loaded machine, where a
    product waits for its slowest thread to be scheduled). The limit covers only the
    block; concurrent callers share it and the last one out restores the original."""
    global _blas_users, _blas_limiter, _blas_controller
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                from threadpoolctl import ThreadpoolController

                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


@contextmanager
def _one_fit_thread() -> Iterator[None]:
    """Run a k-means fit on one core: OpenMP limited to one thread for the calling
    thread only (the limit is a per-thread OpenMP setting) and BLAS to one thread as
    in :func:`_one_blas_thread`. Fleets fit one series per worker, so a fit's own
    threads only compete with the other workers: on 2 busy cores a 2-thread fit ran
    3-10x slower than a 1-thread one, as each OpenMP barrier waits for a descheduled
    thread."""
    with _one_blas_thread():
        controller = _blas_controller
        limiter = controller.limit(limits=1, user_api="openmp")
        try:
            yield
        finally:
            limiter.restore_original_limits()


def _search(
    t: _SearchTables, rows: np.ndarray, w: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row of ``rows`` (multiplied by ``w`` first when given):
    ``(index, squared euclidean distance)``.

    Both sides are shifted by the mean centroid (distances do not change) so that the
    numbers are small, and the search runs in float32, several times faster than
    float64. Rows whose best and second-best scores lie within float32 rounding of
    each other are searched again in float64, so the answer equals a float64 search.
    Chunks of rows keep the score matrix in cache, through preallocated buffers.
    """
    m = len(rows)
    if m * len(t.c_sq) < _CHUNK_ELEMENTS:
        return _search_chunks(t, rows, w)
    with _one_blas_thread():
        return _search_chunks(t, rows, w)


def _search_chunks(
    t: _SearchTables, rows: np.ndarray, w: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    m, n = rows.shape
    k = len(t.c_sq)
    idx = np.empty(m, dtype=np.intp)
    d2 = np.empty(m, dtype=np.float64)
    if m == 0:
        return idx, d2
    step = min(m, max(64, _CHUNK_ELEMENTS // max(k, 1)))
    # Windowed rows have 0 in column 0 (window(n)[0] == 0): fold |c0|² into the product.
    folded = w is not None and w[0] == 0.0
    ct = t.ct2_32_folded if folded else t.ct2_32
    s0_buf = np.empty((step, n))
    s32_buf = np.empty((step, n), dtype=np.float32)
    g_buf = np.empty((step, k), dtype=np.float32)
    g_flat = g_buf.reshape(-1)
    diff_buf = np.empty((step, n))
    row_start = np.arange(step) * k  # flat index of each row's first score
    if w is not None:  # the window and the shift, repeated for a whole chunk (flat ops)
        w_rep = np.tile(w, step)
        shift_rep = np.tile(t.shift, step)
    for lo in range(0, m, step):
        hi = min(lo + step, m)
        b = hi - lo
        s0 = s0_buf[:b]
        if w is None:
            np.subtract(rows[lo:hi], t.shift, out=s0)
        else:
            np.copyto(s0, rows[lo:hi])
            s0_flat = s0.reshape(-1)
            np.multiply(s0_flat, w_rep[: b * n], out=s0_flat)
            np.subtract(s0_flat, shift_rep[: b * n], out=s0_flat)
        s_sq = np.einsum("ij,ij->i", s0, s0)
        s32 = s32_buf[:b]
        np.copyto(s32, s0, casting="same_kind")
        g = g_buf[:b]
        if folded:
            s32[:, 0] = 1.0
            np.matmul(s32, ct, out=g)
        else:
            np.matmul(s32, ct, out=g)
            g += t.c_sq32
        j = np.argmin(g, axis=1)
        pos = row_start[:b] + j
        best = np.take(g_flat, pos)
        thresh = s_sq
        thresh += t.tol_c
        thresh *= t.eps
        thresh = best + thresh.astype(np.float32)
        # Near ties: the second-best score within thresh of the best. (A NaN score
        # makes the row's best and thresh NaN, and the row no near tie.)
        g_flat[pos] = np.inf
        pos = row_start[:b] + np.argmin(g, axis=1)
        ambiguous = np.flatnonzero(np.take(g_flat, pos) <= thresh)
        if ambiguous.size:
            j[ambiguous] = _exact_argmin(s0[ambiguous], t.c0)
        idx[lo:hi] = j
        diff = diff_buf[:b]
        np.take(t.c0, j, axis=0, out=diff, mode="clip")  # "raise" would buffer
        np.subtract(s0, diff, out=diff)
        d2[lo:hi] = np.einsum("ij,ij->i", diff, diff)
    return idx, d2


def _exact_argmin(segments: np.ndarray, centroids: np.ndarray, block: int = 16) -> np.ndarray:
    """Nearest centroid by direct squared differences, for the rare rows whose best and
    second-best scores float32 cannot tell apart. The expanded form |c|² - 2s·c loses
    digits to cancellation even in float64 (two stored segments 2e-6 apart at values
    of 136 compare equal), so ties are settled on the differences themselves."""
    out = np.empty(len(segments), dtype=np.intp)
    for lo in range(0, len(segments), block):
        diff = segments[lo : lo + block, None, :] - centroids[None, :, :]
        out[lo : lo + block] = np.argmin(np.einsum("ijk,ijk->ij", diff, diff), axis=1)
    return out


class ShapeLibrary(BaseEstimator):
    """A k-means library of normal waveform shapes (scikit-learn / PyOD conventions).

    Parameters
    ----------
    segment_len: samples per segment (even).
    train_slide: training segments start every ``train_slide`` samples.
    n_clusters: shapes in the library; lowered (with a warning) to the number of
        distinct training segments when that is smaller.
    n_init, random_state, max_iter: passed to k-means.
    algorithm: ``"kmeans"``, ``"minibatch"`` or ``"auto"`` (MiniBatchKMeans when
        more than ``batch_threshold`` segments are clustered).
    max_train_segments, max_train_values: k-means clusters at most this many
        training segments, and at most ``max_train_values`` values in all (segments x
        segment_len, so long segments are sampled more sparsely), but never fewer
        than 10 segments per cluster: a random subset (drawn with ``random_state``)
        when there are more; None: no such limit. The centroids of many near-copies
        of the same shapes barely move with more of them (a week at 10 s holds
        ~26,000 segments at slide 2), and the fit costs time in proportion to the
        values clustered. The threshold is still set from all the data.
    holdout_fraction: tail of the training data kept back from k-means; the
        threshold is set from scores on it. 0 sets it from the training data itself
        (optimistic).
    threshold_quantile, threshold_scale: ``threshold_`` is ``threshold_scale`` times
        this quantile of held-out scores (the scale leaves a margin, because a clean
        stretch longer than the held-out one will exceed its top quantile somewhere).
    score_window: ``decision_function`` is the moving average of the absolute
        reconstruction error over this many points (None: ``segment_len // 2``).
    min_gap: anomalous stretches closer than this merge into one event (None:
        ``segment_len // 2``).

    Fitted attributes: ``centroids_`` (n_clusters_, segment_len) float64,
    ``n_clusters_``, ``inertia_``, ``threshold_``, ``n_train_segments_``,
    ``n_train_points_``, ``n_holdout_points_``.
    """

    def __init__(
        self,
        segment_len: int = 32,
        train_slide: int = 2,
        n_clusters: int = 150,
        n_init: int = 1,
        random_state: int | None = None,
        algorithm: str = "auto",
        batch_threshold: int = 50_000,
        max_iter: int = 300,
        max_train_segments: int | None = 5_000,
        max_train_values: int | None = 500_000,
        holdout_fraction: float = 0.2,
        threshold_quantile: float = 0.999,
        threshold_scale: float = 1.5,
        score_window: int | None = None,
        min_gap: int | None = None,
    ) -> None:
        self.segment_len = segment_len
        self.train_slide = train_slide
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.random_state = random_state
        self.algorithm = algorithm
        self.batch_threshold = batch_threshold
        self.max_iter = max_iter
        self.max_train_segments = max_train_segments
        self.max_train_values = max_train_values
        self.holdout_fraction = holdout_fraction
        self.threshold_quantile = threshold_quantile
        self.threshold_scale = threshold_scale
        self.score_window = score_window
        self.min_gap = min_gap

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        n = self.segment_len
        if int(n) != n or n < 2 or n % 2:
            raise ValueError(
                f"segment_len must be an even integer >= 2 (got {n!r}): reconstruction "
                "hops by segment_len/2"
            )
        if int(self.train_slide) != self.train_slide or self.train_slide < 1:
            raise ValueError(f"train_slide must be a positive integer (got {self.train_slide!r})")
        if int(self.n_clusters) != self.n_clusters or self.n_clusters < 1:
            raise ValueError(f"n_clusters must be a positive integer (got {self.n_clusters!r})")
        if self.algorithm not in ("auto", "kmeans", "minibatch"):
            raise ValueError(
                f"algorithm must be 'auto', 'kmeans' or 'minibatch' (got {self.algorithm!r})"
            )
        for name in ("max_train_segments", "max_train_values"):
            cap = getattr(self, name)
            if cap is not None and (int(cap) != cap or cap < 1):
                raise ValueError(f"{name} must be a positive integer or None (got {cap!r})")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1) (got {self.holdout_fraction!r})")
        if not 0 < self.threshold_quantile <= 1:
            raise ValueError(
                f"threshold_quantile must be in (0, 1] (got {self.threshold_quantile!r})"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "centroids_"):
            raise NotFittedError(
                "this ShapeLibrary is not fitted yet: call fit(values) first, or load a "
                "saved one with ShapeLibrary.load(path)"
            )

    @property
    def _score_window(self) -> int:
        return self.segment_len // 2 if self.score_window is None else int(self.score_window)

    @property
    def _min_gap(self) -> int:
        return self.segment_len // 2 if self.min_gap is None else int(self.min_gap)

    # --------------------------------------------------------------------- fit
    def _segment_cap(self) -> int:
        """How many training segments k-means clusters at most."""
        caps = [np.iinfo(np.int64).max]
        if self.max_train_segments is not None:
            caps.append(int(self.max_train_segments))
        if self.max_train_values is not None:
            caps.append(int(self.max_train_values) // int(self.segment_len))
        return max(min(caps), 10 * int(self.n_clusters))

    def _split_holdout(self, pieces: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Split the pieces at ``(1 - holdout_fraction)`` of their total length."""
        if self.holdout_fraction == 0:
            return pieces, []
        total = sum(len(p) for p in pieces)
        cut = int(round(total * (1 - self.holdout_fraction)))
        head: list[np.ndarray] = []
        tail: list[np.ndarray] = []
        pos = 0
        for p in pieces:
            if pos + len(p) <= cut:
                head.append(p)
            elif pos >= cut:
                tail.append(p)
            else:
                head.append(p[: cut - pos])
                tail.append(p[cut - pos :])
            pos += len(p)
        n = self.segment_len
        head = [p for p in head if len(p) >= n]
        tail = [p for p in tail if len(p) >= n]
        if not head or not tail:
            need = int(np.ceil(n / min(self.holdout_fraction, 1 - self.holdout_fraction)))
            raise BadSeriesError(
                f"{total} points are too few to keep {self.holdout_fraction:.0%} back for the "
                f"threshold with segments of {n}: give at least about {need} contiguous points, "
                "or set holdout_fraction=0"
            )
        return head, tail

    def fit(self, values: Any, y: None = None) -> ShapeLibrary:
        """Learn the shape library (and the threshold) from ``values``: one clean 1-D
        array, or a list of contiguous clean pieces."""
        from sklearn.cluster import KMeans, MiniBatchKMeans

        self._check_params()
        n = int(self.segment_len)
        if (
            isinstance(values, list | tuple)
            and len(values) > 0
            and all(np.ndim(v) == 1 for v in values)
        ):
            pieces = [as_clean_values(v, 0, "values") for v in values]
            pieces = [p for p in pieces if len(p) >= n]
            if not pieces:
                raise BadSeriesError(
                    f"no piece is as long as one segment ({n} points): give longer pieces "
                    "or use a shorter segment_len"
                )
        else:
            pieces = [as_clean_values(values, n, "values")]
        head, tail = self._split_holdout(pieces)

        segs = np.concatenate([windowed_segments(p, n, int(self.train_slide)) for p in head])
        cap = self._segment_cap()
        if len(segs) > cap:
            from sklearn.utils import check_random_state

            rng = check_random_state(self.random_state)
            segs = segs[np.sort(rng.choice(len(segs), cap, replace=False))]
        k = int(self.n_clusters)
        distinct = _count_distinct_rows(segs)
        if distinct < k:
            warnings.warn(
                f"only {distinct} distinct training segment(s), fewer than n_clusters={k}: "
                f"using {distinct} clusters",
                stacklevel=2,
            )
            k = distinct
        use_minibatch = self.algorithm == "minibatch" or (
            self.algorithm == "auto" and len(segs) > self.batch_threshold
        )
        if use_minibatch:
            km = MiniBatchKMeans(
                n_clusters=k,
                n_init=self.n_init,
                random_state=self.random_state,
                batch_size=4096,
                max_iter=min(int(self.max_iter), 100),
            )
        else:
            km = KMeans(
                n_clusters=k,
                n_init=self.n_init,
                random_state=self.random_state,
                max_iter=int(self.max_iter),
            )
        with _one_fit_thread():
            km.fit(segs)
        # Rounded to float32 precision (kept as float64): the model bundle then stores
        # them as float32, half the size, and still loads back exactly. k-means noise
        # is far above float32 rounding.
        self.centroids_ = np.ascontiguousarray(
            km.cluster_centers_.astype(np.float32), dtype=np.float64
        )
        self.n_clusters_ = int(k)
        self.inertia_ = float(km.inertia_)
        self.n_train_segments_ = int(len(segs))
        self.n_train_points_ = int(sum(len(p) for p in head))
        self.n_holdout_points_ = int(sum(len(p) for p in tail))
        self.algorithm_ = "minibatch" if use_minibatch else "kmeans"
        calib = tail if tail else head
        scores = np.concatenate([self.decision_function(p) for p in calib])
        self.threshold_ = quantile_threshold(scores, self.threshold_quantile, self.threshold_scale)
        return self

    @classmethod
    def from_centroids(
        cls, centroids: np.ndarray, threshold: float = np.inf, **params: Any
    ) -> ShapeLibrary:
        """A library from given shapes (windowed segments), e.g. for tests or transfer."""
        lib = cls(**params)
        lib._check_params()
        c = np.array(centroids, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != lib.segment_len or len(c) == 0:
            raise ValueError(f"centroids must have shape (k, {lib.segment_len}) (got {c.shape})")
        lib.centroids_ = c
        lib.n_clusters_ = len(c)
        lib.inertia_ = float("nan")
        lib.n_train_segments_ = lib.n_train_points_ = lib.n_holdout_points_ = 0
        lib.algorithm_ = "given"
        lib.threshold_ = float(threshold)
        return lib

    # ----------------------------------------------------------------- scoring
    def _tables(self) -> _SearchTables:
        """Arrays derived from ``centroids_`` for the search, built once and reused
        while the centroids are unchanged (checked by value on every call)."""
        self._check_fitted()
        c = self.centroids_
        cached = getattr(self, "_search_tables", None)
        if cached is not None and cached.matches(c):
            return cached
        tables = _SearchTables.build(np.asarray(c, dtype=np.float64), int(self.segment_len))
        self._search_tables = tables
        return tables

    def nearest(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of each (windowed) segment: ``(index, euclidean distance)``.

        One batched search: ``|a-b|² = |a|² - 2 a·b + |b|²`` as a matrix product, in
        chunks that keep the score matrix in cache; the result equals a float64
        search (see :func:`_search`), distances are exact float64.
        """
        self._check_fitted()
        segs = np.asarray(segments, dtype=np.float64)
        if segs.ndim != 2 or segs.shape[1] != self.segment_len:
            raise ValueError(f"segments must have shape (m, {self.segment_len}) (got {segs.shape})")
        idx, d2 = _search(self._tables(), segs, None)
        return idx, np.sqrt(d2, out=d2)

    def _rebuild(self, values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clean values, reconstruction, per-segment distance).

        Equivalent to padding the series by ``h = segment_len // 2`` at each end
        (:func:`cricket.segments.pad_for_reconstruction`), windowing its segments at hop
        ``h``, replacing each by its nearest centroid and overlap-adding them. Done
        without the padded copy: the segments that lie inside the series are windowed
        straight from it, chunk by chunk, inside the search; only the (at most three)
        segments that reach into the padding are built apart.
        """
        tables = self._tables()
        x = as_clean_values(values, self.segment_len, "values")
        n = self.segment_len
        h = n // 2
        length = len(x)
        r = (-length) % h
        m = (length + r) // h + 1  # segments of the padded series (its length is (m+1)*h)
        inner = (length - n) // h + 1  # segments 1..inner lie inside the series
        idx = np.empty(m, dtype=np.intp)
        d2 = np.empty(m, dtype=np.float64)
        rows = sliding_window_view(x, n)[::h][:inner]
        idx[1 : inner + 1], d2[1 : inner + 1] = _search(tables, rows, tables.window)
        # The segments that reach into the padding are matched on their real points
        # only: the padded values are made up and must not pick the shape (they are
        # masked out, so zeros here give what the mirrored padding gives).
        edge = np.r_[0, inner + 1 : m]
        tail = np.concatenate([x[inner * h :], np.zeros(h + r)])
        head = np.concatenate([np.zeros(h), x[:h]])
        segs = np.stack([head] + [tail[(k - inner - 1) * h :][:n] for k in edge[1:]])
        real = np.stack(
            [np.r_[np.zeros(h, bool), np.ones(h, bool)]]
            + [(np.arange(n) + (k - 1) * h) < length for k in edge[1:]]
        )
        segs = segs * tables.window
        mask = real[:, None, :]  # (e, 1, n)
        diff = (segs[:, None, :] - self.centroids_[None, :, :]) * mask
        e2 = np.einsum("ekn,ekn->ek", diff, diff)
        j = np.argmin(e2, axis=1)
        idx[edge] = j
        d2[edge] = e2[np.arange(edge.size), j]
        rec = tables.overlap_add(idx, length)
        return x, rec, np.sqrt(d2, out=d2)

    def analyze(self, values: Any) -> Analysis:
        """Everything scoring needs from one reconstruction pass: reconstruction,
        per-point absolute error, per-point score and per-segment errors."""
        x, rec, dist = self._rebuild(values)
        residual = np.subtract(x, rec)
        np.abs(residual, out=residual)
        score = _moving_average(residual, self._score_window)
        return Analysis(rec, residual, score, dist)

    def reconstruct(self, values: Any) -> np.ndarray:
        """The series rebuilt from library shapes (same length; ``values`` unchanged)."""
        return self._rebuild(values)[1]

    def residuals(self, values: Any) -> np.ndarray:
        """Per-point absolute reconstruction error."""
        x, rec, _ = self._rebuild(values)
        return np.abs(x - rec)

    def segment_errors(self, values: Any) -> np.ndarray:
        """Distance of each windowed reconstruction segment to its nearest shape.

        Segment k covers ``values[k*h - h : k*h + h]`` with ``h = segment_len // 2``
        (the series is padded by ``h`` at each end, so the first and last reach past it;
        those edge segments are matched, and measured, on their real points only).
        """
        return self._rebuild(values)[2]

    def decision_function(self, values: Any) -> np.ndarray:
        """Per-point anomaly score (higher is more anomalous): the moving average of the
        absolute reconstruction error over ``score_window`` points."""
        return self.analyze(values).score

    def predict(self, values: Any) -> np.ndarray:
        """1 where the score is above ``threshold_``, else 0."""
        scores = self.decision_function(values)
        return (scores > self.threshold_).astype(np.int8)

    def events(self, values: Any, min_gap: int | None = None) -> pd.DataFrame:
        """Anomalous intervals: DataFrame with start_idx, end_idx (inclusive), peak, mean."""
        scores = self.decision_function(values)
        gap = self._min_gap if min_gap is None else int(min_gap)
        return events_from_mask(scores > self.threshold_, scores, gap)

    # ------------------------------------------------------------ persistence
    _FITTED_SCALARS = (
        "n_clusters_",
        "inertia_",
        "threshold_",
        "n_train_segments_",
        "n_train_points_",
        "n_holdout_points_",
        "algorithm_",
    )

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-safe parameters and fitted scalars, and the arrays (``centroids``)."""
        self._check_fitted()
        fitted = {}
        for name in self._FITTED_SCALARS:
            v = getattr(self, name)
            fitted[name] = v.item() if isinstance(v, np.generic) else v
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "ShapeLibrary",
            "params": self.get_params(),
            "fitted": fitted,
        }
        c = self.centroids_
        c32 = c.astype(np.float32)
        # float32 when that is lossless (fitted libraries), else float64 (hand-built ones).
        return meta, {"centroids": c32 if np.array_equal(c32, c, equal_nan=True) else c.copy()}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ShapeLibrary:
        """Inverse of :meth:`get_state` (exact round trip)."""
        check_format_version(meta, "ShapeLibrary")
        lib = cls(**meta["params"])
        if "centroids" not in arrays:
            raise ValueError("the saved state has no 'centroids' array: the file is incomplete")
        c = np.array(arrays["centroids"], dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != lib.segment_len:
            raise ValueError(
                f"saved centroids have shape {c.shape}, expected (k, {lib.segment_len})"
            )
        lib.centroids_ = c
        for name in cls._FITTED_SCALARS:
            setattr(lib, name, meta["fitted"][name])
        return lib

    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` file (arrays + JSON parameters). Returns the path written."""
        meta, arrays = self.get_state()
        return save_state(path, meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> ShapeLibrary:
        """Read a file written by :meth:`save` (never unpickles)."""
        meta, arrays = load_state(path)
        return cls.from_state(meta, arrays)


def save_state(path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write ``meta`` (as JSON text) and ``arrays`` into one ``.npz`` file."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if "__meta__" in arrays:
        raise ValueError("'__meta__' is reserved for the parameters")
    text = json.dumps(meta, allow_nan=True)
    np.savez(path, __meta__=np.array(text), **arrays)
    return path


def load_state(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`save_state` with ``allow_pickle=False``."""
    path = Path(path)
    if not path.exists() and path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "__meta__" not in f.files:
                raise FormatVersionError(
                    f"{path} holds no Cricket parameters: it was not written by Cricket's save()"
                )
            meta = json.loads(str(f["__meta__"]))
            arrays = {k: f[k] for k in f.files if k != "__meta__"}
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no model file at {path}: check the path") from exc
    return meta, arrays
