"""Train: extract, prepare and fit a batch of series; fit the fleet library; assemble
the model of the run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from cricket.tasks.common import CPU_TASK, IO_BACKOFF, IO_RETRIES, retry_if_retryable
from cricket.tasks.extract import read_window
from prefect import get_run_logger, task

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
from cricket.model import compact
from cricket.series import SeriesKey
from cricket.training import (
    TrainedModel,
    TrainedSeries,
    assemble_model,
    fleet_training_values,
    train_fleet,
    train_series,
)
from cricket.windows import TrainingWindow


@dataclass
class TrainBatch:
    trained: list[TrainedSeries]
    holdouts: dict[str, pd.Series]
    fleet_sample: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    #: the labelled stretches of the batch's series (with context), for the promotion check
    stretches: list[LabelledStretch] = field(default_factory=list)
    shapes_learned: int = 0


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
) -> TrainBatch:
    """Fit one detector per series of ``keys`` on the window's history; its held-out
    tail is returned for calibration and evaluation. ``labels`` (people's answers):
    labelled anomalies are kept out of training and calibration, labelled-normal
    stretches out of calibration and learned as shapes."""
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
    t2 = time.perf_counter()
    if learned:
        log.info("learned %d shapes from labelled-normal stretches", learned)
    return TrainBatch(trained, holdouts, sample, {"extract": t1 - t0, "fit": t2 - t1},
                      stretches, learned)


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


def assemble(
    batches: list[TrainBatch],
    spec: DetectorSpec,
    selector: SeriesSelector,
    window: TrainingWindow,
    min_history_points: int,
) -> TrainedModel:
    """The run's model from its trained batches (in batch order, so the fleet sample is
    the same every run): the fleet library over every batch's sample, then the bundle.
    Runs in the flow; the fleet fit is a task."""
    fleet = fit_fleet([b.fleet_sample for b in batches], spec)
    return assemble_model(
        [t for b in batches for t in b.trained],
        {k: v for b in batches for k, v in b.holdouts.items()},
        fleet,
        spec,
        selector,
        window,
        min_history_points,
    )
