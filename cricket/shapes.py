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

The nearest-shape search itself (chunked float32 products, BLAS thread control) is
in :mod:`cricket.search`; saving and loading (one ``.npz``, never pickles) follow the
detector contract of :mod:`cricket.base`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from cricket.base import BaseDetector, as_clean_values
from cricket.config import spec_default
from cricket.errors import CricketValueError
from cricket.persistence import ModelFormatError
from cricket.scoring import events_from_mask, quantile_threshold
from cricket.search import SearchTables, nearest_rows, one_fit_thread
from cricket.segments import windowed_segments
from cricket.series import BadSeriesError

__all__ = ["Analysis", "ShapeLibrary"]


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


def _shows_distinct_rows(rows: np.ndarray, k: int) -> bool:
    """Whether the middle column alone holds ``k`` distinct values: rows differing in one
    column are distinct, so there are at least ``k`` distinct rows, and counting them
    (hashing every row) would not lower ``n_clusters``."""
    return len(rows) >= k and np.unique(rows[:, rows.shape[1] // 2]).size >= k


@dataclass(frozen=True)
class Analysis:
    """One reconstruction pass over a series (arrays of the series' length, except
    ``segment_errors``: one per reconstruction segment)."""

    reconstruction: np.ndarray
    residual: np.ndarray
    score: np.ndarray
    segment_errors: np.ndarray



class ShapeLibrary(BaseDetector):
    """A k-means library of normal waveform shapes (scikit-learn / PyOD conventions).

    Parameters (the ones a ``DetectorSpec`` also has default to its values,
    :func:`cricket.config.spec_default`)
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
    threshold_quantile, threshold_scale: the stand-alone library's own threshold:
        ``threshold_`` is ``threshold_scale`` times this quantile of held-out
        ``decision_function`` scores (the scale leaves a margin, because a clean
        stretch longer than the held-out one will exceed its top quantile somewhere).
        Not the ``DetectorSpec`` quantile of the same name: ``WaveformDetector``
        calibrates its score on held-out data instead and never uses this threshold.
    score_window: ``decision_function`` is the moving average of the absolute
        reconstruction error over this many points (None: ``segment_len // 2``).
    min_gap: anomalous stretches closer than this merge into one event (None:
        ``segment_len // 2``).

    Fitted attributes: ``centroids_`` (n_clusters_, segment_len) float64,
    ``n_clusters_``, ``inertia_``, ``threshold_``, ``n_train_segments_``,
    ``n_train_points_``, ``n_holdout_points_``.
    """

    kind = "ShapeLibrary"
    format_version = 1
    _fitted_attr = "centroids_"

    def __init__(
        self,
        segment_len: int = spec_default("segment_len"),  # type: ignore[assignment]
        train_slide: int = spec_default("train_slide"),  # type: ignore[assignment]
        n_clusters: int = spec_default("n_clusters"),  # type: ignore[assignment]
        n_init: int = spec_default("n_init"),  # type: ignore[assignment]
        random_state: int | None = spec_default("random_state"),  # type: ignore[assignment]
        algorithm: str = spec_default("algorithm"),  # type: ignore[assignment]
        batch_threshold: int = 50_000,
        max_iter: int = 300,
        max_train_segments: int | None = 5_000,
        max_train_values: int | None = 500_000,
        holdout_fraction: float = spec_default("holdout_fraction"),  # type: ignore[assignment]
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
            raise CricketValueError(
                f"segment_len must be an even integer >= 2 (got {n!r}): reconstruction "
                "hops by segment_len/2"
            )
        if int(self.train_slide) != self.train_slide or self.train_slide < 1:
            raise CricketValueError(f"train_slide must be a positive integer (got {self.train_slide!r})")
        if int(self.n_clusters) != self.n_clusters or self.n_clusters < 1:
            raise CricketValueError(f"n_clusters must be a positive integer (got {self.n_clusters!r})")
        if self.algorithm not in ("auto", "kmeans", "minibatch"):
            raise CricketValueError(
                f"algorithm must be 'auto', 'kmeans' or 'minibatch' (got {self.algorithm!r})"
            )
        for name in ("max_train_segments", "max_train_values"):
            cap = getattr(self, name)
            if cap is not None and (int(cap) != cap or cap < 1):
                raise CricketValueError(f"{name} must be a positive integer or None (got {cap!r})")
        if not 0 <= self.holdout_fraction < 1:
            raise CricketValueError(f"holdout_fraction must be in [0, 1) (got {self.holdout_fraction!r})")
        if not 0 < self.threshold_quantile <= 1:
            raise CricketValueError(
                f"threshold_quantile must be in (0, 1] (got {self.threshold_quantile!r})"
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

        from cricket.seeding import kmeans_plusplus

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
        distinct = k if _shows_distinct_rows(segs, k) else _count_distinct_rows(segs)
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
                init=kmeans_plusplus,  # init="k-means++"'s seeds, computed faster
                n_init=self.n_init,
                random_state=self.random_state,
                max_iter=int(self.max_iter),
            )
        with one_fit_thread():
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
            raise CricketValueError(f"centroids must have shape (k, {lib.segment_len}) (got {c.shape})")
        lib.centroids_ = c
        lib.n_clusters_ = len(c)
        lib.inertia_ = float("nan")
        lib.n_train_segments_ = lib.n_train_points_ = lib.n_holdout_points_ = 0
        lib.algorithm_ = "given"
        lib.threshold_ = float(threshold)
        return lib

    # ----------------------------------------------------------------- scoring
    def _tables(self) -> SearchTables:
        """Arrays derived from ``centroids_`` for the search, built once and reused
        while the centroids are unchanged (checked by value on every call)."""
        self._check_fitted()
        c = self.centroids_
        cached = getattr(self, "_search_tables", None)
        if cached is not None and cached.matches(c):
            return cached
        tables = SearchTables.build(np.asarray(c, dtype=np.float64), int(self.segment_len))
        self._search_tables = tables
        return tables

    def nearest(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of each (windowed) segment: ``(index, euclidean distance)``.

        One batched search: ``|a-b|² = |a|² - 2 a·b + |b|²`` as a matrix product, in
        chunks that keep the score matrix in cache; the result equals a float64
        search (see :func:`cricket.search.nearest_rows`), distances are exact float64.
        """
        self._check_fitted()
        segs = np.asarray(segments, dtype=np.float64)
        if segs.ndim != 2 or segs.shape[1] != self.segment_len:
            raise CricketValueError(f"segments must have shape (m, {self.segment_len}) (got {segs.shape})")
        idx, d2 = nearest_rows(self._tables(), segs, None)
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
        idx[1 : inner + 1], d2[1 : inner + 1] = nearest_rows(tables, rows, tables.window)
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

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-safe parameters and fitted scalars, and the arrays (``centroids``)."""
        fitted = {}
        for name in self._FITTED_SCALARS:
            v = getattr(self, name)
            fitted[name] = v.item() if isinstance(v, np.generic) else v
        meta = {"params": self.get_params(), "fitted": fitted}
        c = self.centroids_
        c32 = c.astype(np.float32)
        # float32 when that is lossless (fitted libraries), else float64 (hand-built ones).
        return meta, {"centroids": c32 if np.array_equal(c32, c, equal_nan=True) else c.copy()}

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ShapeLibrary:
        lib = cls(**meta["params"])
        if "centroids" not in arrays:
            raise ModelFormatError(
                "the saved state has no 'centroids' array: the file is incomplete"
            )
        c = np.array(arrays["centroids"], dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != lib.segment_len:
            raise ModelFormatError(
                f"saved centroids have shape {c.shape}, expected (k, {lib.segment_len})"
            )
        lib.centroids_ = c
        for name in cls._FITTED_SCALARS:
            setattr(lib, name, meta["fitted"][name])
        return lib
