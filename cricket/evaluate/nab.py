"""NAB scoring, written from the rules of the Numenta Anomaly Benchmark (v1.1).

Steps, per profile (tpWeight, fpWeight, fnWeight):

1. Labelled windows (timestamp pairs) become inclusive row ranges ``[a, b]``.
2. Probation: the first ``min(floor(0.15 * n), 750)`` rows of a file are not scored.
3. Every row gets a weight: inside a window ``tp * S(p) / S(-1)`` with
   ``p = -(b - i + 1) / w``; outside, ``fp * S(q)`` with ``q = |i - r| / (w' - 1)``
   after the preceding window (``S = -1`` when ``q > 3``), or ``-fp`` when no window
   precedes. ``S(x) = 2 / (1 + exp(5 x)) - 1``.
4. For a threshold ``t``, rows with score ``>= t`` are detections: a window earns the
   best weight among its detections or ``-fn`` when it has none; every detection
   outside windows adds its (negative) weight.
5. The threshold is swept over every distinct score of the whole corpus (one number
   per profile); the best total is normalised: ``100 * (raw - null) / (perfect - null)``
   with ``null = -fn * windows`` and ``perfect = tp * windows``.

The sweep sorts all scored rows once and computes every threshold's total with
cumulative sums (no loop over thresholds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cricket.errors import CricketValueError, DataNotFoundError


@dataclass(frozen=True)
class Profile:
    """Costs of one NAB application profile."""

    name: str
    tp: float
    fp: float
    fn: float


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def scaled_sigmoid(x: float | np.ndarray) -> np.ndarray:
    """NAB's ``S(x) = 2 / (1 + exp(5 x)) - 1``, and ``-1`` for ``x > 3``."""
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore"):
        val = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, val)


def probation_length(n_rows: int, fraction: float = 0.15) -> int:
    """Rows at the start of a file that are never scored: ``min(floor(0.15 n), 750)``."""
    return int(min(math.floor(fraction * n_rows), fraction * 5000))


def window_rows(
    timestamps: Sequence | np.ndarray | pd.Series, windows: Sequence[Sequence]
) -> list[tuple[int, int]]:
    """Turn ``[start, end]`` timestamp windows into inclusive row ranges ``(a, b)``.

    A window covers the rows whose timestamp lies in ``[start, end]``; it runs from the
    first such row to the last. Windows with no row are dropped.
    """
    ts = pd.to_datetime(pd.Series(timestamps)).to_numpy()
    out: list[tuple[int, int]] = []
    for start, end in windows:
        inside = np.flatnonzero(
            (ts >= pd.Timestamp(start).to_datetime64()) & (ts <= pd.Timestamp(end).to_datetime64())
        )
        if inside.size:
            out.append((int(inside[0]), int(inside[-1])))
    return sorted(out)


def row_weights(
    n_rows: int, windows: Sequence[tuple[int, int]], profile: Profile
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row sweep weight and window id (-1 outside windows) for one file."""
    weights = np.empty(n_rows, dtype=float)
    wid = np.full(n_rows, -1, dtype=np.int64)
    idx = np.arange(n_rows)
    max_tp = float(scaled_sigmoid(-1.0))
    # Rows before the first window: no preceding window.
    first = windows[0][0] if windows else n_rows
    weights[:first] = -profile.fp
    for k, (a, b) in enumerate(windows):
        w = b - a + 1
        rows = idx[a : b + 1]
        weights[a : b + 1] = profile.tp * scaled_sigmoid(-(b - rows + 1) / w) / max_tp
        wid[a : b + 1] = k
        nxt = windows[k + 1][0] if k + 1 < len(windows) else n_rows
        after = idx[b + 1 : nxt]
        if w > 1:
            weights[b + 1 : nxt] = profile.fp * scaled_sigmoid(np.abs(after - b) / (w - 1))
        else:  # a one-row window: every later row is "far" past it
            weights[b + 1 : nxt] = -profile.fp
    return weights, wid


@dataclass
class ScoredFile:
    """One file's scores and labelled windows, ready for the sweep."""

    name: str
    scores: np.ndarray
    windows: list[tuple[int, int]]


@dataclass
class ProfileResult:
    """Best threshold and scores of one profile over a corpus."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    normalized: float
    tp: int = 0
    fp: int = 0
    fn: int = 0
    per_file: dict[str, float] = field(default_factory=dict)


def _prepare(files: Sequence[ScoredFile], profile: Profile):
    """Concatenate the scored (post-probation) rows of every file."""
    scores, weights, wids, file_ids = [], [], [], []
    n_windows = 0
    for f_idx, f in enumerate(files):
        n = len(f.scores)
        w, wid = row_weights(n, f.windows, profile)
        start = probation_length(n)
        sc = np.asarray(f.scores, dtype=float)[start:]
        if np.isnan(sc).any():
            raise CricketValueError(f"{f.name}: anomaly scores must not be NaN (use 0 for 'no opinion')")
        wid = wid[start:]
        # Windows with no scored row (inside probation) do not count, as in NAB.
        present = np.unique(wid[wid >= 0])
        remap = np.full(max(len(f.windows), 1), -1, dtype=np.int64)
        remap[present] = np.arange(present.size) + n_windows
        wid = np.where(wid >= 0, remap[np.maximum(wid, 0)], -1)
        n_windows += present.size
        scores.append(sc)
        weights.append(w[start:])
        wids.append(wid)
        file_ids.append(np.full(sc.size, f_idx, dtype=np.int64))
    cat = np.concatenate
    return cat(scores), cat(weights), cat(wids), cat(file_ids), n_windows


def _contributions(weights: np.ndarray, wids: np.ndarray, fn: float) -> np.ndarray:
    """Change of the total when each row (in the given order) becomes a detection.

    Rows outside windows add their weight. Inside a window only the best detection
    counts, so a row adds (new running max of its window) - (previous running max),
    the first one starting from ``-fn``.
    """
    delta = np.where(wids < 0, weights, 0.0)
    in_win = np.flatnonzero(wids >= 0)
    if in_win.size:
        # Stable sort by window keeps the detection order inside each window.
        order = in_win[np.argsort(wids[in_win], kind="stable")]
        g = wids[order]
        offset = 10.0 * g  # weights lie in [-1, 1]; offsets keep running maxima per group
        runmax = np.maximum.accumulate(weights[order] + offset) - offset
        prev = np.empty_like(runmax)
        prev[1:] = runmax[:-1]
        starts = np.ones(g.size, dtype=bool)
        starts[1:] = g[1:] != g[:-1]
        prev[starts] = -fn
        delta[order] = runmax - prev
    return delta


def _total_at(weights: np.ndarray, wids: np.ndarray, det: np.ndarray, fn: float) -> float:
    """Raw total of some rows for a fixed set of detections (plain, for reporting)."""
    total = float(np.sum(weights[det & (wids < 0)]))
    for w_id in np.unique(wids[wids >= 0]):
        hits = weights[det & (wids == w_id)]
        total += float(hits.max()) if hits.size else -fn
    return total


def score_corpus(files: Sequence[ScoredFile], profile: Profile | str = "standard") -> ProfileResult:
    """Sweep one threshold over the whole corpus and return the best normalised score."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    scores, weights, wids, file_ids, n_windows = _prepare(files, prof)
    null = -prof.fn * n_windows
    perfect = prof.tp * n_windows
    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    delta = _contributions(weights[order], wids[order], prof.fn)
    totals = null + np.cumsum(delta)
    # A threshold equal to a distinct score takes every row tied with it: evaluate at
    # the last row of each tie block.
    ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    best_threshold, best_raw = math.inf, null  # never firing is always possible
    if ends.size:
        k = int(np.argmax(totals[ends]))
        if totals[ends[k]] > best_raw:
            best_raw = float(totals[ends[k]])
            best_threshold = float(s_sorted[ends[k]])
    result = ProfileResult(
        profile=prof.name,
        threshold=best_threshold,
        raw=best_raw,
        null=null,
        perfect=perfect,
        normalized=100.0 * (best_raw - null) / (perfect - null) if perfect != null else 0.0,
    )
    # Counts and per-file raw totals at the chosen threshold.
    det = scores >= best_threshold
    result.fp = int(np.count_nonzero(det & (wids < 0)))
    hit = np.unique(wids[det & (wids >= 0)])
    result.tp = int(hit.size)
    result.fn = int(n_windows - hit.size)
    for f_idx, f in enumerate(files):
        m = file_ids == f_idx
        result.per_file[f.name] = _total_at(weights[m], wids[m], det[m], prof.fn)
    return result


def score_all_profiles(files: Sequence[ScoredFile]) -> dict[str, ProfileResult]:
    """:func:`score_corpus` for every NAB profile."""
    return {name: score_corpus(files, p) for name, p in PROFILES.items()}


# --- reading a NAB-layout folder ------------------------------------------------------


@dataclass
class NabFile:
    """One data file of a NAB-layout folder with its labelled windows (timestamps)."""

    key: str  # "<category>/<file>.csv", as in the labels
    timestamps: pd.DatetimeIndex
    values: np.ndarray
    windows: list[tuple[pd.Timestamp, pd.Timestamp]]

    @property
    def category(self) -> str:
        return self.key.split("/")[0]

    @property
    def stem(self) -> str:
        return Path(self.key).name

    def window_rows(self) -> list[tuple[int, int]]:
        return window_rows(self.timestamps, self.windows)


def load_corpus(data_dir: str | Path) -> list[NabFile]:
    """Read ``data/<category>/<file>.csv`` and ``labels/combined_windows.json``."""
    root = Path(data_dir)
    labels_path = root / "labels" / "combined_windows.json"
    if not (root / "data").is_dir() or not labels_path.is_file():
        raise DataNotFoundError(
            f"{root} does not have NAB's layout: it needs data/<category>/<file>.csv and "
            "labels/combined_windows.json"
        )
    labels = json.loads(labels_path.read_text())
    files: list[NabFile] = []
    for path in sorted((root / "data").glob("*/*.csv")):
        key = f"{path.parent.name}/{path.name}"
        df = pd.read_csv(path)
        if list(df.columns[:2]) != ["timestamp", "value"]:
            raise CricketValueError(f"{path}: expected the header 'timestamp,value'")
        wins = [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in labels.get(key, [])]
        files.append(
            NabFile(
                key=key,
                timestamps=pd.DatetimeIndex(pd.to_datetime(df["timestamp"])),
                values=df["value"].to_numpy(dtype=float),
                windows=wins,
            )
        )
    if not files:
        raise DataNotFoundError(f"no CSV files under {root / 'data'}")
    return files
