"""WaveformDetector's saved state: what a model bundle holds for it, and how a bundle of
any format this version reads becomes a detector again.

``meta`` is JSON (the spec, scaler, per-scale tail scales, the structure, range and noise
views' settings); ``arrays`` are named float arrays (each library's centroids, the stored
quantiles of every calibration). Artifacts are arrays and JSON, never pickles. Parts added
after format 3 (the range and lost-noise views) are optional when loading: an older
bundle loads without them and scores as it did. (Moved out of :mod:`cricket.detector`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cricket.calibration import TailCalibrator
from cricket.config import DetectorSpec
from cricket.persistence import ModelFormatError
from cricket.series import RobustScaler
from cricket.shapes import ShapeLibrary

if TYPE_CHECKING:
    from cricket.detector import WaveformDetector

__all__ = ["detector_from_state", "detector_state"]


def detector_state(det: WaveformDetector) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a fitted detector: JSON-able metadata and named arrays."""
    libs, arrays = [], {}
    for k, (lib, cal) in enumerate(zip(det.libraries_, det.calibrators_, strict=True)):
        lib_meta, lib_arrays = lib.get_state()
        # "xi": the tail's shape in format 2, always 0 (an exponential tail).
        attr = det.attr_calibrators_[k]
        libs.append({"library": lib_meta, "beta": cal.beta, "xi": 0.0,
                     "attributed_beta": attr.beta})
        arrays.update({f"scale{k}.{name}": v for name, v in lib_arrays.items()})
        arrays[f"scale{k}.quantiles"] = cal.quantiles.copy()
        arrays[f"attributed{k}.quantiles"] = attr.quantiles.copy()
    structure = None
    if det.spread_calibrator_ is not None:
        structure = {"length": int(det.spread_len_), "beta": det.spread_calibrator_.beta}
        arrays["structure.quantiles"] = det.spread_calibrator_.quantiles.copy()
    noise = None
    if getattr(det, "noise_calibrator_", None) is not None:
        noise = {"length": det.segment_len, "beta": det.noise_calibrator_.beta}
        arrays["noise.quantiles"] = det.noise_calibrator_.quantiles.copy()
    meta = {
        "spec": det.spec.model_dump(mode="json"),
        "per_series_scaling": bool(det.per_series_scaling),
        "scales": libs,
        "structure": structure,
        # [low, high, count] of the values fitted on (scaled units); the range view
        "range": None if getattr(det, "range_", None) is None else list(det.range_),
        "noise": noise,
        "scaler": det.scaler_.get_state()[0],
        "threshold": det.threshold_,
        "n_train": det.n_train_,
    }
    return meta, arrays

def detector_from_state(
    cls: type[WaveformDetector], meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> WaveformDetector:
    """A detector of class ``cls`` from :func:`detector_state`'s output (every saved format
    this version reads: parts added later are optional)."""
    det = cls(DetectorSpec(**meta["spec"]), bool(meta.get("per_series_scaling", False)))
    det.libraries_, det.calibrators_, det._attr_calibrators = [], [], []

    def quantiles(name: str) -> np.ndarray:
        if name not in arrays:
            raise ModelFormatError(f"the saved state has no {name} array")
        return np.array(arrays[name], dtype=np.float64)

    for k, sc in enumerate(meta["scales"]):
        prefix = f"scale{k}."
        lib_arrays = {
            name[len(prefix) :]: v
            for name, v in arrays.items()
            if name.startswith(prefix) and name != prefix + "quantiles"
        }
        det.libraries_.append(ShapeLibrary.from_state(sc["library"], lib_arrays))
        det.calibrators_.append(TailCalibrator(quantiles(prefix + "quantiles"), sc["beta"]))
        det._attr_calibrators.append(
            TailCalibrator(quantiles(f"attributed{k}.quantiles"), sc["attributed_beta"])
        )
    structure = meta.get("structure")
    det.spread_calibrator_, det.spread_len_ = None, 0
    if structure is not None:
        det.spread_calibrator_ = TailCalibrator(
            quantiles("structure.quantiles"), structure["beta"]
        )
        det.spread_len_ = int(structure["length"])
    bounds = meta.get("range")  # absent from bundles saved before the range view
    det.range_ = None if bounds is None else (float(bounds[0]), float(bounds[1]),
                                              int(bounds[2]))
    noise = meta.get("noise")  # absent in a model saved before the lost-noise view
    det.noise_calibrator_ = None
    if noise is not None:
        det.noise_calibrator_ = TailCalibrator(quantiles("noise.quantiles"), noise["beta"])
    det.scaler_ = RobustScaler.from_state(meta["scaler"])
    det.threshold_ = float(meta["threshold"])
    det.n_train_ = int(meta["n_train"])
    return det
