"""The nearest-shape search: the kernel under ``ShapeLibrary`` and its BLAS control.

Scoring replaces every windowed segment by its nearest centroid. This module does that
search for many rows at once, as one chunked matrix product per block of rows
(``|a-b|^2 = |a|^2 - 2 a.b + |b|^2``) in float32, re-checking near ties in float64 so
the answer equals a float64 search; and it overlap-adds the chosen centroids back
into a series. It also holds the thread control around BLAS and OpenMP that the
search and the k-means fit run under. Nothing here knows about fitting or thresholds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from cricket.segments import window

# Score-matrix elements per chunk of the nearest-centroid search: 2**18 float32 scores
# (1 MiB) stay in a core's L2 cache through the GEMM, argmin and near-tie check.
CHUNK_ELEMENTS = 1 << 18
# Largest table of centroid half-pairs that overlap-add builds for a call (elements).
PAIR_TABLE_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class SearchTables:
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
    def build(cls, c: np.ndarray, n: int) -> SearchTables:
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
        if k * k <= q and k * k * h <= PAIR_TABLE_ELEMENTS:
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
_omp_controller: Any = None


def _controllers(refresh: bool = False) -> tuple[Any, Any]:
    """threadpoolctl controllers of the BLAS libraries and of the OpenMP runtimes,
    apart: a limiter restores *every* library its controller holds to what it found
    on entry, so a limiter holding both, leaving on one thread, put BLAS back to its
    own stale reading while another thread's limit was meant to hold (below).
    ``refresh``: look again for libraries loaded since (scikit-learn's OpenMP and
    SciPy's BLAS load with scikit-learn, after the first search may have run)."""
    global _blas_controller, _omp_controller
    if _blas_controller is None or refresh:
        from threadpoolctl import ThreadpoolController

        every = ThreadpoolController()
        _omp_controller = every.select(user_api="openmp")
        _blas_controller = every.select(user_api="blas")
    return _blas_controller, _omp_controller


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS on one thread, as scikit-learn's KMeans does for its
    chunked distance products: each chunk's product is small, and waking BLAS
    threads for it costs more than it saves (much more on a loaded machine, where a
    product waits for its slowest thread to be scheduled). The limit covers only the
    block; concurrent callers share it and the last one out restores the original.

    Across threads this is not enough: OpenBLAS' thread count is one setting for the
    process, and threadpoolctl (>= 3.8) lets only one thread at a time change it (the
    first to set a limit; the others' settings are silently ignored until it is done),
    while scikit-learn's own limit around Lloyd's iterations restores what it read on
    entry. Workers that train or score at once therefore left BLAS at 2 threads most
    of the time, and two threads running 2-thread OpenBLAS products spin-wait on each
    other. A flow that runs such batches on worker threads holds
    :func:`blas_held_at_one` around them, from its own thread."""
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            blas, _ = _controllers()
            _blas_limiter = blas.limit(limits=1)
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
def blas_held_at_one() -> Iterator[None]:
    """BLAS on one thread for the whole block, set and restored by the calling thread
    (a flow's own thread, around the batches its worker threads run): that thread then
    holds threadpoolctl's control of OpenBLAS, so the workers' limits inside (and
    scikit-learn's) change nothing and BLAS stays at one thread for all of them.

    Measured (2 threads training 2 d series at once, 2 cores): ~5 CPU s per series with
    the per-call limits alone (perf: ~80 % of it in OpenBLAS' ``blas_thread_server`` /
    ``exec_blas_async_wait``), 0.7 with the limit held; one thread alone: 0.8-0.9."""
    try:
        import sklearn.cluster  # noqa: F401 - its OpenMP and SciPy's BLAS join the controllers
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        pass
    with _blas_lock:
        if _blas_users == 0:
            _controllers(refresh=True)
        blas, _ = _controllers()
    with blas.limit(limits=1):
        yield


@contextmanager
def one_fit_thread() -> Iterator[None]:
    """Run a k-means fit on one core: OpenMP limited to one thread for the calling
    thread only (the limit is a per-thread OpenMP setting) and BLAS to one thread as
    in :func:`one_blas_thread`. Fleets fit one series per worker, so a fit's own
    threads only compete with the other workers: on 2 busy cores a 2-thread fit ran
    3-10x slower than a 1-thread one, as each OpenMP barrier waits for a descheduled
    thread."""
    with _blas_lock:  # scikit-learn is loaded by now: its libraries join the limits
        if _blas_users == 0 and (_omp_controller is None or not _omp_controller.lib_controllers):
            _controllers(refresh=True)
    with one_blas_thread():
        _, omp = _controllers()
        limiter = omp.limit(limits=1)  # restores OpenMP only, never BLAS
        try:
            yield
        finally:
            limiter.restore_original_limits()


def nearest_rows(
    t: SearchTables, rows: np.ndarray, w: np.ndarray | None
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
    if m * len(t.c_sq) < CHUNK_ELEMENTS:
        return _search_chunks(t, rows, w)
    with one_blas_thread():
        return _search_chunks(t, rows, w)


def _search_chunks(
    t: SearchTables, rows: np.ndarray, w: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    m, n = rows.shape
    k = len(t.c_sq)
    idx = np.empty(m, dtype=np.intp)
    d2 = np.empty(m, dtype=np.float64)
    if m == 0:
        return idx, d2
    step = min(m, max(64, CHUNK_ELEMENTS // max(k, 1)))
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
            j[ambiguous] = settle_near_ties(s0[ambiguous], t.c0, g[ambiguous],
                                            thresh[ambiguous], j[ambiguous])
        idx[lo:hi] = j
        diff = diff_buf[:b]
        np.take(t.c0, j, axis=0, out=diff, mode="clip")  # "raise" would buffer
        np.subtract(s0, diff, out=diff)
        d2[lo:hi] = np.einsum("ij,ij->i", diff, diff)
    return idx, d2


def settle_near_ties(
    segments: np.ndarray, centroids: np.ndarray, scores: np.ndarray, thresh: np.ndarray,
    best: np.ndarray,
) -> np.ndarray:
    """:func:`exact_argmin` of each of the rows of ``segments`` whose best float32 score
    (``best``, set to inf in ``scores``) has near ties: the same answer, from the
    centroids within ``thresh`` of the best score only (usually 2-5 of the 250).

    The float32 search's error bound (``eps`` of :class:`SearchTables`, several times the
    worst rounding) is what lets ``_search_chunks`` trust a row without a near tie; by
    the same bound, a centroid scoring above ``thresh`` is farther than the best one,
    so every exact minimum is among the candidates. Each candidate's distance is the
    same sum of squared differences ``exact_argmin`` computes (numpy's contiguous
    reduction of one row of differences, whatever the array around it), and the
    first of equal minima in centroid order wins, as ``argmin`` picks it."""
    near = scores <= thresh[:, None]
    near[np.arange(len(best)), best] = True
    rows, cands = np.nonzero(near)  # row by row, centroids in increasing order
    diff = segments[rows] - centroids[cands]
    d = np.einsum("ij,ij->i", diff, diff)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    lowest = np.minimum.reduceat(d, starts)
    at = np.flatnonzero(d == lowest[rows])  # the minima, in row then centroid order
    first = at[np.r_[True, rows[at][1:] != rows[at][:-1]]]
    return cands[first]


def exact_argmin(segments: np.ndarray, centroids: np.ndarray, block: int = 16) -> np.ndarray:
    """Nearest centroid by direct squared differences, for the rare rows whose best and
    second-best scores float32 cannot tell apart. The expanded form |c|² - 2s·c loses
    digits to cancellation even in float64 (two stored segments 2e-6 apart at values
    of 136 compare equal), so ties are settled on the differences themselves."""
    out = np.empty(len(segments), dtype=np.intp)
    for lo in range(0, len(segments), block):
        diff = segments[lo : lo + block, None, :] - centroids[None, :, :]
        out[lo : lo + block] = np.argmin(np.einsum("ijk,ijk->ij", diff, diff), axis=1)
    return out

