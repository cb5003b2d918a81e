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


# ------------------------------------------------------- score_series against a plain one
def _plain_score_series(key, series, detector, window_start, spec):  # noqa: ANN001, ANN202
    """What ``score_series`` computes, the plain pandas way (a frame, boolean row
    selection, the ScoreFrame's events as DataFrames, reindexing): the reference the
    array path must equal exactly."""
    import pandas as pd

    from cricket.scoring import EVENT_COLUMNS, VIEW_PREFIX, _event_rows
    from cricket.series import prepare

    s = prepare(series, spec)
    times = s.index
    context = int((times < pd.Timestamp(window_start)).sum())
    values = s.to_numpy(dtype=float)
    sf = detector.score(values, context=context)
    raw = series.reindex(times[context:]).to_numpy(dtype=float)
    frame = pd.DataFrame(
        {"value": raw, "reconstruction": sf.reconstruction, "error": sf.error,
         "score": sf.score, "anomalous": sf.anomalous,
         **{VIEW_PREFIX + k: v for k, v in sf.scales.items()}},
        index=times[context:],
    )
    frame = frame[frame["value"].notna() & frame["score"].notna()]
    step = pd.Timedelta(times.freq) if times.freq is not None else times[1] - times[0]
    views = {k: np.nan_to_num(v, nan=-np.inf) for k, v in sf.scales.items()}
    ev = sf.events(spec.min_event_gap)
    events = pd.DataFrame(_event_rows(ev, times[context:], raw, sf.reconstruction, views, step),
                          columns=EVENT_COLUMNS)
    lead = sf.events(spec.min_event_gap, keep_lead=True)
    lead = lead[lead["start_idx"] < 0]
    carried = pd.DataFrame(_event_rows(
        lead, times, series.reindex(times).to_numpy(dtype=float),
        np.r_[np.full(context, np.nan), sf.reconstruction],
        {k: np.r_[np.full(context, -np.inf), v] for k, v in views.items()}, step,
        offset=context), columns=EVENT_COLUMNS)
    shapes = detector.nearest_shapes(values, context, ev, np.asarray(sf.score))
    return frame, events, carried, shapes


def test_score_series_equals_the_plain_pandas_way():
    # gaps (short and long), an anomaly in the window, one that runs from the context
    # into the window (carried), and an input out of order (the reindex path); the
    # scoring copy leaves the model's own detector without caches
    import pandas as pd

    from cricket.config import DetectorSpec
    from cricket.detector import WaveformDetector
    from cricket.model import compact, scoring_copy
    from cricket.scoring import score_series

    spec = DetectorSpec(n_clusters=24, random_state=0)
    rng = np.random.default_rng(5)
    t = np.arange(4000)
    x = np.sin(2 * np.pi * t / 60) + 0.05 * rng.standard_normal(len(t))
    det = WaveformDetector(spec).fit(x[:3000])
    det = compact(det)  # as a loaded model: calibrators fitted, no caches
    y = x[3000:].copy()
    y[200:230] = 2.5  # from the context into the window
    y[500:503] = np.nan  # a short gap (filled)
    y[600:660] = np.nan  # a long one
    y[800:840] = -2.0  # an anomaly in the window
    idx = pd.date_range("2026-01-01", periods=len(y), freq="10s", tz="UTC")
    start = idx[220].to_pydatetime()
    tidy = pd.Series(y, index=idx)
    for series in (tidy, tidy.iloc[::-1]):
        got = score_series("m.f{h=a}", series, scoring_copy(det), "series", start, spec)
        frame, events, carried, shapes = _plain_score_series(
            "m.f{h=a}", series, compact(det), start, spec)
        pd.testing.assert_frame_equal(got.frame, frame, check_exact=True)
        pd.testing.assert_frame_equal(got.events, events, check_exact=True)
        pd.testing.assert_frame_equal(got.carried, carried, check_exact=True)
        assert len(got.events) >= 2 and len(got.carried) == 1
        assert len(got.frame) < len(y) - 220  # the long gap's steps are not kept
        assert len(got.nearest_shapes) == len(shapes)
        for (a, b), (c, d) in zip(got.nearest_shapes, shapes, strict=True):
            assert np.array_equal(a, c, equal_nan=True) and np.array_equal(b, d)
    assert all(getattr(lib, "_search_tables", None) is None for lib in det.libraries_)
    quiet = score_series("m.f{h=a}", pd.Series(x[3000:], index=idx), scoring_copy(det),
                         "series", start, spec)
    assert quiet.events.empty and quiet.carried.empty
    assert list(quiet.events.columns) == list(events.columns)

