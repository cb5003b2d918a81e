"""k-means++ seeding (cricket.seeding) against scikit-learn's own, bit for bit: the shape
libraries, their thresholds and every score depend on these seeds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.cluster._kmeans import _kmeans_plusplus
from sklearn.utils import check_random_state

from cricket.seeding import kmeans_plusplus
from cricket.segments import windowed_segments
from cricket.shapes import ShapeLibrary


def sklearn_seeds(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    norms = np.einsum("ij,ij->i", X, X)
    centers, _ = _kmeans_plusplus(X, k, norms, np.ones(len(X)), check_random_state(seed))
    return centers


def waveform_segments(n_points: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_points)
    x = np.sin(2 * np.pi * t / 97) + 0.3 * np.sin(2 * np.pi * t / 13) + 0.1 * rng.normal(size=n_points)
    segs = windowed_segments(x, m, 2)
    return segs - segs.mean(axis=0)  # KMeans seeds the centred data


@pytest.mark.parametrize(("n", "m", "k", "seed"), [
    (10_000, 32, 250, 0),  # a base-scale library (5,000 segments of 32)
    (5_200, 178, 250, 0),  # a period-scale library (long segments, strided transpose)
    (3_000, 64, 40, 3),
    (600, 8, 7, 1),
])
def test_seeds_equal_sklearn_kmeans_plusplus(n: int, m: int, k: int, seed: int) -> None:
    X = np.ascontiguousarray(waveform_segments(n, m, seed))
    ours = kmeans_plusplus(X, k, check_random_state(seed))
    assert np.array_equal(ours, sklearn_seeds(X, k, seed))


def test_seeds_with_duplicate_rows_equal_sklearn() -> None:
    rng = np.random.default_rng(5)
    X = np.repeat(rng.normal(size=(40, 16)), 25, axis=0)  # 40 distinct rows, 1,000 in all
    X = np.ascontiguousarray(X - X.mean(axis=0))
    assert np.array_equal(kmeans_plusplus(X, 30, check_random_state(0)), sklearn_seeds(X, 30, 0))


def test_kmeans_with_our_seeding_equals_kmeans_plusplus() -> None:
    segs = waveform_segments(8_000, 32, 2)
    a = KMeans(n_clusters=120, init="k-means++", n_init=1, random_state=0).fit(segs)
    b = KMeans(n_clusters=120, init=kmeans_plusplus, n_init=1, random_state=0).fit(segs)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_


def test_shape_library_centroids_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """ShapeLibrary.fit learns the same centroids and threshold as with scikit-learn's
    own k-means++ seeding in its place."""
    rng = np.random.default_rng(7)
    t = np.arange(12_000)
    x = np.sin(2 * np.pi * t / 50) + 0.05 * rng.normal(size=len(t))
    ours = ShapeLibrary(n_clusters=60).fit(x)

    def reference(X: np.ndarray, k: int, random_state: np.random.RandomState) -> np.ndarray:
        norms = np.einsum("ij,ij->i", X, X)
        return _kmeans_plusplus(X, k, norms, np.ones(len(X)), random_state)[0]

    monkeypatch.setattr("cricket.seeding.kmeans_plusplus", reference)
    theirs = ShapeLibrary(n_clusters=60).fit(x)
    assert np.array_equal(ours.centroids_, theirs.centroids_)
    assert ours.threshold_ == theirs.threshold_


def test_refuses_float32() -> None:
    with pytest.raises(TypeError, match="float64"):
        kmeans_plusplus(np.zeros((10, 4), dtype=np.float32), 2, check_random_state(0))


@pytest.mark.parametrize("scale", [1e-120, 1e120])
def test_values_a_product_could_underflow_or_overflow_take_the_plain_order(scale: float) -> None:
    from cricket.seeding import exact_scaling

    X = np.ascontiguousarray(waveform_segments(2_000, 32, 4))
    assert exact_scaling(X)
    X[5, 3] = scale  # one value out of the safe range: -2 is applied after the product
    assert not exact_scaling(X)
    assert np.array_equal(kmeans_plusplus(X, 20, check_random_state(1)), sklearn_seeds(X, 20, 1))
