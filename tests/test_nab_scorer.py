"""NAB scorer on hand-made cases whose scores are worked out here by hand.

Notation: S(x) = 2 / (1 + exp(5x)) - 1 = tanh(-5x/2); a detection at relative
position p earns S(p) / S(-1) = tanh(-5p/2) / tanh(2.5) in the standard profile.
Files have 100 rows, so probation covers rows 0..14 (floor(0.15 * 100) = 15).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cricket.evaluate.nab import (
    PROFILES,
    ScoredFile,
    probation_length,
    row_weights,
    scaled_sigmoid,
    score_corpus,
    window_rows,
)

S1 = math.tanh(2.5)  # S(-1), the best a detection can earn before scaling


def one_file(detections: dict[int, float], windows: list[tuple[int, int]], n: int = 100):
    scores = np.zeros(n)
    for i, s in detections.items():
        scores[i] = s
    return ScoredFile("cat/f.csv", scores, windows)


def norm(raw: float, n_windows: int, fn: float = 1.0, tp: float = 1.0) -> float:
    null = -fn * n_windows
    return 100 * (raw - null) / (tp * n_windows - null)


def test_scaled_sigmoid_values() -> None:
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(-1.0) == pytest.approx(math.tanh(2.5))
    assert scaled_sigmoid(1.0) == pytest.approx(-math.tanh(2.5))
    assert scaled_sigmoid(3.5) == -1.0  # beyond 3 window widths: a full false positive


def test_probation_length() -> None:
    assert probation_length(100) == 15
    assert probation_length(4032) == 604
    assert probation_length(22695) == 750  # capped at 0.15 * 5000


def test_detection_at_left_edge_is_perfect() -> None:
    # Window rows 40..49 (w = 10); at row 40, p = -(49 - 40 + 1) / 10 = -1 -> weight 1.
    res = score_corpus([one_file({40: 1.0}, [(40, 49)])])
    assert res.raw == pytest.approx(1.0)
    assert res.normalized == pytest.approx(100.0)
    assert (res.tp, res.fp, res.fn) == (1, 0, 0)


def test_detection_at_right_edge() -> None:
    # Row 49: p = -(49 - 49 + 1) / 10 = -0.1 -> tanh(0.25) / tanh(2.5) = 0.248237...
    res = score_corpus([one_file({49: 1.0}, [(40, 49)])])
    expected = math.tanh(0.25) / S1
    assert res.raw == pytest.approx(expected)
    assert res.normalized == pytest.approx(100 * (expected + 1) / 2)  # 62.41...
    assert res.normalized == pytest.approx(62.4118, abs=1e-3)


def test_only_the_best_detection_in_a_window_counts() -> None:
    # Rows 45 (p = -0.5) and 49 both fire; only row 45 counts, no FP for row 49.
    res = score_corpus([one_file({45: 1.0, 49: 1.0}, [(40, 49)])])
    assert res.raw == pytest.approx(math.tanh(1.25) / S1)


def test_missed_window_costs_fn_weight() -> None:
    # Two windows, the first hit at its left edge, the second missed: 1 - 1 = 0.
    res = score_corpus([one_file({20: 1.0}, [(20, 29), (60, 69)])])
    assert res.raw == pytest.approx(0.0)
    assert res.normalized == pytest.approx(50.0)
    assert (res.tp, res.fn) == (1, 1)
    # Low-FN profile: a miss costs 2: raw = 1 - 2 = -1; null -4, perfect 2 -> 50.
    low_fn = score_corpus([one_file({20: 1.0}, [(20, 29), (60, 69)])], "reward_low_FN_rate")
    assert low_fn.raw == pytest.approx(-1.0)
    assert low_fn.normalized == pytest.approx(100 * (-1 + 4) / (2 + 4))


def test_false_positive_after_a_window() -> None:
    # Window 40..49 hit at 40; FP at row 54: q = |54 - 49| / (10 - 1) = 5/9,
    # S(5/9) = -tanh(25/18), times fpWeight 0.11.
    res = score_corpus([one_file({40: 1.0, 54: 1.0}, [(40, 49)])])
    fp = 0.11 * -math.tanh(25 / 18)
    assert res.raw == pytest.approx(1.0 + fp)
    assert res.normalized == pytest.approx(100 * (2 + fp) / 2)
    assert res.fp == 1
    # Far past the window (q = 41/9 > 3) the FP costs the full fpWeight.
    far = score_corpus([one_file({40: 1.0, 90: 1.0}, [(40, 49)])])
    assert far.raw == pytest.approx(1.0 - 0.11)
    # Low-FP profile doubles the cost.
    low_fp = score_corpus([one_file({40: 1.0, 54: 1.0}, [(40, 49)])], "reward_low_FP_rate")
    assert low_fp.raw == pytest.approx(1.0 + 2 * fp)


def test_false_positive_with_no_preceding_window() -> None:
    # Row 20 is before any window: -fpWeight. Each such row counts.
    res = score_corpus([one_file({20: 1.0, 21: 1.0, 40: 1.0}, [(40, 49)])])
    assert res.raw == pytest.approx(1.0 - 2 * 0.11)
    assert res.fp == 2


def test_probation_rows_are_not_scored() -> None:
    # Window rows 5..20 (w = 16) starts inside probation (rows 0..14). A detection at
    # row 10 would be early, but probation rows are ignored; the one at row 15 counts:
    # p = -(20 - 15 + 1) / 16 = -0.375 -> tanh(0.9375) / tanh(2.5).
    # A detection in probation outside windows (row 2) costs nothing either.
    res = score_corpus([one_file({2: 1.0, 10: 1.0, 15: 1.0}, [(5, 20)])])
    assert res.raw == pytest.approx(math.tanh(0.9375) / S1)
    assert res.fp == 0
    # A window entirely inside probation is not counted at all (not even as a miss).
    res2 = score_corpus([one_file({50: 1.0}, [(2, 8), (50, 59)])])
    assert res2.null == pytest.approx(-1.0)
    assert res2.normalized == pytest.approx(100.0)


def test_threshold_is_swept_and_never_firing_is_an_option() -> None:
    # Row 20 (no preceding window) scores 0.9, the window's left edge 0.5.
    # t = 0.9: -0.11 - 1 = -1.11; t = 0.5: 1 - 0.11 = 0.89; never: -1. Best 0.89 at 0.5.
    res = score_corpus([one_file({20: 0.9, 40: 0.5}, [(40, 49)])])
    assert res.threshold == pytest.approx(0.5)
    assert res.raw == pytest.approx(0.89)
    # Only a false positive scores above zero: never firing (null) wins -> 0.
    res0 = score_corpus([one_file({20: 0.9}, [(40, 49)])])
    assert res0.normalized == pytest.approx(0.0)


def test_file_without_windows_only_costs_false_positives() -> None:
    # A file with no window (artificialNoAnomaly): every detection costs -fpWeight.
    quiet = ScoredFile("none/q.csv", np.r_[np.zeros(50), 1.0, np.zeros(49)], [])
    res = score_corpus([one_file({40: 1.0}, [(40, 49)]), quiet])
    assert res.raw == pytest.approx(1.0 - 0.11)
    assert res.per_file["none/q.csv"] == pytest.approx(-0.11)


def test_threshold_is_one_number_for_the_corpus() -> None:
    # File A needs t <= 0.3 to hit its window; file B has a FP (no preceding window)
    # at 0.4 and its window's left edge at 0.6. t = 0.6: B hit, A missed -> 0;
    # t = 0.3: both hit, one FP -> 2 - 0.11 = 1.89 (best). null = -2, perfect = 2.
    a = ScoredFile("a/a.csv", np.r_[np.zeros(40), 0.3, np.zeros(59)], [(40, 49)])
    b_scores = np.zeros(100)
    b_scores[20], b_scores[60] = 0.4, 0.6
    b = ScoredFile("b/b.csv", b_scores, [(60, 69)])
    res = score_corpus([a, b])
    assert res.threshold == pytest.approx(0.3)
    assert res.raw == pytest.approx(1.89)
    assert res.normalized == pytest.approx(100 * 3.89 / 4)
    assert res.per_file["a/a.csv"] == pytest.approx(1.0)
    assert res.per_file["b/b.csv"] == pytest.approx(0.89)


def _brute_force(files: list[ScoredFile], profile: str) -> float:
    """Plain reference: try every distinct threshold, score each file row by row."""
    prof = PROFILES[profile]
    thresholds = sorted(
        {float(s) for f in files for s in f.scores[probation_length(len(f.scores)) :]}
    )
    best = None
    for t in [math.inf, *thresholds]:
        total = 0.0
        for f in files:
            n = len(f.scores)
            w, wid = row_weights(n, f.windows, prof)
            start = probation_length(n)
            hits: dict[int, list[float]] = {}
            for i in range(start, n):
                if wid[i] >= 0:
                    hits.setdefault(int(wid[i]), [])
                    if f.scores[i] >= t:
                        hits[int(wid[i])].append(w[i])
                elif f.scores[i] >= t:
                    total += w[i]
            total += sum(max(h) if h else -prof.fn for h in hits.values())
        best = total if best is None else max(best, total)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_sweep_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    files = []
    for k in range(3):
        n = int(rng.integers(40, 120))
        scores = np.round(rng.random(n) ** 4, 2)  # many ties, mostly low
        starts = sorted(rng.choice(np.arange(8, n - 10), size=2, replace=False))
        wins = []
        for s in starts:
            e = min(int(s) + int(rng.integers(0, 8)), n - 1)
            if not wins or s > wins[-1][1]:
                wins.append((int(s), e))
        files.append(ScoredFile(f"c/{k}.csv", scores, wins))
    for profile in PROFILES:
        assert score_corpus(files, profile).raw == pytest.approx(_brute_force(files, profile))


def test_window_rows_from_timestamps() -> None:
    ts = pd.date_range("2014-01-01", periods=10, freq="5min")
    wins = [("2014-01-01 00:10:00.000000", "2014-01-01 00:20:00.000000")]
    assert window_rows(ts, wins) == [(2, 4)]
    # A window with no row inside it is dropped.
    assert window_rows(ts, [("2015-01-01", "2015-01-02")]) == []


def test_nan_scores_are_refused() -> None:
    f = one_file({40: 1.0}, [(40, 49)])
    f.scores[50] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        score_corpus([f])
