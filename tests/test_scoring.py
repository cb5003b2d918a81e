"""Events, thresholds and 0-100 scores."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cricket.scoring import (
    events_from_mask,
    from_score_0_100,
    quantile_threshold,
    to_score_0_100,
)
from tests import naive


def test_events_are_contiguous_runs_with_peak_and_mean():
    scores = np.array([0, 5, 6, 0, 0, 0, 9, 0, 3, 4], dtype=float)
    ev = events_from_mask(scores > 2, scores, min_gap=0)
    assert list(ev.columns) == ["start_idx", "end_idx", "peak", "mean"]
    assert ev.values.tolist() == [[1, 2, 6, 5.5], [6, 6, 9, 9], [8, 9, 4, 3.5]]


def test_close_events_merge_below_min_gap():
    scores = np.array([0, 5, 6, 0, 0, 0, 9, 0, 3, 4], dtype=float)
    ev = events_from_mask(scores > 2, scores, min_gap=2)  # the gap of 1 at index 7 merges
    assert ev[["start_idx", "end_idx"]].values.tolist() == [[1, 2], [6, 9]]
    assert ev.iloc[1]["mean"] == pytest.approx((9 + 0 + 3 + 4) / 4)
    ev = events_from_mask(scores > 2, scores, min_gap=4)  # the gap of 3 merges too
    assert ev[["start_idx", "end_idx"]].values.tolist() == [[1, 9]]


def test_no_event_and_nan_scores():
    assert events_from_mask(np.zeros(5, bool), np.zeros(5), 3).empty
    scores = np.array([np.nan, 4.0, np.nan])
    ev = events_from_mask(np.array([True, True, True]), scores, 0)
    assert ev.values.tolist() == [[0, 2, 4.0, 4.0]]
    with pytest.raises(ValueError, match="equal length"):
        events_from_mask(np.zeros(3, bool), np.zeros(4), 0)


@given(st.lists(st.booleans(), max_size=80), st.integers(0, 6), st.randoms())
def test_events_match_the_naive_loop(mask, min_gap, rnd):
    mask = np.array(mask, dtype=bool)
    scores = np.array([rnd.random() for _ in mask])
    got = events_from_mask(mask, scores, min_gap)
    want = naive.events(mask, scores, min_gap)
    assert got[["start_idx", "end_idx"]].values.tolist() == [[a, b] for a, b, _, _ in want]
    np.testing.assert_allclose(got["peak"], [p for _, _, p, _ in want])
    np.testing.assert_allclose(got["mean"], [m for _, _, _, m in want])


def test_quantile_threshold():
    e = np.r_[np.arange(101.0), np.nan, np.inf]
    assert quantile_threshold(e, 0.5) == 50.0
    assert quantile_threshold(e, 0.9, scale=2.0) == pytest.approx(180.0)
    with pytest.raises(ValueError, match="more held-out data"):
        quantile_threshold(np.array([np.nan]), 0.5)
    with pytest.raises(ValueError, match="quantile"):
        quantile_threshold(e, 1.5)


def test_score_0_100_maps_threshold_to_50_and_inverts():
    e = np.array([0.0, 1.0, 2.0, 10.0, 1e9, np.nan])
    s = to_score_0_100(e, threshold=2.0)
    assert s[0] == 0 and s[2] == pytest.approx(50) and s[4] < 100 and np.isnan(s[5])
    assert np.all(np.diff(s[:5]) > 0)
    np.testing.assert_allclose(from_score_0_100(s[:4], 2.0), e[:4])
    assert to_score_0_100(np.array([2.0]), 2.0, at_threshold=80)[0] == pytest.approx(80)
    with pytest.raises(ValueError, match="threshold"):
        to_score_0_100(e, 0.0)
