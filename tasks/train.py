"""Train: extract, prepare and fit a batch of series; fit the fleet library; assemble
the model of the run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from cricket.tasks.common import CPU_TASK, IO_BACKOFF, IO_RETRIES, retry_if_retryable
from cricket.tasks.extract import read_window
from prefect import get_run_logger, task

from cricket.bundle_parts import BundleWriter
from cricket.config import DetectorSpec, SeriesSelector, Settings
from cricket.detector import WaveformDetector
from cricket.feedback import (
    ANOMALY,
    NORMAL,
    Label,
    LabelledStretch,
    labels_by_series,
    learn_normal,
    mask_labelled,
)
from cricket.model import ModelBundle, compact
from cricket.promotion import EvalSummary, evaluate_bundle
from cricket.search import one_blas_thread
from cricket.series import SeriesKey
from cricket.training import (
    TailStore,
    TrainedModel,
    TrainedSeries,
    check_trainable,
    evaluation_tails,
    fleet_training_values,
    train_fleet,
    train_series,
)
from cricket.windows import TrainingWindow


@dataclass
class TrainBatch:
    trained: list[TrainedSeries]
    #: each series' raw held-out tail (the flow keeps the few its pictures need)
    holdouts: dict[str, pd.Series]
    fleet_sample: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    #: the labelled stretches of the batch's series (with context), for the promotion check
    stretches: list[LabelledStretch] = field(default_factory=list)
    shapes_learned: int = 0
    #: the evaluation half of each held-out tail (``TrainedModel.evaluation_tails``)
    tails: dict[str, np.ndarray] = field(default_factory=dict)
    #: the new detectors of the batch on their tails (fleet-served series: not yet)
    evaluation: EvalSummary | None = None
    #: the champion's sub-bundle on the same tails (None without a champion)
    champion_evaluation: EvalSummary | None = None


@task(
    name="train-batch",
    retries=IO_RETRIES,
    retry_delay_seconds=IO_BACKOFF,
    retry_condition_fn=retry_if_retryable,
    timeout_seconds=3600,
    **CPU_TASK,
)
def train_batch(
    settings: Settings,
    selector: SeriesSelector,
    spec: DetectorSpec,
    keys: list[SeriesKey],
    window: TrainingWindow,
    min_points: int,
    fleet_cap: int,
    labels: list[Label] | None = None,
    champion: ModelBundle | None = None,
) -> TrainBatch:
    """Fit one detector per series of ``keys`` on the window's history; its held-out
    tail is returned for calibration and evaluation. ``labels`` (people's answers):
    labelled anomalies are kept out of training and calibration, labelled-normal
    stretches out of calibration and learned as shapes. The batch's part of the
    promotion's evaluation is made here, while its tails are at hand: the new detectors
    on their tails, and ``champion`` (the champion's sub-bundle for ``keys``) on the
    same tails."""
    log = get_run_logger()
    t0 = time.perf_counter()
    data = read_window(settings, selector, keys, window.start, window.end)
    t1 = time.perf_counter()
    trained, holdouts, fleet_parts = [], {}, []
    stretches: list[LabelledStretch] = []
    learned = 0
    by_series = labels_by_series(labels or [])
    cut = pd.Timestamp(window.holdout_start)
    for key in keys:
        s = data.pop(key, None)  # drop each raw series once used: memory stays one batch
        name = str(key)
        if s is None or s.notna().sum() == 0:
            trained.append(TrainedSeries(name, None, reason="no data in the training window"))
            continue
        train, hold = s[s.index < cut], s[s.index >= cut]
        mine = by_series.get(name, [])
        if mine:
            train = mask_labelled(train, [lab for lab in mine if lab.label == ANOMALY])
            hold = mask_labelled(hold, mine)
        res = train_series(name, train, hold, spec, min_points)
        if mine:
            found = read_stretches(settings, selector, key, mine, spec)
            stretches.extend(found)
            if res.detector is not None:
                learned += learn_normal(
                    res.detector, [st for st in found if st.label.label == NORMAL]
                )
        if res.detector is not None:  # ship and keep the learned state only, no caches
            res.detector = compact(res.detector)
        if res.detector is None:
            log.warning("%s: %s", name, res.reason)
        trained.append(res)
        holdouts[name] = hold
        fleet_parts.append(train)
    sample = fleet_training_values(fleet_parts, spec, fleet_cap)
    del fleet_parts
    t2 = time.perf_counter()
    if learned:
        log.info("learned %d shapes from labelled-normal stretches", learned)
    tails = {k: v.to_numpy(dtype=float) for k, v in evaluation_tails(holdouts, spec).items()}
    own = ModelBundle(
        detectors={t.key: t.detector for t in trained if t.detector is not None},
        fleet=None, spec=spec, selector=selector,
    )
    with one_blas_thread():  # the other workers train or evaluate other batches
        evaluation = evaluate_bundle(own, tails)
        champion_evaluation = None if champion is None else evaluate_bundle(champion, tails)
    t3 = time.perf_counter()
    return TrainBatch(trained, holdouts, sample,
                      {"extract": t1 - t0, "fit": t2 - t1, "evaluate_batches": t3 - t2},
                      stretches, learned, tails, evaluation, champion_evaluation)


def read_stretches(
    settings: Settings,
    selector: SeriesSelector,
    key: SeriesKey,
    labels: list[Label],
    spec: DetectorSpec,
) -> list[LabelledStretch]:
    """Each label's stretch with the context scoring would see on both sides (the
    longest segment a detector may use), wherever in time it lies."""
    margin = selector.every * (max(spec.max_period, spec.segment_len) + spec.segment_len)
    out = []
    for lab in labels:
        data = read_window(settings, selector, [key], lab.start - margin, lab.end + margin)
        values = data.get(key)
        if values is not None and values.notna().any():
            out.append(LabelledStretch(lab, values))
    return out


@task(name="train-fleet", timeout_seconds=3600, **CPU_TASK)
def fit_fleet(samples: list[np.ndarray], spec: DetectorSpec) -> WaveformDetector | None:
    """The fleet library over robustly scaled samples of every series."""
    parts = [s for s in samples if s.size]
    if not parts:
        return None
    sep = np.full(spec.short_gap + 1, np.nan)
    joined = np.concatenate([p for s in parts for p in (s, sep)][:-1])
    return train_fleet(joined, spec)


class StreamedRun:
    """A retrain's state across its batches, in memory that does not grow with the
    fleet: each finished batch's detectors go into the new bundle's folder at once
    (:class:`cricket.bundle_parts.BundleWriter`) and its evaluation tails to disk
    (:class:`cricket.training.TailStore`); what stays is each series' metrics and
    evaluation numbers, the fleet sample, and the raw held-out tails of the few series
    the run's pictures show. Lives in the flow, in ``staging`` (a folder of its own)."""

    def __init__(self, staging: Path, spec: DetectorSpec, selector: SeriesSelector) -> None:
        self.spec, self.selector = spec, selector
        self.bundle_dir = staging / "bundle"  # the pyfunc logs it as artifacts/bundle
        self._writer = BundleWriter(self.bundle_dir)
        (staging / "tails").mkdir()
        self.tails = TailStore(staging / "tails")
        self._metrics: dict[int, dict[str, dict[str, float]]] = {}
        self._skipped: dict[int, dict[str, str]] = {}
        self._samples: dict[int, np.ndarray] = {}
        self._evals: list[EvalSummary] = []
        self._champion_evals: list[EvalSummary] = []
        self._fleet_tails: dict[str, np.ndarray] = {}
        self.pictures: dict[str, pd.Series] = {}
        self.stretches: list[LabelledStretch] = []
        self.shapes_learned = 0
        self.batch_seconds: list[TrainBatch] = []

    def add(self, index: int, batch: TrainBatch) -> None:
        """Take one finished batch (any order) and let go of its detectors and data."""
        for t in batch.trained:
            if t.detector is not None:
                self._writer.add(t.key, t.detector)
            elif t.key in batch.tails:  # the fleet library serves it: evaluated later
                self._fleet_tails[t.key] = batch.tails[t.key]
        self._metrics[index] = {t.key: t.metrics for t in batch.trained}
        self._skipped[index] = {t.key: t.reason for t in batch.trained if t.detector is None}
        self._samples[index] = batch.fleet_sample
        self.tails.add(batch.tails)
        if batch.evaluation is not None:
            self._evals.append(batch.evaluation)
        if batch.champion_evaluation is not None:
            self._champion_evals.append(batch.champion_evaluation)
        # the pictures show the first few series (by key) that have a detector
        mine = {t.key for t in batch.trained if t.detector is not None}
        candidates = {**self.pictures,
                      **{k: v for k, v in batch.holdouts.items() if k in mine}}
        self.pictures = {k: candidates[k] for k in sorted(candidates)[:PICTURE_SERIES]}
        self.stretches.extend(batch.stretches)
        self.shapes_learned += batch.shapes_learned
        self.batch_seconds.append(TrainBatch([], {}, np.empty(0), batch.seconds))
        release(batch)

    def fleet_samples(self) -> list[np.ndarray]:
        """Every batch's fleet sample, in batch order (the same fleet library every run)."""
        return [self._samples[i] for i in sorted(self._samples)]

    def finish(
        self, fleet: WaveformDetector | None, window: TrainingWindow, min_history_points: int
    ) -> TrainedModel:
        """Close the bundle with the fleet library; the model of the run, its bundle
        opened from the folder (detectors read when asked for)."""
        per_series = {k: v for i in sorted(self._metrics) for k, v in self._metrics[i].items()}
        skipped = {k: v for i in sorted(self._skipped) for k, v in self._skipped[i].items()}
        check_trainable(len(self._writer), fleet, window, min_history_points)
        head = ModelBundle(
            detectors={}, fleet=fleet, spec=self.spec, selector=self.selector,
            trained_from=window.start, trained_to=window.end,
            extra={"skipped": skipped, "holdout_from": window.holdout_start.isoformat()},
        )
        self._writer.close(fleet, head.fields())
        return TrainedModel(ModelBundle.open(self.bundle_dir), per_series, skipped,
                            self.pictures)

    def new_evaluation(self, bundle: ModelBundle) -> EvalSummary:
        """The new model on every tail: the batches' parts, and the fleet library (of
        ``bundle``) on the tails of the series it serves."""
        parts = list(self._evals)
        if self._fleet_tails:
            fleet_only = ModelBundle(detectors={}, fleet=bundle.fleet, spec=bundle.spec,
                                     selector=bundle.selector)
            with one_blas_thread():
                parts.append(evaluate_bundle(fleet_only, self._fleet_tails))
        return EvalSummary.merge(parts)

    def champion_evaluation(self) -> EvalSummary:
        """The champion on every tail (the batches' parts)."""
        return EvalSummary.merge(self._champion_evals)


#: how many series' held-out reconstructions the run's pictures show
PICTURE_SERIES = 4


def release(batch: TrainBatch) -> None:
    """Empty a batch's result once it is taken in. The result object itself outlives
    the flow's use of it: Prefect's finished thread-pool future stays in a reference
    cycle with the ``concurrent.futures.Future`` it wraps (which keeps the future's
    bound method as its done callback), and that cycle holds the task's final state and
    so this result until CPython's cyclic garbage collector happens to run. Emptied,
    the batch's detectors, held-out tails and samples go at once (about 1 MB per series
    at 2 d: without this the retrain's memory grew with every batch)."""
    batch.trained = []
    batch.holdouts = {}
    batch.fleet_sample = np.empty(0)
    batch.stretches = []
    batch.tails = {}
    batch.evaluation = batch.champion_evaluation = None
