"""k-means++ seeding for the shape libraries: scikit-learn's algorithm, operation for
operation, with less overhead around it.

``ShapeLibrary.fit`` passes :func:`kmeans_plusplus` to scikit-learn's ``KMeans`` as its
``init``: the seeds (and so the centroids, every threshold and every score) are exactly
those of ``init="k-means++"`` (``tests/test_seeding.py`` compares them bit for bit), and
training a series takes ~0.8x the CPU it took. Seeding was ~45 % of it: 250 rounds,
each scoring 7 candidate seeds against every training segment. The savings: the
segments' transpose is laid out once for the candidates' distance products when segments
are short (a product against a contiguous transpose runs ~2x faster than against a
strided view and yields the same numbers), and scikit-learn's per-call array-namespace
dispatch is skipped.
"""

from __future__ import annotations

import numpy as np

#: segments at most this long get a contiguous transpose (longer ones: no gain)
CONTIGUOUS_UP_TO = 64


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

    def squared_distances(rows: np.ndarray) -> np.ndarray:
        # sklearn's _euclidean_distances(rows, X, Y_norm_squared=..., squared=True)
        xx = np.einsum("ij,ij->i", rows, rows)[:, None]
        out = rows @ xt
        np.multiply(out, -2, out=out)
        out += xx
        out += yy
        np.maximum(out, 0.0, out=out)
        return out

    closest_dist_sq = squared_distances(centers[0, np.newaxis])
    current_pot = closest_dist_sq @ sample_weight
    weight_column = sample_weight.reshape(-1, 1)
    for c in range(1, n_clusters):
        rand_vals = random_state.uniform(size=n_local_trials) * current_pot
        candidate_ids = np.searchsorted(np.cumsum(sample_weight * closest_dist_sq), rand_vals)
        np.clip(candidate_ids, None, closest_dist_sq.size - 1, out=candidate_ids)
        distance_to_candidates = squared_distances(X[candidate_ids])
        np.minimum(closest_dist_sq, distance_to_candidates, out=distance_to_candidates)
        candidates_pot = distance_to_candidates @ weight_column
        best = np.argmin(candidates_pot)
        current_pot = candidates_pot[best]
        closest_dist_sq = distance_to_candidates[best]
        centers[c] = X[candidate_ids[best]]
    return centers
