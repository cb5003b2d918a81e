"""The point part of a version, judged for promotion (core policy, no services): the
planted correlation-breaking probes stay in range and break the correlation, a working
model finds them and a blind one does not, and the rule (false alarms, probe recall,
people's labelled anomalies) decides as documented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cricket.multifield import PointBundle, PointSpec
from cricket.point_promotion import (
    PointEvaluation,
    correlation_probes,
    decide_point_promotion,
    evaluate_points,
    judge_points,
    with_points,
)
from cricket.series import SeriesKey
from cricket.synth_points import FIELDS, make_point_fleet


@pytest.fixture(scope="module")
def setup():
    fleet = make_point_fleet(n_devices=4, days=2.0, seed=9)
    frames = {dev: pd.DataFrame({f: fleet.series[SeriesKey.make("psu", f, dev.tag_dict)]
                                 for f in FIELDS}) for dev in fleet.devices}
    split = fleet.end - pd.Timedelta(hours=12)
    train = {k: f[f.index < split] for k, f in frames.items()}
    # the clean devices' tail: normal data the models did not see
    tail = {k: frames[k][frames[k].index >= split] for k in fleet.clean_devices()}
    return fleet, frames, train, tail


def test_probes_stay_in_range_and_break_the_correlation(setup):
    _, frames, train, tail = setup
    for key, frame in tail.items():
        probes = correlation_probes(frame, list(FIELDS))
        assert len(probes) >= 3
        for f in FIELDS:  # every value is one the field takes in this tail
            assert probes[f].between(frame[f].min(), frame[f].max()).all()
        changed = (probes != frame.loc[probes.index]).sum(axis=1)
        assert (changed == 1).all()  # exactly one field replaced per probe
        # and the replaced field no longer follows the load the way it does normally
        for f in ("power", "temp"):
            rows = probes[probes[f] != frame.loc[probes.index, f]]
            if rows.empty:
                continue
            fit = np.polyfit(train[key]["load"], train[key][f], 1)
            normal = np.abs(train[key][f] - np.polyval(fit, train[key]["load"])).quantile(0.99)
            assert (np.abs(rows[f] - np.polyval(fit, rows["load"])) > 3 * normal).all()


def test_a_working_model_finds_the_probes_and_a_blind_one_does_not(setup):
    fleet, _, train, tail = setup
    good, _ = PointBundle.train(fleet.selector(), PointSpec(n_clusters=6), train)
    blind, _ = PointBundle.train(fleet.selector(),
                                 PointSpec(n_clusters=6, threshold_margin=50.0), train)
    g, b = evaluate_points(good, tail), evaluate_points(blind, tail)
    assert g.probes == b.probes > 0  # the same probes for both: they come from the data
    assert g.recall >= 0.9 and g.false_alarms < 0.01
    assert b.recall == 0.0
    ok, reason = decide_point_promotion(b, g)
    assert not ok and "misses probes the champion finds" in reason
    # labelled anomalies: the rows of a real anomaly, as people answered it
    a = fleet.truth[0]
    frame = pd.DataFrame({f: fleet.series[SeriesKey.make("psu", f, a.key.tag_dict)]
                          for f in FIELDS})
    rows = frame[(frame.index >= a.start) & (frame.index < a.end)]
    g2 = evaluate_points(good, tail, labelled=[(a.key, rows)])
    b2 = evaluate_points(blind, tail, labelled=[(a.key, rows)])
    assert (g2.labelled, g2.labelled_found) == (1, 1)
    assert (b2.labelled, b2.labelled_found) == (1, 0)


def test_the_rule():
    champ = PointEvaluation(0.001, 10, 9)
    assert decide_point_promotion(PointEvaluation(0.002, 10, 9), champ)[0]
    worse = decide_point_promotion(PointEvaluation(0.01, 10, 10), champ)
    assert not worse[0] and "more false alarms" in worse[1]
    assert decide_point_promotion(PointEvaluation(0.0, 10, 8), champ)[0]  # within 0.1
    assert not decide_point_promotion(PointEvaluation(0.0, 10, 7), champ)[0]
    # a labelled anomaly missed: never over a champion; the first version still goes in
    missed = PointEvaluation(0.0, 10, 10, labelled=2, labelled_found=1)
    ok, reason = decide_point_promotion(missed, champ)
    assert not ok and "misses 1 of 2 stretches people labelled anomalies" in reason
    ok, reason = decide_point_promotion(missed, None)
    assert ok and "misses 1 of 2" in reason and "no point model to compare" in reason
    # the version is promoted as a whole
    bad = judge_points(PointEvaluation(0.01, 10, 10), champ)
    assert with_points(True, "waveform: not worse", bad) == (
        False, f"not promoted: the {bad.reason}")
    good = judge_points(PointEvaluation(0.0, 10, 10), champ)
    assert with_points(True, "waveform: not worse", good)[0] is True
    assert with_points(False, "waveform: worse", good)[0] is False
    assert with_points(True, "r", None) == (True, "r")
