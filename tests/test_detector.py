"""WaveformDetector: contract, calibration across scales, causality, gaps, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cricket.calibration import TailCalibrator, surprise_to_score
from cricket.config import DetectorSpec
from cricket.detector import ScoreFrame, WaveformDetector
from cricket.shapes import ShapeLibrary
from tests import naive

SPEC = DetectorSpec(n_clusters=40, random_state=0)


def wave(n: int, seed: int = 0, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = (
        np.sin(2 * np.pi * t / 50)
        + 0.3 * np.sin(2 * np.pi * t / 13)
        + 0.05 * rng.standard_normal(n)
    )
    return offset + scale * x


@pytest.fixture(scope="module")
def fitted() -> WaveformDetector:
    return WaveformDetector(SPEC).fit(wave(2500))


def test_flags_zeroed_stretch_and_not_clean_data(fitted: WaveformDetector) -> None:
    x = wave(1500, seed=1)
    clean = fitted.score(x)
    assert isinstance(clean, ScoreFrame)
    assert len(clean) == len(x) and len(clean.events(16)) == 0
    x[800:905] = 0.0
    bad = fitted.score(x)
    ev = bad.events(16)
    assert len(ev) >= 1
    assert ((ev.start_idx <= 904) & (ev.end_idx >= 800)).any()
    assert set(ev.columns) == {"start_idx", "end_idx", "alert_idx", "peak", "mean", "severity"}
    # one event, and its settled extent is the zeroed stretch (within one segment),
    # not the run of alerts that outlasts it by up to the longest segment
    hit = ev[(ev.start_idx <= 904) & (ev.end_idx >= 800)]
    assert len(hit) == 1
    assert abs(int(hit.start_idx.iloc[0]) - 800) <= 32
    assert abs(int(hit.end_idx.iloc[0]) - 904) <= 32
    assert int(hit.alert_idx.iloc[0]) >= int(hit.start_idx.iloc[0])


def test_one_threshold_across_scales() -> None:
    # The same waveform in very different units gives the same scores.
    a = WaveformDetector(SPEC).fit(wave(2500))
    b = WaveformDetector(SPEC).fit(wave(2500, scale=1e4, offset=-3e5))
    expected = surprise_to_score(-np.log10(1 - SPEC.threshold_quantile))
    assert a.threshold_ == b.threshold_ == pytest.approx(float(expected))
    xa = wave(600, seed=2)
    xa[300:320] += 2.0
    xb = xa * 1e4 - 3e5
    np.testing.assert_allclose(a.score(xa).score, b.score(xb).score, rtol=1e-6, atol=1e-6)


def test_scores_are_causal(fitted: WaveformDetector) -> None:
    # A point's score does not change when later data arrives or changes.
    x = wave(800, seed=3)
    full = fitted.score(x).score
    y = x.copy()
    y[500:] = 9.0
    assert np.array_equal(fitted.score(y).score[:500], full[:500], equal_nan=True)
    part = fitted.score(x[:400]).score
    assert np.array_equal(part, full[:400], equal_nan=True)


def test_context_gives_left_context(fitted: WaveformDetector) -> None:
    x = wave(500, seed=4)
    no_ctx = fitted.score(x[100:])
    assert np.isnan(no_ctx.score[: SPEC.segment_len - 1]).all()
    ctx = fitted.score(x, context=100)
    assert len(ctx) == 400 and not np.isnan(ctx.score).any()
    # Past the longest segment (the period scale's, here longer than segment_len) the
    # scores no longer depend on the context.
    c = fitted.context_len
    assert c >= SPEC.segment_len - 1
    np.testing.assert_allclose(ctx.score[c:], no_ctx.score[c:])


def test_gaps_are_handled(fitted: WaveformDetector) -> None:
    x = wave(600, seed=5)
    x[100:102] = np.nan  # short: interpolated, still scored
    x[300:360] = np.nan  # long: never scored, nothing invented for it
    f = fitted.score(x)
    n = SPEC.segment_len
    assert not np.isnan(f.score[100:102]).any()
    assert np.isnan(f.score[300:360]).all() and not f.anomalous[300:360].any()
    assert np.isnan(f.reconstruction[300:360]).all()
    # After it, scoring resumes once the data after the gap holds at least half of the
    # window's weight (its last n/2 samples), on those samples only; no false alert.
    assert np.isnan(f.score[360 : 360 + n // 2 - 1]).all()
    assert not np.isnan(f.score[360 + n // 2 - 1 :]).any()
    assert not f.anomalous.any()


def test_without_long_gaps_the_score_is_the_whole_segment_score(fitted: WaveformDetector) -> None:
    """Matching segments over gaps changes nothing on a series whose gaps are all short
    (filled): the score equals the reference that never scores a segment over a gap."""
    x = wave(900, seed=8)
    x[400:430] += 1.5
    x[200:203] = np.nan
    got = fitted.score(x).score
    want = naive.detector_scores(x, fitted, spanning=False)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert np.nanmax(got) >= fitted.threshold_


def test_an_anomaly_just_after_an_outage_is_found_on_the_data_after_it(
    fitted: WaveformDetector,
) -> None:
    x = wave(900, seed=9)
    x[300:340] = np.nan  # an outage longer than a segment
    t = np.arange(346, 380)
    x[346:380] = 0.9 * np.sin(2 * np.pi * t / 6)  # a shape never seen, within the range
    f = fitted.score(x)
    first = int(np.flatnonzero(f.anomalous)[0])
    # before any whole segment after the outage ends (at 340 + n - 1)
    assert 346 <= first < 340 + SPEC.segment_len - 1
    whole = naive.detector_scores(x, fitted, spanning=False)
    assert np.isnan(whole[first])
    # The report's picture of a shorter burst: the segment at the event's peak, with the
    # outage left out (NaN), beside the shape it was matched to on its observed samples.
    x[358:380] = wave(900, seed=9)[358:380]
    f = fitted.score(x)
    ev = f.events(SPEC.min_event_gap)
    pairs = fitted.nearest_shapes(x, 0, ev, f.score)
    assert len(ev) == len(pairs) == 1
    seg, shape = pairs[0]
    assert len(seg) == len(shape) == SPEC.segment_len and np.isfinite(shape).all()
    assert np.isnan(seg[:4]).all() and np.isfinite(seg[-18:]).all()


def test_an_irregular_series_is_scored_without_false_alerts(fitted: WaveformDetector) -> None:
    """Half the steps missing at random (irregular rows on a regular grid): most points
    get a score, matched on the samples each segment holds, and clean data raises no
    alert (the whole-segment calibration is not loosened by partial matches)."""
    rng = np.random.default_rng(11)
    x = wave(3000, seed=10)
    at = 0
    while at < len(x):  # runs of 1-12 missing steps between runs of 4-16 rows
        at += int(rng.integers(4, 17))
        gap = int(rng.integers(1, 13))
        x[at : at + gap] = np.nan
        at += gap
    sf = fitted.score(x)
    observed = np.isfinite(naive.fill_short_gaps(x, SPEC.short_gap))
    assert np.isnan(sf.score[~observed]).all()
    whole = naive.detector_scores(x, fitted, spanning=False)
    assert np.isfinite(sf.score[observed]).mean() > 0.9 > np.isfinite(whole[observed]).mean()
    assert not sf.anomalous.any()


def test_fit_with_gaps_and_explicit_holdout() -> None:
    x = wave(3000)
    x[1000:1100] = np.nan
    det = WaveformDetector(SPEC).fit(x[:2400], holdout=x[2400:])
    assert det.n_train_ == 2300
    assert np.nanmax(det.score(wave(500, seed=6)).score) < 100


def test_state_round_trip_is_exact(fitted: WaveformDetector) -> None:
    meta, arrays = fitted.get_state()
    json.dumps(meta)  # JSON-safe
    again = WaveformDetector.from_state(json.loads(json.dumps(meta)), arrays)
    x = wave(700, seed=7)
    x[400:450] = 3.0
    a, b = fitted.score(x), again.score(x)
    for name in ("value", "reconstruction", "error", "score", "anomalous"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert again.threshold_ == fitted.threshold_ and again.n_train_ == fitted.n_train_


def test_calibrator_extrapolates_the_tail() -> None:
    rng = np.random.default_rng(0)
    e = rng.exponential(1.0, 20000)
    cal = TailCalibrator.fit(e, min_beta=0.01)
    s = cal.surprise(np.array([0.0, np.log(10), np.log(1000), np.log(1e6)]))
    # For exponential errors P(E >= e) = exp(-e): surprise = e / ln 10.
    np.testing.assert_allclose(s, [0.0, 1.0, 3.0, 6.0], atol=0.08)
    assert np.all(np.diff(cal.surprise(np.linspace(0, 30, 200))) >= 0)  # monotone
    assert surprise_to_score(3.0) == pytest.approx(50.0)
    assert surprise_to_score(np.inf) == 100.0


def test_bad_input_errors() -> None:
    det = WaveformDetector(SPEC)
    with pytest.raises(Exception, match="not fitted"):
        det.score(wave(100))
    with pytest.raises(ValueError, match="too few"):
        det.fit(wave(40))
    with pytest.raises(ValueError, match="numbers"):
        det.fit(np.array(["a", "b"] * 100))
    with pytest.raises(ValueError, match="format version"):
        meta, arrays = WaveformDetector(SPEC).fit(wave(1000)).get_state()
        WaveformDetector.from_state({**meta, "format_version": 99}, arrays)


@pytest.mark.parametrize("per_series_scaling", [False, True])
def test_score_equals_the_naive_reference(per_series_scaling: bool) -> None:
    """The shipped score, point by point, from tests/naive.py: trailing-segment error at
    both scales, calibration, score; and the events grouped from it."""
    spec = DetectorSpec(n_clusters=20, random_state=0, max_period=120)
    x = wave(2400, seed=3)
    x[700:702] = np.nan  # a short gap (filled) and a long one (split)
    x[1500:1540] = np.nan
    det = WaveformDetector(spec, per_series_scaling=per_series_scaling).fit(x)
    assert len(det.libraries_) == 2  # the 32-sample scale and the dominant period
    y = wave(900, seed=4, scale=40.0, offset=7.0) if per_series_scaling else wave(900, seed=4)
    y[300:330] = y[300]  # a stuck stretch
    y[500:503] = np.nan
    y[600:650] = np.nan
    y[820] = np.nanmax(y) + 0.5 * (np.nanmax(y) - np.nanmin(y))  # beyond the trained range
    got = det.score(y)
    want = naive.detector_scores(y, det)
    assert got.scales["range 1"][820] > 10 and np.nanmax(got.scales["range 1"][:800]) == 0
    np.testing.assert_array_equal(np.isnan(got.score), np.isnan(want))
    np.testing.assert_allclose(got.score, want, rtol=1e-9, atol=1e-9)
    assert np.array_equal(det.decision_function(y), got.score, equal_nan=True)
    np.testing.assert_array_equal(det.predict(y), got.anomalous.astype(np.int8))
    flagged = np.nan_to_num(want, nan=-1.0) >= det.threshold_
    assert flagged[300:340].any()
    # Events: each starts its alerts where a run of flagged points starts, and every run
    # of flagged points belongs to an event (its extent settled around the run).
    ev = got.events(min_gap=spec.min_event_gap)
    runs = naive.events(flagged, want, spec.min_event_gap)
    starts = {a for a, _, _, _ in runs}
    assert set(ev["alert_idx"].tolist()) <= starts and len(ev) >= 1
    for a, b, peak, _ in runs:
        mine = ev[(ev.alert_idx <= a) & (np.minimum(ev.start_idx, ev.alert_idx) <= b)]
        assert len(mine) >= 1
        assert mine["peak"].max() >= peak - 1e-9


def test_calibration_equals_the_naive_reference() -> None:
    rng = np.random.default_rng(5)
    errors = np.r_[rng.gamma(2.0, 0.3, 3000), np.nan]
    cal = TailCalibrator.fit(errors)
    q, beta = naive.tail_calibration(errors)
    np.testing.assert_allclose(cal.quantiles, q, rtol=1e-12)
    assert cal.beta == pytest.approx(beta, rel=1e-12)
    probe = np.r_[0.0, np.linspace(0.01, 4.0, 97), 50.0, np.nan]
    want = [naive.surprise(e, q, beta) for e in probe]
    np.testing.assert_allclose(cal.surprise(probe), want, rtol=1e-9, atol=1e-12)


def test_attribution_is_computed_only_for_events() -> None:
    # The causal score (NAB, decision_function) never fits or computes the attributed
    # error; events do, and get the same extents as a detector whose calibrators were
    # fitted up front (by saving its state).
    det = WaveformDetector(SPEC).fit(wave(2500))
    x = wave(1500, seed=3)
    x[600:700] = 2.5
    det.decision_function(x)
    assert det._attr_calibrators is None
    lazy = det.score(x)
    assert lazy.extent is None and lazy.settle is not None
    ev = lazy.events(16)
    assert len(ev) >= 1 and lazy.extent is not None and lazy.settle is None
    assert det._attr_calibrators is not None
    again = WaveformDetector.from_state(*det.get_state())
    eager = again.score(x)
    assert np.array_equal(eager.settled()[0], lazy.extent)
    assert eager.events(16).equals(ev)


def test_an_anomaly_in_the_left_context_is_settled_there(fitted: WaveformDetector) -> None:
    # The window starts just after a zeroed stretch: its alerts (segments still holding
    # the stretch) point back into the left context. By default no event is this
    # window's; keep_lead gives the settled extent there (negative indices).
    x = wave(1500, seed=4)
    x[700:760] = 0.0
    sf = fitted.score(x, context=765)
    assert sf.anomalous[:10].any()
    assert sf.events(16).empty
    lead = sf.events(16, keep_lead=True)
    assert len(lead) == 1
    assert abs(int(lead.start_idx.iloc[0]) - (700 - 765)) <= 32
    assert abs(int(lead.end_idx.iloc[0]) - (759 - 765)) <= 32


def noisy(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(2 * np.pi * t / 50) + 0.3 * rng.standard_normal(n)


def test_a_stretch_without_noise_is_flagged_where_the_noise_is_steady() -> None:
    # A noisy sine: the noise is steady, so a stretch drawn smoothly (the same sine
    # without noise, well within the normal range: rebuilt *better* than normal data)
    # is anomalous for the lost-noise view alone.
    det = WaveformDetector(SPEC).fit(noisy(4000, 0))
    assert det.noise_calibrator_ is not None
    x = noisy(1500, 1)
    assert det.score(x).events(16).empty
    x[800:900] = np.sin(2 * np.pi * np.arange(800, 900) / 50)
    sf = det.score(x)
    ev = sf.events(16)
    hit = ev[(ev.start_idx <= 899) & (ev.end_idx >= 800)]
    assert len(hit) == 1
    assert abs(int(hit.start_idx.iloc[0]) - 800) <= 32
    assert abs(int(hit.end_idx.iloc[0]) - 899) <= 32
    assert np.nanmax(sf.scales["noise 32"][800:900]) >= det.alert_surprise
    again = WaveformDetector.from_state(*det.get_state())
    assert np.array_equal(again.score(x).score, sf.score, equal_nan=True)


def test_no_lost_noise_view_where_smooth_stretches_are_normal() -> None:
    # Noise that comes and goes (quiet half-hours are part of normal data): the view
    # would flag normal stretches, so the detector leaves it out.
    x = noisy(4000, 2)
    for a in range(0, 4000, 600):
        x[a : a + 150] = np.sin(2 * np.pi * np.arange(a, a + 150) / 50)
    det = WaveformDetector(SPEC).fit(x)
    assert det.noise_calibrator_ is None
    assert not any(name.startswith("noise") for name in det.score(x[:500]).scales)


def swelling_pulses(n: int, seed: int, phase: int = 0) -> np.ndarray:
    # A pulse every 60 samples whose height swells and fades over 3,000 samples.
    t = np.arange(n) + phase
    height = 1.0 + 0.6 * np.sin(2 * np.pi * t / 3000)
    return height * ((t % 60) < 6) + 0.05 * np.random.default_rng(seed).standard_normal(n)


def test_lost_structure_is_calibrated_on_training_and_held_out_windows() -> None:
    # The held-out data (15 periods) sees only the tallest pulses; the training data sees
    # every height. A clean stretch of low pulses is normal (trained on), so the lost-
    # structure view must not fire there (calibrated on held-out alone it peaked at 11),
    # while a pulse that does not come is still flagged by it.
    det = WaveformDetector(SPEC).fit(swelling_pulses(6000, 0),
                                     holdout=swelling_pulses(900, 1, phase=6600))
    view = f"structure {det.spread_len_}"
    assert det.spread_len_ == 60
    x = swelling_pulses(3000, 2, phase=9000)
    sf = det.score(x)
    assert np.nanmax(sf.scales[view]) < det.alert_surprise
    assert sf.events(16).empty
    x[1500:1506] = 0.05 * np.random.default_rng(3).standard_normal(6)  # no pulse
    sf = det.score(x)
    assert np.nanmax(sf.scales[view][1500:1620]) >= det.alert_surprise
    ev = sf.events(16)
    assert len(ev) == 1 and int(ev.start_idx.iloc[0]) <= 1505 and int(ev.end_idx.iloc[0]) >= 1500


def test_base_scale_is_calibrated_on_both_ends_of_the_history() -> None:
    """Cross-fitted calibration (cricket.crossfit), from the plain reference: the base
    scale's calibration is the envelope of the model's errors on the held-out tail and a
    sibling library's (same settings, fitted on the last 70 % of the history) errors on
    the first 30 %, which it never saw: the larger quantile at every level, the larger
    tail scale."""
    spec = DetectorSpec(n_clusters=20, random_state=0, period_scale=False)
    x = wave(1500, seed=8)
    det = WaveformDetector(spec).fit(x)
    scaled = det.scaler_.transform(x)
    cut = round(len(x) * (1 - spec.holdout_fraction))
    n = spec.segment_len
    held = naive.trailing_errors(scaled, det.library_.centroids_, n)[cut:]
    sibling = ShapeLibrary(segment_len=n, train_slide=spec.train_slide, n_clusters=20,
                           random_state=0, holdout_fraction=0.0).fit([scaled[len(x) - cut :]])
    front = naive.trailing_errors(scaled[: len(x) - cut], sibling.centroids_, n)
    q_held, beta_held = naive.tail_calibration(held)
    q_front, beta_front = naive.tail_calibration(front)
    assert not np.allclose(q_held, q_front)  # the two ends differ: the envelope matters
    np.testing.assert_allclose(det.calibrators_[0].quantiles, np.maximum(q_held, q_front),
                               rtol=1e-9)
    assert det.calibrators_[0].beta == pytest.approx(max(beta_held, beta_front), rel=1e-9)
    alone = WaveformDetector(spec.model_copy(update={"calibration_crossfit": False})).fit(x)
    np.testing.assert_allclose(alone.calibrators_[0].quantiles, q_held, rtol=1e-9)
    assert alone.calibrators_[0].beta == pytest.approx(beta_held, rel=1e-9)
    # the library the model keeps is the same either way; no error is more surprising
    np.testing.assert_array_equal(alone.library_.centroids_, det.library_.centroids_)
    probe = np.linspace(0.0, 3.0 * float(np.nanmax(held)), 200)
    assert np.all(det.calibrators_[0].surprise(probe) <= alone.calibrators_[0].surprise(probe))


def test_bursts_seen_only_early_in_the_history_are_not_called_rare() -> None:
    """A kind of busy stretch that happened early in the history (not in the held-out
    tail) is ordinary for this series: calibrated on both ends of the history, a later
    one is far less surprising than when only the recent tail calibrates."""
    rng = np.random.default_rng(11)
    x = wave(3000, seed=9)
    busy = [(100, 160), (400, 460), (700, 760)]  # all in the first 30 %
    for a, b in busy:
        x[a:b] += 0.4 * rng.standard_normal(b - a)
    y = wave(600, seed=10)
    y[300:360] += 0.4 * rng.standard_normal(60)
    spec = DetectorSpec(n_clusters=40, random_state=0, period_scale=False)
    both = WaveformDetector(spec).fit(x).score(y).scales["shape 32"]
    tail = WaveformDetector(spec.model_copy(update={"calibration_crossfit": False})).fit(x)
    recent = tail.score(y).scales["shape 32"]
    assert np.nanmax(recent[300:392]) > 5  # a one-in-100,000 error by the recent tail
    assert np.nanmax(both[300:392]) < np.nanmax(recent[300:392]) - 2
    # the ordinary stretches stay unsurprising either way
    assert np.nanmax(both[:290]) <= np.nanmax(recent[:290]) + 1e-9


def test_an_event_near_the_end_of_the_data_is_settled_where_later_data_settles_it() -> None:
    # A spike half an hour before the data ends (an hourly window's end). The period
    # scale's segments (~200 samples) that could clear the samples after the spike need
    # data up to ~3/4 segment later; before it is in, every segment left to judge them
    # holds the spike, and the hour's event ran on for ~20 minutes past a 20 s spike.
    # The event is where the same detector puts it with the data after.
    import pandas as pd

    from cricket.synth import make_fleet

    fleet = make_fleet(hosts=3, days=2.0, step="10s", start=pd.Timestamp("2026-01-01", tz="UTC"),
                       seed=11, anomalies=False)
    x = fleet.series[fleet.keys[2]].to_numpy(dtype=float)
    det = WaveformDetector(DetectorSpec()).fit(x[:-2000])
    long_scale = max(int(lib.segment_len) for lib in det.libraries_)
    assert long_scale >= 150  # the case needs a period scale much longer than the base
    y = x[-2000:].copy()
    y[1000:1002] += 6 * np.std(y)
    later = det.score(y).events(16)
    at_end = det.score(y[: 1000 + long_scale - 10]).events(16)
    assert later[["start_idx", "end_idx"]].values.tolist() == at_end[
        ["start_idx", "end_idx"]].values.tolist()
    assert len(at_end) == 1 and int(at_end.end_idx.iloc[0]) <= 1002 + 8
