"""PointDetector: a feature vector is anomalous when it is far from every centroid.

The point example of the method (power supplies measured for efficiency and ripple):
k-means on the rows of ``X``; the anomaly score of a row is its distance to the
nearest centroid; ``threshold_`` is a percentile of the training distances.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from cricket.series import BadSeriesError
from cricket.shapes import FORMAT_VERSION, check_format_version, load_state, save_state


def _as_matrix(X: Any, n_features: int | None = None) -> np.ndarray:
    arr = np.asarray(X)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise BadSeriesError(
                f"X must be numeric (got dtype {arr.dtype}): convert the features to numbers"
            ) from exc
    if arr.ndim != 2:
        raise BadSeriesError(
            f"X must be 2-D, one row per item and one column per feature (got shape "
            f"{arr.shape}): reshape with X.reshape(-1, 1) for a single feature"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise BadSeriesError("X contains NaN or inf: drop or impute those rows first")
    if n_features is not None and arr.shape[1] != n_features:
        raise BadSeriesError(
            f"X has {arr.shape[1]} feature(s) but the detector was fitted on {n_features}"
        )
    return arr


class PointDetector(BaseEstimator):
    """Distance-to-nearest-centroid anomaly detector for feature vectors.

    ``decision_function`` is the Euclidean distance of each row to its nearest
    centroid; ``predict`` is 1 where it is above ``threshold_`` (the ``percentile``
    of the training distances), else 0.
    """

    def __init__(
        self, n_clusters: int = 3, percentile: float = 95, random_state: int | None = None
    ) -> None:
        self.n_clusters = n_clusters
        self.percentile = percentile
        self.random_state = random_state

    def fit(self, X: Any, y: None = None) -> PointDetector:
        from sklearn.cluster import KMeans

        if not 0 <= self.percentile <= 100:
            raise ValueError(f"percentile must be in [0, 100] (got {self.percentile!r})")
        arr = _as_matrix(X)
        if len(arr) < self.n_clusters:
            raise BadSeriesError(
                f"{len(arr)} row(s) are fewer than n_clusters={self.n_clusters}: give more "
                "rows or lower n_clusters"
            )
        km = KMeans(n_clusters=self.n_clusters, n_init=10, random_state=self.random_state)
        km.fit(arr)
        self.cluster_centers_ = np.ascontiguousarray(km.cluster_centers_, dtype=np.float64)
        self.n_features_in_ = int(arr.shape[1])
        self.threshold_ = float(np.percentile(self.decision_function(arr), self.percentile))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError("this PointDetector is not fitted yet: call fit(X) first")

    def decision_function(self, X: Any) -> np.ndarray:
        """Distance of each row to its nearest centroid (higher is more anomalous)."""
        self._check_fitted()
        arr = _as_matrix(X, self.n_features_in_)
        c = self.cluster_centers_
        d2 = (
            np.einsum("ij,ij->i", arr, arr)[:, None]
            - 2.0 * arr @ c.T
            + np.einsum("ij,ij->i", c, c)[None, :]
        )
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    def predict(self, X: Any) -> np.ndarray:
        """1 for rows farther than ``threshold_`` from every centroid, else 0."""
        return (self.decision_function(X) > self.threshold_).astype(np.int8)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self._check_fitted()
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "PointDetector",
            "params": self.get_params(),
            "fitted": {"threshold_": self.threshold_, "n_features_in_": self.n_features_in_},
        }
        return meta, {"cluster_centers": self.cluster_centers_.copy()}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> PointDetector:
        check_format_version(meta, "PointDetector")
        det = cls(**meta["params"])
        det.cluster_centers_ = np.array(arrays["cluster_centers"], dtype=np.float64)
        det.threshold_ = float(meta["fitted"]["threshold_"])
        det.n_features_in_ = int(meta["fitted"]["n_features_in_"])
        return det

    def save(self, path: Any) -> Any:
        meta, arrays = self.get_state()
        return save_state(path, meta, arrays)

    @classmethod
    def load(cls, path: Any) -> PointDetector:
        return cls.from_state(*load_state(path))
