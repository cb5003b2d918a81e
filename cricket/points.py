"""PointDetector: a feature vector is anomalous when it is far from every centroid.

The point example of the method (power supplies measured for efficiency and ripple):
k-means on the rows of ``X``; the anomaly score of a row is its distance to the
nearest centroid; ``threshold_`` is a percentile of the training distances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cricket.base import BaseDetector, as_matrix
from cricket.errors import CricketValueError
from cricket.series import BadSeriesError


class PointDetector(BaseDetector):
    """Distance-to-nearest-centroid anomaly detector for feature vectors.

    ``decision_function`` is the Euclidean distance of each row to its nearest
    centroid; ``predict`` is 1 where it is above ``threshold_`` (the ``percentile``
    of the training distances), else 0.
    """

    kind = "PointDetector"
    format_version = 1
    _fitted_attr = "cluster_centers_"
    _fit_args = "X"

    def __init__(
        self, n_clusters: int = 3, percentile: float = 95, random_state: int | None = None
    ) -> None:
        self.n_clusters = n_clusters
        self.percentile = percentile
        self.random_state = random_state

    def fit(self, X: Any, y: None = None) -> PointDetector:
        from sklearn.cluster import KMeans

        if not 0 <= self.percentile <= 100:
            raise CricketValueError(f"percentile must be in [0, 100] (got {self.percentile!r})")
        arr = as_matrix(X)
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

    def decision_function(self, X: Any) -> np.ndarray:
        """Distance of each row to its nearest centroid (higher is more anomalous)."""
        self._check_fitted()
        arr = as_matrix(X, self.n_features_in_)
        c = self.cluster_centers_
        d2 = (
            np.einsum("ij,ij->i", arr, arr)[:, None]
            - 2.0 * arr @ c.T
            + np.einsum("ij,ij->i", c, c)[None, :]
        )
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "params": self.get_params(),
            "fitted": {"threshold_": self.threshold_, "n_features_in_": self.n_features_in_},
        }
        return meta, {"cluster_centers": self.cluster_centers_.copy()}

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> PointDetector:
        det = cls(**meta["params"])
        det.cluster_centers_ = np.array(arrays["cluster_centers"], dtype=np.float64)
        det.threshold_ = float(meta["fitted"]["threshold_"])
        det.n_features_in_ = int(meta["fitted"]["n_features_in_"])
        return det
