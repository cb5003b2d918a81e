"""Run the detector causally over a NAB-layout folder and score it.

For each file (NAB-specific glue only; the detection itself is
:class:`cricket.detector.WaveformDetector`, exactly as the pipeline uses it):

1. Regularise the rows onto a grid whose step is the file's median step
   (``cricket.series.regularize``: duplicates averaged, unordered rows sorted, missing
   steps NaN).
2. The first ``min(floor(0.15 n), 750)`` rows are history only. The detector is fitted
   on the history, then scores what comes next; it is refitted on all the history
   (at most ``max_history`` steps) every ``retrain_every`` steps: the nightly retrain
   and hourly scoring of the deployed pipeline, replayed.
3. A row gets the score of its grid step once every row that step (and every step
   before it) depends on has arrived; otherwise the previous step's score. So a
   row's score uses only rows at or before it, even with duplicate, unordered or
   irregular timestamps.
4. Scores become NAB's ``anomaly_score`` in [0, 1] (the 0-100 score / 100).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cricket.config import DetectorSpec
from cricket.errors import CricketValueError
from cricket.evaluate.nab import (
    NabFile,
    ProfileResult,
    ScoredFile,
    load_corpus,
    probation_length,
    score_all_profiles,
)


@dataclass
class RunConfig:
    """One configuration for the whole corpus (never per file or category)."""

    spec: DetectorSpec = field(default_factory=DetectorSpec)  # the product's defaults
    retrain_every: int = 1000  # grid steps between refits
    max_history: int = 5000  # most recent grid steps used for a refit
    alert_hold: int | None = 200  # grid steps: fire once per rise (detector.alert_scores)
    alert_margin: float = 20.0  # a new alert within the hold must beat the last by this
    # ... or come after the score was back below alert_rearm (surprise 1) for alert_quiet
    # steps in a row (one segment): the last anomaly is over, this one is new
    alert_rearm: float | None = 25.0
    alert_quiet: int = 32


def _grid(f: NabFile) -> tuple[pd.Series, np.ndarray]:
    """The regular series and, for each row, its grid step."""
    from cricket.series import regularize

    ts = f.timestamps.as_unit("ns")
    diffs = np.diff(ts.sort_values().asi8)
    diffs = diffs[diffs > 0]
    step = pd.Timedelta(int(np.median(diffs)), unit="ns") if diffs.size else pd.Timedelta("1min")
    series = pd.Series(f.values, index=ts)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicates / unordered rows are expected here
        reg = regularize(series, step)
    bins = np.searchsorted(reg.index.as_unit("ns").asi8, ts.asi8, side="right") - 1
    return reg, bins


def run_file(f: NabFile, config: RunConfig) -> np.ndarray:
    """Causal anomaly scores in [0, 1] for every row of ``f``."""
    from cricket.detector import WaveformDetector
    from cricket.scoring import alert_scores

    reg, bins = _grid(f)
    values = reg.to_numpy(dtype=float)
    n_rows, n_bins = len(f.values), len(values)
    # Last row each step (and every step before it) depends on.
    last_row = np.full(n_bins, -1, dtype=np.int64)
    np.maximum.at(last_row, bins, np.arange(n_rows))
    ready_after = np.maximum.accumulate(last_row)
    history_bins = int(np.searchsorted(ready_after, probation_length(n_rows), side="left"))
    history_bins = max(history_bins, 1)

    spec = config.spec
    bin_score = np.full(n_bins, np.nan)
    start = history_bins
    while start < n_bins:
        stop = min(start + config.retrain_every, n_bins)
        lo = max(0, start - config.max_history)
        det = WaveformDetector(spec)
        try:
            det.fit(values[lo:start])
        except ValueError:
            # Too little usable history yet: no opinion until the next refit.
            start = stop
            continue
        c0 = max(0, start - det.context_len)
        frame = det.score(values[c0:stop], context=start - c0)
        bin_score[start:stop] = frame.score
        start = stop
    bin_score = alert_scores(bin_score, hold=config.alert_hold, margin=config.alert_margin,
                             rearm=config.alert_rearm, quiet=config.alert_quiet)
    bin_score = np.nan_to_num(bin_score, nan=0.0) / 100.0

    rows = np.arange(n_rows)
    own_ready = ready_after[bins] <= rows
    prev = np.maximum(bins - 1, 0)
    prev_ready = (bins > 0) & (ready_after[prev] <= rows)
    out = np.where(own_ready, bin_score[bins], np.where(prev_ready, bin_score[prev], 0.0))
    return np.clip(out, 0.0, 1.0)


def _worker(args: tuple[NabFile, RunConfig]) -> tuple[str, np.ndarray, float]:
    f, config = args
    t0 = time.perf_counter()
    return f.key, run_file(f, config), time.perf_counter() - t0


def _init_worker() -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


@dataclass
class NabRun:
    results: dict[str, ProfileResult]
    scores: dict[str, np.ndarray]
    seconds: float
    file_seconds: dict[str, float]


def run_corpus(
    files: Sequence[NabFile], config: RunConfig | None = None, processes: int | None = None
) -> NabRun:
    """Run every file (in parallel processes) and score the corpus per profile."""
    config = config or RunConfig()
    t0 = time.perf_counter()
    procs = processes if processes is not None else min(os.cpu_count() or 1, len(files))
    # Largest files first, so the pool stays busy to the end.
    order = sorted(files, key=lambda f: -len(f.values))
    jobs = [(f, config) for f in order]
    if procs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(procs, initializer=_init_worker) as pool:
            out = pool.map(_worker, jobs, chunksize=1)
    else:
        out = [_worker(j) for j in jobs]
    scores = {k: s for k, s, _ in out}
    file_seconds = {k: sec for k, _, sec in out}
    scored = [ScoredFile(f.key, scores[f.key], f.window_rows()) for f in files]
    results = score_all_profiles(scored)
    return NabRun(results, scores, time.perf_counter() - t0, file_seconds)


def write_results(files: Sequence[NabFile], run: NabRun, out_dir: str | Path, name: str) -> Path:
    """NAB results files: ``<out>/<name>/<category>/<name>_<file>.csv``."""
    if "_" in name:
        raise CricketValueError(f"detector name {name!r} must not contain '_' (NAB splits on it)")
    root = Path(out_dir) / name
    for f in files:
        label = np.zeros(len(f.values), dtype=np.int64)
        for a, b in f.window_rows():
            label[a : b + 1] = 1
        path = root / f.category / f"{name}_{f.stem}"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "timestamp": f.timestamps.strftime("%Y-%m-%d %H:%M:%S"),
                "value": f.values,
                "anomaly_score": run.scores[f.key],
                "label": label,
            }
        ).to_csv(path, index=False)
    return root


def evaluate_nab(
    data_dir: str | Path,
    out_dir: str | Path,
    name: str = "cricket",
    config: RunConfig | None = None,
    processes: int | None = None,
) -> NabRun:
    """Load, run, write the results files and score. Returns the run."""
    if "_" in name:
        raise CricketValueError(f"detector name {name!r} must not contain '_' (NAB splits on it)")
    files = load_corpus(data_dir)
    run = run_corpus(files, config, processes)
    write_results(files, run, out_dir, name)
    return run
