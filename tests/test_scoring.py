"""Events, thresholds and once-per-anomaly alerts."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cricket.scoring import alert_scores, events_from_mask, quantile_threshold
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


def test_alert_scores_fire_once_per_anomaly() -> None:
    s = np.zeros(400)
    s[100:150] = np.linspace(40, 55, 50)  # a slow ramp: one alert, at its start
    s[300] = 90.0  # a new anomaly after the hold: a second alert
    out = alert_scores(s, hold=100, margin=20.0)
    assert np.flatnonzero(out).tolist() == [100, 300]
    assert out[100] == 40.0 and out[300] == 90.0
    s[160] = 85.0  # within the hold but 45 points worse than the last alert: fires
    assert 160 in np.flatnonzero(alert_scores(s, hold=100, margin=20.0))
    # Causal: changing the future never changes an earlier alert.
    t = s.copy()
    t[250:] = 99.0
    assert np.array_equal(alert_scores(t, 100)[:250], alert_scores(s, 100)[:250])
    assert np.array_equal(alert_scores(s, None), s)


def test_alert_scores_rearm_after_a_quiet_stretch() -> None:
    s = np.full(400, 5.0)
    s[100:110] = 80.0  # an anomaly
    s[180] = 90.0  # a second one within the hold, not 20 points worse
    held = alert_scores(s, hold=200, margin=20.0)
    assert np.flatnonzero(held).tolist() == [0, 100]  # 0: the first rise of the file
    rearmed = alert_scores(s, hold=200, margin=20.0, rearm=25.0, quiet=32)
    assert np.flatnonzero(rearmed).tolist() == [0, 100, 180]
    # Not quiet long enough in between (31 < 32 low points after the first anomaly)
    t = s.copy()
    t[141:180] = 30.0
    assert 180 not in np.flatnonzero(alert_scores(t, 200, 20.0, rearm=25.0, quiet=32))
    # ... and a stretch in the middle of the anomaly does not count as quiet
    u = s.copy()
    u[110:180] = 60.0
    assert 180 not in np.flatnonzero(alert_scores(u, 200, 20.0, rearm=25.0, quiet=32))
    # Causal as before
    v = s.copy()
    v[250:] = 99.0
    assert np.array_equal(
        alert_scores(v, 200, 20.0, rearm=25.0)[:250], alert_scores(s, 200, 20.0, rearm=25.0)[:250]
    )
