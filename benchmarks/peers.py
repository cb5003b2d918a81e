"""Cricket vs two peers on the same series: speed and detection quality side by side.

The synthetic fleet (``cricket.synth.make_fleet``, 10 s steps, anomalies injected in
its last 12 hours) is split per series into: training history, a calibration stretch
(the 6 normal hours before the anomaly window) and the test window (the last 12 hours,
scored). Each detector learns "normal" from the history, sets its threshold from the
calibration stretch, then scores the test window:

* **cricket**: ``WaveformDetector`` (k-means shape library, reconstruction error) via
  ``cricket.training.train_series`` / ``cricket.scoring.score_series``, as the flows run it;
* **stumpy**: matrix profile AB-join (``stumpy.stump(test, m, T_B=history)``): each
  test subsequence's distance to its nearest neighbour in the history (z-normalised,
  m = segment length); threshold: the calibration stretch's largest such distance;
* **iforest**: scikit-learn ``IsolationForest`` on windowed segments (length m, robustly
  scaled per series, hop 2 for training, hop m/2 for scoring); threshold: the
  calibration stretch's highest anomaly score.

A point is anomalous when a segment/subsequence covering it is; anomalous points closer
than ``min_event_gap`` merge into events. Events are matched to injected anomalies as
the demo does (``cricket.flows.demo.match_events``, 10 min slack): found / missed / false.

Times are the scoring of the test window (what the hourly run does), summed over
series, single process; fit times are reported apart. stumpy's numba compilation is
done once before timing (warm-up on the first series, not counted).

Usage: ``.venv/bin/python benchmarks/peers.py [--hosts 15] [--days 2]``.
The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cricket.config import DetectorSpec  # noqa: E402
from cricket.scoring import (
    events_from_mask,  # noqa: E402
    score_series,  # noqa: E402
)
from cricket.series import (
    RobustScaler,  # noqa: E402
    prepare,  # noqa: E402
)
from cricket.synth import make_fleet  # noqa: E402
from cricket.training import train_series  # noqa: E402

TEST = pd.Timedelta(hours=12)
CALIB = pd.Timedelta(hours=6)


def to_events(key: str, index: pd.DatetimeIndex, mask: np.ndarray, score: np.ndarray,
              gap: int) -> list[dict]:
    ev = events_from_mask(mask, np.nan_to_num(score), gap)
    return [{"series": key, "start": index[int(e.start_idx)], "end": index[int(e.end_idx)]}
            for e in ev.itertuples(index=False)]


def cover(n_points: int, starts: np.ndarray, m: int) -> np.ndarray:
    """Points covered by the flagged subsequences starting at ``starts``."""
    diff = np.zeros(n_points + 1, dtype=np.int64)
    np.add.at(diff, starts, 1)
    np.add.at(diff, np.minimum(starts + m, n_points), -1)
    return np.cumsum(diff[:-1]) > 0


# ------------------------------------------------------------------------------ peers
def stumpy_fit(history: np.ndarray, calib: np.ndarray, m: int) -> float:
    import stumpy

    d = stumpy.stump(calib, m, T_B=history, ignore_trivial=False)[:, 0].astype(float)
    return float(np.nanmax(d[np.isfinite(d)]))


def stumpy_score(history: np.ndarray, test: np.ndarray, m: int, thr: float) -> tuple[np.ndarray, np.ndarray]:
    import stumpy

    d = stumpy.stump(test, m, T_B=history, ignore_trivial=False)[:, 0].astype(float)
    flagged = np.flatnonzero(np.isfinite(d) & (d > thr))
    point_score = np.zeros(len(test))
    np.maximum.at(point_score, np.arange(len(d)), np.nan_to_num(d))
    return cover(len(test), flagged, m), point_score


def segments(x: np.ndarray, m: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(0, len(x) - m + 1, hop)
    idx = starts[:, None] + np.arange(m)[None, :]
    return x[idx], starts


def iforest_fit(history: np.ndarray, calib: np.ndarray, m: int, seed: int):
    from sklearn.ensemble import IsolationForest

    scaler = RobustScaler().fit(history[np.isfinite(history)])
    seg, _ = segments(scaler.transform(history), m, 2)
    seg = seg[np.isfinite(seg).all(axis=1)]
    model = IsolationForest(n_estimators=100, random_state=seed).fit(seg)
    cseg, _ = segments(scaler.transform(calib), m, m // 2)
    thr = float(np.max(-model.score_samples(cseg)))
    return model, scaler, thr


def iforest_score(model, scaler, test: np.ndarray, m: int, thr: float) -> tuple[np.ndarray, np.ndarray]:
    seg, starts = segments(scaler.transform(test), m, m // 2)
    s = -model.score_samples(seg)
    point_score = np.zeros(len(test))
    np.maximum.at(point_score, starts, s)
    return cover(len(test), starts[s > thr], m), point_score


# ------------------------------------------------------------------------------ run
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=15)
    ap.add_argument("--days", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-clusters", type=int, default=150)
    args = ap.parse_args(argv)
    from cricket.flows.demo import match_events

    spec = DetectorSpec(n_clusters=args.n_clusters)
    m = spec.segment_len
    fleet = make_fleet(hosts=args.hosts, days=args.days, step="10s",
                       start=pd.Timestamp("2026-11-01T00:00:00Z"), seed=args.seed)
    t_test = fleet.end - TEST
    t_calib = t_test - CALIB
    names = ("cricket", "stumpy", "iforest")
    fit_s = dict.fromkeys(names, 0.0)
    score_s = dict.fromkeys(names, 0.0)
    events: dict[str, list[dict]] = {n: [] for n in names}
    warmed = False
    for key, s in fleet.series.items():
        name = str(key)
        hist, calib, test = s[s.index < t_calib], s[(s.index >= t_calib) & (s.index < t_test)], s[s.index >= t_test]
        h, c = prepare(hist, spec).to_numpy(), prepare(calib, spec).to_numpy()
        x = prepare(test, spec).to_numpy()

        # cricket: history trains, calibration stretch sets the threshold
        t0 = time.perf_counter()
        trained = train_series(name, hist, calib, spec, 1000)
        fit_s["cricket"] += time.perf_counter() - t0
        det = trained.detector
        window = s[s.index >= t_test - m * fleet.step]  # the test window plus one segment of context
        t0 = time.perf_counter()
        res = score_series(key, window, det, "series", t_test.to_pydatetime(), spec)
        score_s["cricket"] += time.perf_counter() - t0
        events["cricket"] += [{"series": name, "start": r.start, "end": r.end}
                              for r in res.events.itertuples(index=False)]

        # stumpy
        if not warmed:
            stumpy_fit(h[:2000], c[:500], m)  # numba compile, not timed
            warmed = True
        t0 = time.perf_counter()
        thr = stumpy_fit(h, c, m)
        fit_s["stumpy"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        mask, ps = stumpy_score(h, x, m, thr)
        score_s["stumpy"] += time.perf_counter() - t0
        events["stumpy"] += to_events(name, test.index, mask, ps, spec.min_event_gap)

        # isolation forest on windowed segments
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            model, scaler, thr = iforest_fit(h, c, m, args.seed)
            fit_s["iforest"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            mask, ps = iforest_score(model, scaler, x, m, thr)
            score_s["iforest"] += time.perf_counter() - t0
        events["iforest"] += to_events(name, test.index, mask, ps, spec.min_event_gap)

    quality = {}
    for n in names:
        ev = pd.DataFrame(events[n], columns=["series", "start", "end"])
        match = match_events(fleet, ev, slack=pd.Timedelta(minutes=10))
        quality[n] = {"found": len(match.found), "missed": len(match.missed),
                      "false_events": len(match.false_events), "missed_list": match.missed}
    base = max(score_s["cricket"], 1e-9)
    out = {
        "series": args.hosts,
        "days": args.days,
        "test_hours": TEST / pd.Timedelta(hours=1),
        "injected": len(fleet.truth),
        "score_s": {n: round(v, 3) for n, v in score_s.items()},
        "fit_s": {n: round(v, 2) for n, v in fit_s.items()},
        "score_time_ratio_vs_cricket": {n: round(score_s[n] / base, 2) for n in names},
        "quality": quality,
    }
    for n in names:
        q = quality[n]
        print(f"{n:8s} score {score_s[n]:7.2f} s ({out['score_time_ratio_vs_cricket'][n]:5.2f}x)  "
              f"fit {fit_s[n]:7.1f} s  found {q['found']}/{len(fleet.truth)}  "
              f"false {q['false_events']}", file=sys.stderr)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
