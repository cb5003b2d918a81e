"""Several fields of one device, judged together: the point model in the pipeline.

A ``PointSelector`` names one measurement and several fields; the source reads each
field as its own series, and :func:`align` joins them per device (the group-by tags)
and step into one feature vector per row. A ``PointModel`` scales each feature by its
own median/IQR (the scaling is part of the model), fits a :class:`PointDetector`
(k-means; a row's distance to the nearest centroid is its anomaly signal) and sets its
threshold from the training distances. Scoring names the field that contributed most:
the feature furthest (in scaled units) from the nearest centroid.

One model per device (``PointBundle``): devices of a fleet often run at different
operating points, and a per-device model is what makes "each field in range, but not
together" visible for each one. Core: no I/O, plotting or orchestration.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from cricket.config import Aggregate, SeriesSelector, parse_duration
from cricket.errors import CricketValueError
from cricket.points import PointDetector
from cricket.scoring import events_from_mask
from cricket.series import RobustScaler, SeriesKey

FORMAT_VERSION = 1


class PointSpec(BaseModel):
    """Parameters of the point model (its own defaults, apart from ``DetectorSpec``)."""

    n_clusters: int = Field(8, ge=1, description="centroids per device (k of k-means)")
    percentile: float = Field(
        99.5, ge=0, le=100, description="percentile of the training distances"
    )
    threshold_margin: float = Field(
        1.5, ge=1, description="the threshold is the percentile times this margin"
    )
    min_event_len: int = Field(2, ge=1, description="steps an event must last")
    min_event_gap: int = Field(3, ge=0, description="events closer than this many steps merge")
    min_rows: int = Field(100, ge=2, description="complete rows a device needs to be trained")
    random_state: int | None = 0


class PointSelector(BaseModel):
    """One measurement, several fields, aligned per step and device (the group-by tags)."""

    measurement: str = "psu"
    fields: list[str] = Field(default_factory=lambda: ["load", "power", "temp"])
    tags: dict[str, str] = Field(default_factory=dict)
    group_by: list[str] = Field(default_factory=lambda: ["host"])
    every: timedelta = timedelta(minutes=5)
    aggregate: Aggregate = "mean"

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, v: object) -> timedelta:
        return parse_duration(v)  # type: ignore[arg-type]

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError(
                f"a point selector needs at least two distinct fields (got {v}): name the "
                "fields of one device to judge together"
            )
        return list(v)

    def field_selector(self, name: str) -> SeriesSelector:
        """The waveform selector that reads one of the fields."""
        return SeriesSelector(
            measurement=self.measurement, field=name, tags=self.tags, group_by=self.group_by,
            every=self.every, aggregate=self.aggregate,
        )

    def device_key(self, tags: Mapping[str, str]) -> SeriesKey:
        """The key results are written under: ``measurement.f1+f2+...{tags}``."""
        return SeriesKey.make(self.measurement, "+".join(self.fields), dict(tags))


def align(
    selector: PointSelector, per_field: Mapping[str, Mapping[SeriesKey, pd.Series]]
) -> dict[SeriesKey, pd.DataFrame]:
    """Join the fields' series into one frame per device (columns = ``selector.fields``,
    outer join on the step; a missing field is a NaN column). Devices are told apart by
    the group-by tags; a device missing a field entirely keeps an all-NaN column."""
    devices: dict[tuple[tuple[str, str], ...], dict[str, pd.Series]] = {}
    for name in selector.fields:
        for key, s in per_field.get(name, {}).items():
            devices.setdefault(key.tags, {})[name] = s
    out: dict[SeriesKey, pd.DataFrame] = {}
    for tags, cols in sorted(devices.items()):
        frame = pd.DataFrame(cols).reindex(columns=selector.fields).astype(np.float64)
        out[selector.device_key(dict(tags))] = frame.sort_index()
    return out


#: centroids one labelled-normal stretch may add to one device's model at most
MAX_NORMAL_CENTROIDS = 64


class PointModel:
    """Per-feature robust scaling + a PointDetector, for one device."""

    def __init__(self, fields: list[str], spec: PointSpec | None = None) -> None:
        self.fields = list(fields)
        self.spec = spec or PointSpec()

    # ---------------------------------------------------------------- training
    def fit(self, frame: pd.DataFrame) -> PointModel:
        x = self._complete(frame)
        if len(x) < self.spec.min_rows:
            raise CricketValueError(
                f"{len(x)} complete row(s) (every field present) are fewer than min_rows="
                f"{self.spec.min_rows}: train on a longer window"
            )
        self.center_ = np.array([RobustScaler().fit(x[:, j]).center_ for j in range(x.shape[1])])
        self.scale_ = np.array([RobustScaler().fit(x[:, j]).scale_ for j in range(x.shape[1])])
        self.detector_ = PointDetector(
            n_clusters=min(self.spec.n_clusters, len(x)), percentile=self.spec.percentile,
            random_state=self.spec.random_state,
        ).fit(self._scaled(x))
        self.threshold_ = float(self.detector_.threshold_ * self.spec.threshold_margin)
        self.n_train_ = int(len(x))
        return self

    def _complete(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.fields if f not in frame.columns]
        if missing:
            raise CricketValueError(f"the frame lacks field(s) {missing}: select them")
        x = frame[self.fields].to_numpy(dtype=np.float64)
        return x[np.isfinite(x).all(axis=1)]

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        return (x - self.center_) / self.scale_

    # ----------------------------------------------------------------- scoring
    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per step: ``distance`` (scaled units), ``score`` (0-100, 50 at the
        threshold), ``anomalous``, ``contributor`` (the field furthest from the nearest
        centroid), and for that field ``value`` and ``reconstruction`` (the centroid's
        value, in the field's units) and ``error`` (their absolute difference).
        Rows missing a field are not judged (NaN distance, not anomalous)."""
        if not hasattr(self, "detector_"):
            raise CricketValueError("this PointModel is not fitted: run the point retrain first")
        x = frame.reindex(columns=self.fields).to_numpy(dtype=np.float64)
        ok = np.isfinite(x).all(axis=1)
        n = len(x)
        dist = np.full(n, np.nan)
        contrib = np.full(n, -1, dtype=np.int64)
        value = np.full(n, np.nan)
        recon = np.full(n, np.nan)
        if ok.any():
            z = self._scaled(x[ok])
            c = self.detector_.cluster_centers_
            nearest, dist[ok] = self._nearest(z)
            diff = np.abs(z - c[nearest])
            j = diff.argmax(axis=1)
            contrib[ok] = j
            value[ok] = x[ok][np.arange(len(z)), j]
            recon[ok] = c[nearest, j] * self.scale_[j] + self.center_[j]
        score = np.clip(50.0 * dist / self.threshold_, 0.0, 100.0)
        anomalous = ok & (dist > self.threshold_)
        names = np.array([*self.fields, ""], dtype=object)
        return pd.DataFrame(
            {
                "value": value, "reconstruction": recon, "error": np.abs(value - recon),
                "score": score, "distance": dist, "anomalous": anomalous,
                "contributor": names[contrib],
            },
            index=frame.index,
        )

    def learn_normal(self, frame: pd.DataFrame, max_new: int = MAX_NORMAL_CENTROIDS) -> int:
        """People said the rows of ``frame`` are normal for this device: add the ones the
        model flags as centroids of their own (greedily, the furthest first, until every
        row is within the threshold or ``max_new`` were added), so the same combination
        of fields no longer fires. The threshold is not moved. Returns centroids added."""
        if not hasattr(self, "detector_"):
            raise CricketValueError("this PointModel is not fitted: run the point retrain first")
        x = frame.reindex(columns=self.fields).to_numpy(dtype=np.float64)
        z = self._scaled(x[np.isfinite(x).all(axis=1)])
        if not len(z):
            return 0
        c = self.detector_.cluster_centers_
        _, dist = self._nearest(z)
        new = []
        while len(new) < max_new:
            worst = int(np.argmax(dist))
            if dist[worst] <= self.threshold_:
                break
            new.append(z[worst].copy())
            dist = np.minimum(dist, np.sqrt(((z - z[worst]) ** 2).sum(axis=1)))
        if new:
            self.detector_.cluster_centers_ = np.vstack([c, np.asarray(new)])
            self.detector_.n_clusters = len(self.detector_.cluster_centers_)
        return len(new)

    def nearest_centroid(self, row: np.ndarray) -> np.ndarray:
        """The nearest centroid of one feature vector, in the fields' own units."""
        z = self._scaled(np.asarray(row, dtype=np.float64)[None, :])
        k = int(self._nearest(z)[0][0])
        return self.detector_.cluster_centers_[k] * self.scale_ + self.center_

    def _nearest(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For scaled rows ``z``: the index of each one's nearest centroid and the
        distance to it."""
        c = self.detector_.cluster_centers_
        d2 = ((z[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        nearest = d2.argmin(axis=1)
        return nearest, np.sqrt(d2[np.arange(len(z)), nearest])

    # ------------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        return {
            "kind": "PointModel", "format_version": FORMAT_VERSION, "fields": self.fields,
            "spec": self.spec.model_dump(), "center": self.center_.tolist(),
            "scale": self.scale_.tolist(), "threshold": self.threshold_,
            "n_train": self.n_train_,
            "centers": self.detector_.cluster_centers_.tolist(),
            "detector_threshold": self.detector_.threshold_,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PointModel:
        if state.get("kind") != "PointModel" or state.get("format_version") != FORMAT_VERSION:
            raise CricketValueError(
                f"not a point model of format {FORMAT_VERSION} (kind={state.get('kind')!r}, "
                f"format_version={state.get('format_version')!r}): retrain the point model"
            )
        m = cls(list(state["fields"]), PointSpec(**state["spec"]))
        m.center_ = np.asarray(state["center"], dtype=np.float64)
        m.scale_ = np.asarray(state["scale"], dtype=np.float64)
        m.threshold_ = float(state["threshold"])
        m.n_train_ = int(state["n_train"])
        det = PointDetector(n_clusters=len(state["centers"]), percentile=m.spec.percentile,
                            random_state=m.spec.random_state)
        det.cluster_centers_ = np.asarray(state["centers"], dtype=np.float64)
        det.n_features_in_ = len(m.fields)
        det.threshold_ = float(state["detector_threshold"])
        m.detector_ = det
        return m


def point_events(scored: pd.DataFrame, spec: PointSpec, step: pd.Timedelta) -> pd.DataFrame:
    """Events (``start``, ``end`` exclusive, ``peak``, ``mean``, ``duration_s``,
    ``contributor``: the field most often furthest from the centroid in the event)."""
    cols = ["start", "end", "peak", "mean", "duration_s", "contributor"]
    if scored.empty:
        return pd.DataFrame(columns=cols)
    mask = scored["anomalous"].to_numpy(dtype=bool)
    ev = events_from_mask(mask, scored["score"].fillna(0.0).to_numpy(), spec.min_event_gap)
    rows = []
    for s, e, peak, mean in ev[["start_idx", "end_idx", "peak", "mean"]].itertuples(index=False):
        span = scored.iloc[int(s) : int(e) + 1]
        if int(span["anomalous"].sum()) < spec.min_event_len:
            continue
        who = Counter(span.loc[span["anomalous"], "contributor"]).most_common(1)[0][0]
        start, end = span.index[0], span.index[-1] + step
        rows.append({"start": start, "end": end, "peak": float(peak), "mean": float(mean),
                     "duration_s": (end - start).total_seconds(), "contributor": who})
    return pd.DataFrame(rows, columns=cols)


class PointBundle:
    """The point models of a fleet, one per device, with the selector they read."""

    def __init__(self, selector: PointSelector, spec: PointSpec,
                 models: dict[SeriesKey, PointModel]) -> None:
        self.selector, self.spec, self.models = selector, spec, models

    @classmethod
    def train(cls, selector: PointSelector, spec: PointSpec,
              frames: Mapping[SeriesKey, pd.DataFrame]) -> tuple[PointBundle, dict[str, str]]:
        """Fit a model per device; returns the bundle and the devices skipped (why)."""
        models, skipped = {}, {}
        for key, frame in frames.items():
            try:
                models[key] = PointModel(selector.fields, spec).fit(frame)
            except CricketValueError as exc:
                skipped[str(key)] = str(exc)
        if not models:
            raise CricketValueError(
                f"no device of {selector.measurement} {selector.fields} could be trained "
                f"({len(skipped)} skipped): write data for those fields or widen the window"
            )
        return cls(selector, spec, models), skipped

    def learn_normal(self, stretches: Iterable[tuple[SeriesKey, pd.DataFrame]]) -> int:
        """:meth:`PointModel.learn_normal` for each (device, rows people labelled normal)
        of a device in the bundle; returns the centroids added in all."""
        return sum(self.models[key].learn_normal(rows) for key, rows in stretches
                   if key in self.models)

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        doc = {"kind": "PointBundle", "format_version": FORMAT_VERSION,
               "selector": json.loads(self.selector.model_dump_json()),
               "spec": self.spec.model_dump(),
               "models": {str(k): m.get_state() for k, m in self.models.items()}}
        path = folder / "points.json"
        path.write_text(json.dumps(doc))
        return path

    @classmethod
    def load(cls, folder: Path) -> PointBundle:
        path = Path(folder) / "points.json"
        if not path.exists():
            raise CricketValueError(f"{path} does not exist: this is not a point model")
        doc = json.loads(path.read_text())
        if doc.get("kind") != "PointBundle" or doc.get("format_version") != FORMAT_VERSION:
            raise CricketValueError(f"{path} is not a point bundle of format {FORMAT_VERSION}")
        models = {SeriesKey.parse(k): PointModel.from_state(s) for k, s in doc["models"].items()}
        return cls(PointSelector(**doc["selector"]), PointSpec(**doc["spec"]), models)
