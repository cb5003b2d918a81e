"""ModelBundle: every detector of one trained model, saved as JSON + arrays, never pickles.

A bundle holds one ``WaveformDetector`` per series (keyed by ``str(SeriesKey)``) and an
optional fleet detector that serves series without one of their own. On disk it is a
folder with exactly two files:

- ``bundle.json``: format version, spec, selector, training range, per-detector params
- ``arrays.npz``: every detector's arrays, names prefixed ``d<index>/``

Loading uses ``np.load(allow_pickle=False)``: a bundle cannot execute code when loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cricket.bundle_parts import (
    ARRAYS_NPZ,
    BUNDLE_JSON,
    EXPECTED_FILES,
    BundleWriter,
    LazyDetectors,
    build_detector,
)
from cricket.config import DetectorSpec, SeriesSelector
from cricket.errors import CricketError, CricketValueError
from cricket.persistence import ModelFormatError, read_npz

if TYPE_CHECKING:  # the detector module is imported lazily: keeps this module light
    from cricket.detector import WaveformDetector

FORMAT_VERSION = 1
FLEET = "fleet"
_RETRAIN = "retrain with this version of cricket (cricket retrain)"


__all__ = ["ModelBundle", "ModelFormatError", "UnknownSeriesError", "compact", "score_dataframe"]


class ModelMismatchError(CricketValueError):
    """Scoring asked for a resampling the model was not trained at."""


def check_scoring_selector(bundle: ModelBundle, selector: SeriesSelector, version: str = "") -> None:
    """Refuse to score at a step (or aggregate) other than the model's training step: the
    shapes of a 10 s series are not the shapes of its 60 s means, and scoring them raises
    false events instead of finding anything."""
    trained = bundle.selector
    which = f"version {version} of the model" if version else "the model"
    if selector.every != trained.every:
        raise ModelMismatchError(
            f"{which} was trained at a step of {_dur(trained.every)} but this run scores at "
            f"{_dur(selector.every)}: score with --every {_dur(trained.every)}, or retrain at "
            f"{_dur(selector.every)}"
        )
    if selector.aggregate != trained.aggregate:
        raise ModelMismatchError(
            f"{which} was trained on {trained.aggregate!r} per step but this run asks for "
            f"{selector.aggregate!r}: score with the aggregate it was trained on, or retrain"
        )


def _dur(td: Any) -> str:
    seconds = td.total_seconds()
    return f"{seconds:g}s" if seconds < 3600 or seconds % 3600 else f"{seconds / 3600:g}h"


class UnknownSeriesError(CricketError, KeyError):
    """No detector in the bundle can score the requested series."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else "unknown series"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass
class ModelBundle:
    """The trained model: per-series detectors, a fleet fallback, and how they were made."""

    detectors: dict[str, WaveformDetector]
    fleet: WaveformDetector | None
    spec: DetectorSpec
    selector: SeriesSelector
    trained_from: datetime | None = None
    trained_to: datetime | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fleet is not None and not self.fleet.per_series_scaling:
            raise CricketValueError(
                "the fleet detector serves series in their own units, so it must scale each "
                "one by itself: fit it as WaveformDetector(spec, per_series_scaling=True) on "
                "series scaled each by its own median / IQR"
            )

    @property
    def series_keys(self) -> list[str]:
        """Series with a detector of their own, sorted."""
        return sorted(self.detectors)

    def detector_for(self, key: object) -> tuple[WaveformDetector, str]:
        """The detector for ``key`` and where it came from: ``"series"`` or ``"fleet"``."""
        name = str(key)
        det = self.detectors.get(name)
        if det is not None:
            return det, "series"
        if self.fleet is not None:
            return self.fleet, FLEET
        raise UnknownSeriesError(
            f"the model has no detector for series {name!r} and no fleet detector to fall "
            f"back on ({len(self.detectors)} series known): retrain with this series in the "
            "selector, or enable the fleet detector"
        )

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> Path:
        """Write ``bundle.json`` and ``arrays.npz`` into ``directory`` (created). Returns it."""
        writer = BundleWriter(directory)
        try:
            for key in self.series_keys:
                writer.add(key, self.detectors[key])
        except BaseException:
            writer.abort()
            raise
        return writer.close(self.fleet, self.fields())

    def fields(self) -> dict[str, Any]:
        """``bundle.json``'s fields other than the detectors (for :class:`BundleWriter`)."""
        return {
            "format_version": FORMAT_VERSION,
            "spec": self.spec.model_dump(mode="json"),
            "selector": self.selector.model_dump(mode="json"),
            "trained_from": _iso(self.trained_from),
            "trained_to": _iso(self.trained_to),
            "created_at": _iso(self.created_at),
            "extra": self.extra,
        }

    @classmethod
    def load(cls, directory: str | Path) -> ModelBundle:
        """Read a bundle written by :meth:`save`. Never unpickles; refuses anything odd."""
        src, doc = _read_doc(directory)
        return cls._build(src, doc, read_npz(src / ARRAYS_NPZ, _RETRAIN))

    @classmethod
    def from_arrays(cls, directory: str | Path, arrays: Mapping[str, np.ndarray]) -> ModelBundle:
        """The bundle saved in ``directory`` with its ``arrays.npz`` already decoded into
        ``arrays`` (``cricket.bundle_cache``): checked as :meth:`load` checks it."""
        src, doc = _read_doc(directory)
        return cls._build(src, doc, arrays)

    @classmethod
    def _build(cls, src: Path, doc: Mapping[str, Any],
               arrays: Mapping[str, np.ndarray]) -> ModelBundle:
        """Detectors from ``doc`` and ``arrays``; every one checked (``detector_problem``)
        and every array used, or ModelFormatError."""
        try:
            used: set[str] = set()

            def get(full: str) -> np.ndarray | None:
                if full in arrays:
                    used.add(full)
                    return arrays[full]
                return None

            detectors = {str(e["key"]): build_detector(e, get) for e in doc["detectors"]}
            fleet = build_detector(doc["fleet"], get, fleet=True) if doc.get("fleet") else None
            bundle = cls._from_doc(doc, detectors, fleet)
        except ModelFormatError as exc:
            raise ModelFormatError(f"{src}: {exc}; {_RETRAIN}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(
                f"{src} holds a damaged or incompatible bundle ({type(exc).__name__}: {exc}); "
                f"{_RETRAIN}"
            ) from exc
        for key, det in [*detectors.items(), *([("fleet", fleet)] if fleet is not None else [])]:
            problem = detector_problem(det)
            if problem is not None:
                raise ModelFormatError(
                    f"{src} holds a damaged bundle: the detector of {key} {problem}; {_RETRAIN}"
                )
        extra_arrays = sorted(set(arrays) - used)
        if extra_arrays:
            raise ModelFormatError(
                f"{src / ARRAYS_NPZ} holds arrays no detector uses ({', '.join(extra_arrays[:5])}): "
                f"the bundle is damaged; {_RETRAIN}"
            )
        return bundle

    @classmethod
    def open(cls, directory: str | Path) -> ModelBundle:
        """The bundle saved in ``directory`` with its series' detectors read on demand
        (:class:`cricket.bundle_parts.LazyDetectors`), not all at once: for a retrain
        that compares or logs a fleet without holding it. The fleet detector is read at
        once. A damaged series detector raises ModelFormatError when it is asked for
        (``load`` checks every one up front). The folder must stay until the bundle is
        no longer used."""
        src, doc = _read_doc(directory)
        try:
            entries = list(doc["detectors"])
            fleet = None
            if doc.get("fleet"):
                with np.load(src / ARRAYS_NPZ, allow_pickle=False) as npz:
                    fleet = build_detector(
                        doc["fleet"], lambda n: npz[n] if n in npz.files else None, fleet=True
                    )
            detectors = LazyDetectors(src, entries, detector_problem, _RETRAIN)
            bundle = cls._from_doc(doc, detectors, fleet)
        except ModelFormatError as exc:
            raise ModelFormatError(f"{src}: {exc}; {_RETRAIN}") from None
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ModelFormatError(
                f"{src} holds a damaged or incompatible bundle ({type(exc).__name__}: {exc}); "
                f"{_RETRAIN}"
            ) from exc
        if fleet is not None and (problem := detector_problem(fleet)) is not None:
            raise ModelFormatError(
                f"{src} holds a damaged bundle: the detector of fleet {problem}; {_RETRAIN}"
            )
        return bundle

    @classmethod
    def _from_doc(cls, doc: Mapping[str, Any], detectors: Any, fleet: Any) -> ModelBundle:
        return cls(
            detectors=detectors,
            fleet=fleet,
            spec=DetectorSpec.model_validate(doc["spec"]),
            selector=SeriesSelector.model_validate(doc["selector"]),
            trained_from=_from_iso(doc.get("trained_from")),
            trained_to=_from_iso(doc.get("trained_to")),
            created_at=_from_iso(doc.get("created_at")) or datetime.now(UTC),
            extra=dict(doc.get("extra") or {}),
        )


def _read_doc(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    """The folder and its checked ``bundle.json`` (files present, JSON, format version)."""
    src = Path(directory)
    if not src.is_dir():
        raise ModelFormatError(f"{src} is not a model bundle folder (it does not exist)")
    found = {p.name for p in src.iterdir()}
    unexpected = sorted(found - EXPECTED_FILES)
    if unexpected:
        raise ModelFormatError(
            f"refusing to load {src}: unexpected file(s) {', '.join(unexpected)}; a bundle "
            f"holds only {BUNDLE_JSON} and {ARRAYS_NPZ} (never pickles): {_RETRAIN}"
        )
    missing = sorted(EXPECTED_FILES - found)
    if missing:
        raise ModelFormatError(
            f"{src} is not a complete model bundle: missing {', '.join(missing)}; {_RETRAIN}"
        )
    try:
        doc = json.loads((src / BUNDLE_JSON).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{src / BUNDLE_JSON} is not valid JSON ({exc}); {_RETRAIN}") from None
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{src / BUNDLE_JSON} does not hold a bundle; {_RETRAIN}")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"model bundle format version {version!r} found in {src}, this version of "
            f"cricket supports version {FORMAT_VERSION}: {_RETRAIN}"
        )
    return src, doc


def detector_problem(det: Any) -> str | None:
    """What makes a loaded detector unusable, in words, or None when it is sound: its
    threshold, scaler, shape libraries and calibration must be finite and consistent
    with its spec (a bundle edited into NaN thresholds or centroids would otherwise
    load and score nothing as anomalous)."""
    try:
        return _detector_problem(det)
    except (TypeError, ValueError, AttributeError) as exc:  # strings where numbers belong...
        return f"holds values that are not numbers ({type(exc).__name__}: {exc})"


def _detector_problem(det: Any) -> str | None:

    def finite(x: Any) -> bool:
        a = np.asarray(x, dtype=float)
        return a.size > 0 and bool(np.isfinite(a).all())

    if not finite(getattr(det, "threshold_", np.nan)):
        return f"has a non-finite threshold ({getattr(det, 'threshold_', None)!r})"
    scaler = getattr(det, "scaler_", None)
    if scaler is not None and not (
        finite(scaler.center_) and finite(scaler.scale_) and float(scaler.scale_) > 0
    ):
        return f"has a broken scaler (center {scaler.center_!r}, scale {scaler.scale_!r})"
    libraries = getattr(det, "libraries_", None) or []
    calibrators = getattr(det, "calibrators_", None) or []
    if not libraries or len(libraries) != len(calibrators):
        return f"has {len(libraries)} shape libraries and {len(calibrators)} calibrations"
    for k, (lib, cal) in enumerate(zip(libraries, calibrators, strict=True)):
        c = np.asarray(getattr(lib, "centroids_", np.empty((0, 0))))
        width = int(getattr(lib, "segment_len", c.shape[-1] if c.ndim else 0))
        if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] != width:
            return f"has scale {k} centroids of shape {c.shape}, expected (k, {width})"
        if not finite(c):
            return f"has non-finite centroids in scale {k}"
        q = np.asarray(cal.quantiles, dtype=float)
        if not finite(q) or not finite([cal.beta, getattr(cal, "xi", 0.0)]):
            return f"has a non-finite calibration in scale {k}"
    # the calibrations that settle events (attributed error per scale, lost structure)
    extra = list(getattr(det, "attr_calibrators_", None) or [])
    for name in ("spread_calibrator_", "noise_calibrator_"):
        if getattr(det, name, None) is not None:
            extra.append(getattr(det, name))
    for cal in extra:
        if not finite(cal.quantiles) or not finite([cal.beta]):
            return "has a non-finite event calibration (attributed error, structure or noise)"
    return None


SCORE_COLUMNS = ["series", "time", "value", "reconstruction", "error", "score", "anomalous"]


def score_dataframe(bundle: ModelBundle, frame: Any) -> Any:
    """Score rows of (series, time, value) with ``bundle``; one detector per series.

    Each series' rows are sorted by time and must be regular steps (NaN where a step is
    missing). Every series is scored by :meth:`WaveformDetector.score`, as the pipeline
    scores it (a fleet-served series in its own units). Returns a DataFrame with columns ``SCORE_COLUMNS`` plus ``detector``
    (``series`` or ``fleet``), in series then time order.
    """
    import pandas as pd

    from cricket.series import fill_short_gaps

    missing = [c for c in ("series", "time", "value") if c not in frame.columns]
    if missing:
        raise CricketValueError(
            f"the input has no column(s) {', '.join(missing)}: pass a DataFrame with columns "
            "series, time, value (one row per point)"
        )
    parts = []
    for name, group in frame.groupby("series", sort=True):
        group = group.sort_values("time", kind="stable")
        det, source = bundle.detector_for(str(name))
        values = pd.to_numeric(group["value"], errors="coerce").to_numpy(dtype=float)
        # Short gaps filled as the pipeline's prepare step fills them.
        sf = det.score(fill_short_gaps(values, bundle.spec.short_gap), context=0)
        parts.append(
            pd.DataFrame(
                {
                    "series": str(name),
                    "time": group["time"].to_numpy(),
                    "value": values,
                    "reconstruction": np.asarray(sf.reconstruction, dtype=float),
                    "error": np.asarray(sf.error, dtype=float),
                    "score": np.asarray(sf.score, dtype=float),
                    "anomalous": np.asarray(sf.anomalous, dtype=bool),
                    "detector": source,
                }
            )
        )
    if not parts:
        return pd.DataFrame({c: [] for c in [*SCORE_COLUMNS, "detector"]})
    return pd.concat(parts, ignore_index=True)


def compact(detector):  # noqa: ANN001, ANN201 - any detector with get_state/from_state
    """A copy of ``detector`` rebuilt from its saved state: the learned arrays only, none
    of the caches that scoring builds (a few MB per shape library). Scoring with it
    gives the same result (the state round trip is exact)."""
    meta, arrays = detector.get_state()
    return type(detector).from_state(meta, arrays)


def scoring_copy(detector):  # noqa: ANN001, ANN201 - a WaveformDetector (or alike)
    """A copy of ``detector`` to score one series with and drop: it shares the learned
    arrays (scoring never changes them) but not the search tables scoring builds on its
    shape libraries (a few MB each), so those are freed with the copy, as with
    :func:`compact`, without compact's state round trip (about 2 ms per detector, more
    than the search of an hour). Scoring with it gives what scoring with ``detector``
    gives."""
    copy = object.__new__(type(detector))
    copy.__dict__.update(detector.__dict__)
    libraries = detector.__dict__.get("libraries_")
    if libraries is not None:
        fresh = []
        for lib in libraries:
            c = object.__new__(type(lib))
            c.__dict__.update(lib.__dict__)
            c.__dict__.pop("_search_tables", None)
            fresh.append(c)
        copy.libraries_ = fresh
    return copy

