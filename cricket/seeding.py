"""k-means++ seeding for the shape libraries: scikit-learn's algorithm, operation for
operation, with less overhead around it.

``ShapeLibrary.fit`` passes :func:`kmeans_plusplus` to scikit-learn's ``KMeans`` as its
``init``: the seeds (and so the centroids, every threshold and every score) are exactly
those of ``init="k-means++"`` (``tests/test_seeding.py`` compares them bit for bit).
Seeding is about half of a series' training: 250 rounds, each scoring 7 candidate seeds
against every training segment. What is saved, each step giving the same numbers:

- the segments' transpose is laid out once for the candidates' distance products when
  segments are short (a product against a contiguous transpose runs ~2x faster than
  against a strided view). These products (7 x 32 x 5,000 and less) take OpenBLAS'
  small-matrix kernels, one per layout, whose sums can differ in the last bit at a few
  of the 35,000 distances: no seed has been seen to move (the tests compare seeds at
  these sizes), but the distances are not bit for bit scikit-learn's. The first seed's
  row is a matrix-vector product (another kernel per layout, half the sums differ in
  the last bit): that one is taken against the strided view, as scikit-learn does;
- the ``-2`` of ``-2 x.y`` is applied to the 7 candidate rows before the product instead
  of to the 7 x n result after it: scaling by a power of two is exact at every rounding
  of the product's sums, so the numbers are the same (checked once per fit: no value so
  small or so large that a product could underflow or overflow, else the plain order);
- a candidate's squared norm is read from the norms of all segments (numpy's row
  reduction gives a row the same sum wherever the row sits), not summed again;
- the weights (all 1) are not multiplied in before the cumulative sum, the products and
  their results reuse buffers, and scikit-learn's per-call namespace dispatch is skipped.
"""

from __future__ import annotations

import numpy as np

#: segments at most this long get a contiguous transpose (longer ones: no gain measured)
CONTIGUOUS_UP_TO = 64
#: every nonzero |value| within these bounds: products of two values (and their sums)
#: can neither underflow to subnormals nor overflow, so scaling a factor by -2 is exact
SAFE_SCALING = (1e-100, 1e100)


def exact_scaling(X: np.ndarray) -> bool:
    """Whether scaling rows of ``X`` by -2 before a product gives exactly -2 times the
    product (no product of two values of ``X`` can leave the normal float64 range)."""
    a = np.abs(X)
    big = float(a.max(initial=0.0))
    if not np.isfinite(big) or big > SAFE_SCALING[1]:
        return False
    nonzero = a[a > 0]
    return nonzero.size == 0 or float(nonzero.min()) >= SAFE_SCALING[0]


def kmeans_plusplus(X: np.ndarray, n_clusters: int, random_state: np.random.RandomState) -> np.ndarray:
    """The ``n_clusters`` k-means++ seeds of ``X`` (float64, C-ordered; ``KMeans`` passes
    the centred data), drawn from ``random_state`` exactly as scikit-learn's
    ``_kmeans_plusplus`` draws them with unit sample weights and its default
    ``2 + log(k)`` local trials."""
    if X.dtype != np.float64:
        raise TypeError(f"k-means++ seeding expects float64 data (got {X.dtype})")
    n_samples, n_features = X.shape
    sample_weight = np.ones(n_samples, dtype=X.dtype)
    x_squared_norms = np.einsum("ij,ij->i", X, X)  # sklearn's row_norms(X, squared=True)
    centers = np.empty((n_clusters, n_features), dtype=X.dtype)
    n_local_trials = 2 + int(np.log(n_clusters))

    center_id = random_state.choice(n_samples, p=sample_weight / sample_weight.sum())
    centers[0] = X[center_id]
    xt = np.ascontiguousarray(X.T) if n_features <= CONTIGUOUS_UP_TO else X.T
    yy = x_squared_norms.reshape(1, -1)
    prescale = exact_scaling(X)
    buf = np.empty((n_local_trials, n_samples))

    def squared_distances(ids: np.ndarray, xt: np.ndarray) -> np.ndarray:
        # sklearn's _euclidean_distances(X[ids], X, Y_norm_squared=..., squared=True):
        # max((-2 x.y + |x|^2) + |y|^2, 0)
        out = buf[: len(ids)]
        if prescale:
            np.matmul(X[ids] * -2.0, xt, out=out)
        else:
            np.matmul(X[ids], xt, out=out)
            np.multiply(out, -2, out=out)
        out += x_squared_norms[ids][:, None]
        out += yy
        np.maximum(out, 0.0, out=out)
        return out

    # one row: a matrix-vector product, summed in another order for a contiguous
    # transpose; the strided view, as scikit-learn passes it
    closest_dist_sq = squared_distances(np.array([center_id]), X.T).copy()
    current_pot = closest_dist_sq @ sample_weight
    weight_column = sample_weight.reshape(-1, 1)
    last = n_samples - 1
    for c in range(1, n_clusters):
        rand_vals = random_state.uniform(size=n_local_trials) * current_pot
        # sample_weight * closest_dist_sq is closest_dist_sq itself (weights of 1)
        candidate_ids = np.searchsorted(np.cumsum(closest_dist_sq), rand_vals)
        np.minimum(candidate_ids, last, out=candidate_ids)
        distance_to_candidates = squared_distances(candidate_ids, xt)
        np.minimum(closest_dist_sq, distance_to_candidates, out=distance_to_candidates)
        candidates_pot = distance_to_candidates @ weight_column
        best = np.argmin(candidates_pot)
        current_pot = candidates_pot[best]
        closest_dist_sq = distance_to_candidates[best].copy()
        centers[c] = X[candidate_ids[best]]
    return centers
