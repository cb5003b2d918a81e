"""Events as the hourly pipeline stores them (window by window, each settling what the
window before left provisional) against the events one pass over the same data finds."""

from __future__ import annotations

import pandas as pd
import pytest
from cricket.tasks.score import context_for

from cricket.config import DetectorSpec, SeriesSelector
from cricket.detector import WaveformDetector
from cricket.model import ModelBundle, scoring_copy
from cricket.scoring import score_series, settle_with_stored
from cricket.synth import make_fleet

START = pd.Timestamp("2026-01-05T00:00:00Z")
STEP = pd.Timedelta("10s")
HOUR = 360  # samples of an hourly window


@pytest.fixture(scope="module")
def missing_pulse() -> tuple[WaveformDetector, pd.Series, int, tuple[int, int]]:
    """A pulse host fitted on two days, and a day with missing pulses in it: the
    detector, the series, where the scored day starts, the first anomaly (indices)."""
    fleet = make_fleet(hosts=1, days=3.0, step="10s", start=START, seed=3,
                       anomaly_window=(START + pd.Timedelta(days=2), START + pd.Timedelta(days=3)),
                       kinds=("missing_pulse",), families=("pulses",), per_host=1,
                       length_range=(0.5, 0.6), clean_fraction=0.0)
    key = fleet.keys[0]
    series = fleet.series[key]
    n_hist = int(pd.Timedelta(days=2) / STEP)
    det = WaveformDetector(DetectorSpec()).fit(series.to_numpy(dtype=float)[:n_hist])
    truth = fleet.truth[0]
    a0 = int(series.index.get_loc(truth.start))
    a1 = int(series.index.get_loc(truth.end - STEP))
    return det, series, n_hist, (a0, a1)


def test_an_event_that_ends_late_in_an_hour_is_stored_as_one_pass_finds_it(missing_pulse):
    # Missing pulses are seen by the lost-structure view: the windows of one period that
    # lack a pulse. An anomaly that ends a little before the hour has that view's run of
    # flagged windows cut at the hour (and its period scale's last 3/4 segment
    # provisional); the next window, with the context the pipeline reads
    # (tasks.score.context_for), must settle the stored record where one pass over the
    # data puts it. With one longest segment of context it could not (the view was NaN
    # there): the record ended ~180 samples early.
    det, series, n_hist, (a0, a1) = missing_pulse
    m = det.context_len + 1
    assert m >= 3 * det.segment_len, "the case needs a period scale much longer than the base segment"
    spec = det.spec
    gap = STEP * (spec.min_event_gap + 1)
    # one pass: the scored day with more history than any view needs
    ctx = 4 * spec.max_period
    one = det.score(series.to_numpy(dtype=float)[n_hist - ctx:], context=ctx)
    want = [(n_hist + int(s), n_hist + int(e)) for s, e in zip(
        *one.events(spec.min_event_gap)[["start_idx", "end_idx"]].to_numpy().T, strict=True)
        if e + n_hist >= a0 and s + n_hist <= a1]
    assert len(want) == 1
    # hourly windows, one of them ending 20 samples after the anomaly
    h_end = a1 + 20
    first = h_end - HOUR * ((h_end - n_hist) // HOUR)
    selector = SeriesSelector(every=STEP.to_pytimedelta())
    bundle = ModelBundle(detectors={"waveform.value{host=x}": det}, fleet=None, spec=spec,
                         selector=selector)
    need = int(context_for(bundle, selector) / STEP)
    stored = pd.DataFrame()
    for h0 in range(first, h_end + 2 * HOUR, HOUR):
        part = series.iloc[h0 - need : h0 + HOUR]
        res = score_series("x", part, scoring_copy(det), "series", series.index[h0], spec)
        events, revised = settle_with_stored(res.events, res.carried,
                                             stored if len(stored) else None,
                                             series.index[h0], gap)
        for new in (events, revised):
            if len(new):
                keep = stored[~stored["start"].isin(new["start"])] if len(stored) else stored
                stored = pd.concat([keep, new], ignore_index=True)
    idx = series.index
    got = [(int(idx.get_loc(r.start)), int(idx.get_loc(r.end))) for r in stored.itertuples()
           if idx.get_loc(r.end) >= a0 and idx.get_loc(r.start) <= a1]
    assert got == want, f"anomaly {a0}-{a1}: stored {got}, one pass {want}"
