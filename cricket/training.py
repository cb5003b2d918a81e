"""Training: fit one series' detector, the run's metrics, and the fleet library.

The nightly retrain (``flows/retrain.py``) calls these through ``tasks/train.py``; a
notebook user can call them directly. The held-out tail of each series is split in
two: the first half calibrates the detector, the second half is only ever scored
(promotion, ``cricket.promotion``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cricket.config import DetectorSpec, SeriesSelector
from cricket.detector import WaveformDetector
from cricket.errors import CricketValueError
from cricket.model import ModelBundle
from cricket.series import RobustScaler, finite_count, prepare
from cricket.windows import TrainingWindow


@dataclass
class TrainedSeries:
    """What training one series produced. ``detector`` is None when the series had too
    little history; the fleet library then serves it."""

    key: str
    detector: WaveformDetector | None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def split_holdout(holdout: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The held-out tail is split in two: the first half calibrates the threshold, the
    second half is only ever scored (false alarms and probe recall for promotion)."""
    mid = len(holdout) // 2
    return holdout.iloc[:mid], holdout.iloc[mid:]


def train_series(
    key: str,
    train: pd.Series,
    holdout: pd.Series,
    spec: DetectorSpec,
    min_points: int,
) -> TrainedSeries:
    """Fit one series' detector on ``train``; calibrate on the first half of ``holdout``."""
    x = prepare(train, spec)
    calib, _ = split_holdout(prepare(holdout, spec))
    n = finite_count(x)
    if n < min_points or finite_count(calib) < 2 * spec.segment_len:
        return TrainedSeries(
            key,
            None,
            {"n_train": float(n)},
            reason=f"too little history ({n} points, need {min_points}): served by the fleet library",
        )
    det = WaveformDetector(spec).fit(x.to_numpy(), holdout=calib.to_numpy())
    return TrainedSeries(key, det, training_metrics(det, calib.to_numpy(), n))


def training_metrics(det: WaveformDetector, calib: np.ndarray, n_train: int) -> dict[str, float]:
    """What a reviewer wants per series: how well k-means fitted (inertia per training
    segment), how big held-out errors are, the threshold, how much of the held-out
    calibration half the detector would flag."""
    sf = det.score(calib)
    err = np.asarray(sf.error, dtype=float)
    err = err[np.isfinite(err)]
    lib = det.library_
    segments = max(int(getattr(lib, "n_train_segments_", 0) or 0), 1)
    metrics = {
        "n_train": float(n_train),
        "threshold": float(det.threshold_),
        "inertia_per_segment": float(getattr(lib, "inertia_", np.nan)) / segments,
        "heldout_flagged_fraction": float(np.mean(sf.anomalous)) if len(sf.anomalous) else 0.0,
    }
    if err.size:
        for q in (50, 99):
            metrics[f"heldout_error_p{q}"] = float(np.percentile(err, q))
    return metrics


def overall_metrics(per_series: dict[str, dict[str, float]]) -> dict[str, float]:
    """Means over the series that have each metric (the run's headline numbers)."""
    names = sorted({k for m in per_series.values() for k in m})
    out: dict[str, float] = {"series": float(len(per_series))}
    for name in names:
        vals = [m[name] for m in per_series.values() if name in m and np.isfinite(m[name])]
        if vals:
            out[f"mean_{name}"] = float(np.mean(vals))
    return out


def fleet_training_values(series: Iterable[pd.Series], spec: DetectorSpec, cap: int) -> np.ndarray:
    """Each series robustly scaled on its own, joined with NaN runs so that no segment
    straddles two series; at most ``cap`` points in all (evenly taken across series)."""
    parts = []
    sep = np.full(spec.short_gap + 1, np.nan)
    for s in series:
        v = s.to_numpy(dtype=float)
        if finite_count(v) < 2 * spec.segment_len:
            continue
        scaler = RobustScaler().fit(v[np.isfinite(v)])
        parts.append(scaler.transform(v))
    if not parts:
        return np.array([], dtype=float)
    per = max(cap // len(parts), 2 * spec.segment_len)
    joined = []
    for p in parts:
        joined.append(p[-per:])
        joined.append(sep)
    return np.concatenate(joined[:-1])


def train_fleet(values: np.ndarray, spec: DetectorSpec) -> WaveformDetector | None:
    """The fleet library: one detector over many series, each robustly scaled by itself
    (``fleet_training_values``); it scales each series it scores the same way."""
    if finite_count(values) < 8 * spec.segment_len:
        return None
    return WaveformDetector(spec, per_series_scaling=True).fit(values)


# ---------------------------------------------------------------- the model of a run


@dataclass
class TrainedModel:
    """What one retrain produced: the bundle, each series' metrics, why series were
    left to the fleet library, and each series' held-out tail."""

    bundle: ModelBundle
    per_series: dict[str, dict[str, float]]
    skipped: dict[str, str]
    holdouts: dict[str, pd.Series]

    def evaluation_tails(self) -> dict[str, pd.Series]:
        """The second half of each held-out tail (:func:`evaluation_tails`)."""
        return evaluation_tails(self.holdouts, self.bundle.spec)


def evaluation_tails(holdouts: Mapping[str, pd.Series], spec: DetectorSpec) -> dict[str, pd.Series]:
    """The second half of each held-out tail, prepared: the first half calibrated the
    detectors; this half is only scored, by the new version and the champion alike."""
    return {k: split_holdout(prepare(v, spec))[1] for k, v in holdouts.items()}


class TailStore(Mapping[str, np.ndarray]):
    """Held-out evaluation tails kept on disk, batch by batch, instead of in memory: a
    read-only mapping ``series key -> values`` (read on access). ``add`` writes one
    batch's tails as one ``.npy`` file in ``directory`` (which must exist)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._where: dict[str, tuple[Path, int, int]] = {}

    def add(self, tails: Mapping[str, np.ndarray]) -> None:
        if not tails:
            return
        path = self.directory / f"tails-{len(list(self.directory.glob('tails-*.npy')))}.npy"
        arrays = [np.asarray(v, dtype=float) for v in tails.values()]
        np.save(path, np.concatenate(arrays), allow_pickle=False)
        start = 0
        for key, arr in zip(tails, arrays, strict=True):
            self._where[str(key)] = (path, start, start + len(arr))
            start += len(arr)

    def __getitem__(self, key: str) -> np.ndarray:
        path, a, b = self._where[str(key)]
        return np.array(np.load(path, mmap_mode="r", allow_pickle=False)[a:b])

    def __contains__(self, key: object) -> bool:
        return str(key) in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def assemble_model(
    trained: list[TrainedSeries],
    holdouts: dict[str, pd.Series],
    fleet: WaveformDetector | None,
    spec: DetectorSpec,
    selector: SeriesSelector,
    window: TrainingWindow,
    min_history_points: int,
) -> TrainedModel:
    """The bundle of a retrain from its trained series and fleet library; a clear error
    when no series had enough data and there is no fleet library either."""
    detectors = {t.key: t.detector for t in trained if t.detector is not None}
    skipped = {t.key: t.reason for t in trained if t.detector is None}
    check_trainable(len(detectors), fleet, window, min_history_points)
    bundle = ModelBundle(
        detectors=detectors,
        fleet=fleet,
        spec=spec,
        selector=selector,
        trained_from=window.start,
        trained_to=window.end,
        extra={"skipped": skipped, "holdout_from": window.holdout_start.isoformat()},
    )
    return TrainedModel(bundle, {t.key: t.metrics for t in trained}, skipped, holdouts)


def check_trainable(
    n_detectors: int, fleet: WaveformDetector | None, window: TrainingWindow,
    min_history_points: int,
) -> None:
    """A clear error when no series had enough data and there is no fleet library either."""
    if not n_detectors and fleet is None:
        raise CricketValueError(
            f"no series had enough data to train on between {window.start:%Y-%m-%d %H:%M} "
            f"and {window.holdout_start:%Y-%m-%d %H:%M} UTC (need {min_history_points} "
            "points): write more history or lower min_history_points"
        )


def no_series_error(selector: SeriesSelector, database: str) -> CricketValueError:
    """The error for a selector that matched nothing: there is nothing to train."""
    return CricketValueError(
        f"the selector matched no series (measurement {selector.measurement!r}, "
        f"field {selector.field!r}, tags {selector.tags}) in database {database!r}: "
        "check the selector or write data first (cricket synth --write)"
    )
