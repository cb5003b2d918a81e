"""PointDetector on the power-supply example (efficiency and ripple)."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import pairwise_distances_argmin_min

from cricket.persistence import FormatVersionError
from cricket.points import PointDetector
from cricket.series import BadSeriesError


def supplies(seed: int = 0) -> np.ndarray:
    """Two capacitor makers: two clusters of (efficiency %, ripple mV)."""
    rng = np.random.default_rng(seed)
    a = rng.normal([85.0, 20.0], [0.5, 1.0], size=(100, 2))
    b = rng.normal([88.0, 30.0], [0.5, 1.0], size=(100, 2))
    return np.vstack([a, b])


def test_the_odd_supply_is_anomalous_and_normal_ones_are_not():
    det = PointDetector(n_clusters=2, random_state=0).fit(supplies())
    odd = np.array([[86.5, 25.0]])  # within tolerance, but between the two groups
    assert det.predict(odd)[0] == 1
    assert det.predict(np.array([[85.0, 20.0], [88.0, 30.0]])).tolist() == [0, 0]


def test_threshold_is_the_percentile_of_training_distances():
    X = supplies()
    det = PointDetector(n_clusters=2, percentile=95, random_state=0).fit(X)
    d = pairwise_distances_argmin_min(X, det.cluster_centers_)[1]
    np.testing.assert_allclose(det.decision_function(X), d, rtol=1e-9, atol=1e-9)
    assert det.threshold_ == pytest.approx(np.percentile(d, 95))
    assert det.predict(X).sum() == (d > np.percentile(d, 95)).sum() == 10


def test_state_round_trip(tmp_path):
    det = PointDetector(n_clusters=3, random_state=1).fit(supplies(1))
    loaded = PointDetector.load(det.save(tmp_path / "points"))
    X = supplies(2)
    np.testing.assert_array_equal(loaded.decision_function(X), det.decision_function(X))
    assert loaded.threshold_ == det.threshold_
    meta, arrays = det.get_state()
    meta["format_version"] = 0
    with pytest.raises(FormatVersionError):
        PointDetector.from_state(meta, arrays)


def test_bad_input():
    with pytest.raises(NotFittedError, match="call fit"):
        PointDetector().predict(np.ones((2, 2)))
    with pytest.raises(BadSeriesError, match="2-D"):
        PointDetector().fit(np.ones(10))
    with pytest.raises(BadSeriesError, match="NaN"):
        PointDetector().fit(np.array([[1.0, np.nan]] * 5))
    with pytest.raises(BadSeriesError, match="numeric"):
        PointDetector().fit(np.array([["a", "b"]] * 5))
    with pytest.raises(BadSeriesError, match="fewer than n_clusters"):
        PointDetector(n_clusters=3).fit(np.ones((2, 2)))
    det = PointDetector(n_clusters=2, random_state=0).fit(supplies())
    with pytest.raises(BadSeriesError, match="fitted on 2"):
        det.predict(np.ones((2, 3)))
