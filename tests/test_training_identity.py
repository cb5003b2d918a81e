"""A series' training is exactly what the plain path gives: the speed-ups inside it
(k-means++ seeding, near-tie re-checks, the distinct-segment count) must not move a
centroid, a calibration or a score."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster._kmeans import _kmeans_plusplus

from cricket.config import DetectorSpec
from cricket.synth import make_fleet
from cricket.training import train_series


def plain_seeding(X: np.ndarray, k: int, random_state: np.random.RandomState) -> np.ndarray:
    norms = np.einsum("ij,ij->i", X, X)
    return _kmeans_plusplus(X, k, norms, np.ones(len(X)), random_state)[0]


def train_fleet_series(seed: int) -> dict[str, tuple]:
    end = pd.Timestamp("2026-11-20T00:00:00Z")
    fleet = make_fleet(hosts=3, days=2, step="10s", start=end - pd.Timedelta(days=2), seed=seed,
                       anomaly_window=(end - pd.Timedelta(hours=12), end))
    cut = end - pd.Timedelta(hours=24)
    out = {}
    for key, s in fleet.series.items():
        t = train_series(str(key), s[s.index < cut], s[s.index >= cut], DetectorSpec(), 1000)
        meta, arrays = t.detector.get_state()
        score = t.detector.score(s[s.index >= cut].to_numpy())
        out[str(key)] = (json.dumps(meta, sort_keys=True, default=str), arrays, t.metrics,
                         score.score, score.events())
    return out


@pytest.mark.parametrize("seed", [3, 17])
def test_training_equals_the_plain_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = train_fleet_series(seed)
    import cricket.search as search

    monkeypatch.setattr("cricket.seeding.kmeans_plusplus", plain_seeding)
    monkeypatch.setattr(search, "settle_near_ties",
                        lambda s0, c0, scores, thresh, best: search.exact_argmin(s0, c0))
    monkeypatch.setattr("cricket.shapes._shows_distinct_rows", lambda rows, k: False)
    plain = train_fleet_series(seed)
    assert fast.keys() == plain.keys()
    for key in fast:
        meta, arrays, metrics, score, events = fast[key]
        meta0, arrays0, metrics0, score0, events0 = plain[key]
        assert meta == meta0
        assert arrays.keys() == arrays0.keys()
        for name in arrays:
            np.testing.assert_array_equal(arrays[name], arrays0[name], err_msg=f"{key} {name}")
        assert metrics == metrics0
        np.testing.assert_array_equal(score, score0)
        pd.testing.assert_frame_equal(events, events0)
