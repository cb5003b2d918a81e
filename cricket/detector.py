"""WaveformDetector: the per-series detector the pipeline and the NAB evaluation use.

It wraps the shape library (``cricket.shapes.ShapeLibrary``) with what real metrics
need: robust scaling kept in the model, gap handling, a held-out threshold and a
calibrated 0-100 score so that one threshold works across series.

CONTRACT (other modules rely on exactly these names):

    det = WaveformDetector(spec: DetectorSpec | None = None)
    det.fit(values: np.ndarray | pd.Series, holdout: np.ndarray | pd.Series | None = None) -> self
        values: 1-D float, regular steps, NaN where a step is missing. When ``holdout``
        is None the last ``spec.holdout_fraction`` of ``values`` is kept back (never
        used for k-means) to calibrate the score and set the threshold.
    det.score(values, context: int = 0) -> ScoreFrame
        values: 1-D float (NaN allowed). The first ``context`` points only give the
        segments their left context; results cover values[context:].
    det.threshold_          float, on the 0-100 score scale (a point is anomalous when
                            score >= threshold_)
    det.n_train_            int, points used for fitting
    det.get_state() -> tuple[dict, dict[str, np.ndarray]]   JSON-safe params + arrays
    WaveformDetector.from_state(meta, arrays) -> WaveformDetector   (exact round trip)

    ScoreFrame: a dataclass of equal-length numpy arrays
        value, reconstruction (original units), error (>= 0, original units),
        score (0-100, NaN where unscorable), anomalous (bool)
        and ``events(min_gap)`` -> pandas DataFrame with columns
        start_idx, end_idx (inclusive), peak, mean   (indices into the arrays)

How the score is made
---------------------
1. Prepare: short gaps (``spec.short_gap`` steps) are interpolated, longer ones split
   the series into pieces; segments never straddle a gap. Values are scaled robustly
   (median / IQR of the training data, kept in the model).
2. Error: for every point, the distance of the windowed segment that *ends* at that
   point to its nearest library shape. It uses only the point and the points before
   it, so scores are causal: the score of a point never changes when later data
   arrives (the hourly pipeline and the NAB evaluation see the same numbers).
3. Calibration: the held-out errors (data k-means never saw) give an error
   distribution per series; an error ``e`` becomes a surprise ``s = -log10 P(E >= e)``
   (empirical below the 90th percentile, an exponential tail fitted to the top 10 %
   above it, so errors beyond anything held out still rank). The 0-100 score is
   ``100 * s / (s + 3)``: a one-in-a-thousand error scores 50 on every series,
   whatever its units or noise, so one threshold fits all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cricket.config import DetectorSpec
from cricket.scoring import events_from_mask
from cricket.segments import window
from cricket.series import RobustScaler, fill_short_gaps, split_at_gaps

FORMAT_VERSION = 1
SURPRISE_HALF = 3.0  # surprise (-log10 p) that maps to a score of 50
TAIL_FROM = 0.9  # quantile above which the exponential tail is fitted
_N_QUANTILES = 257  # stored quantiles of the held-out errors


def surprise_to_score(s: np.ndarray | float) -> np.ndarray:
    """Map a surprise ``-log10 p`` (>= 0) onto 0-100: ``100 s / (s + 3)``."""
    s = np.maximum(np.asarray(s, dtype=np.float64), 0.0)
    with np.errstate(invalid="ignore"):
        out = 100.0 * s / (s + SURPRISE_HALF)
    # An error beyond anything ever seen has infinite surprise: the top of the scale,
    # not inf/inf = NaN (which would leave the largest anomalies unflagged).
    return np.where(np.isposinf(s), 100.0, out)


def score_to_surprise(score: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`surprise_to_score`."""
    sc = np.asarray(score, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return SURPRISE_HALF * sc / (100.0 - sc)


class TailCalibrator:
    """Turns errors into surprise ``-log10 P(E >= e)`` from a sample of held-out errors.

    Below the ``TAIL_FROM`` quantile the survival function is read from stored
    quantiles; above it an exponential tail (mean excess ``beta``) extrapolates.
    """

    def __init__(self, quantiles: np.ndarray, beta: float) -> None:
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        self.beta = float(beta)

    @classmethod
    def fit(cls, errors: np.ndarray, min_beta: float) -> TailCalibrator:
        e = np.asarray(errors, dtype=np.float64)
        e = e[np.isfinite(e)]
        if e.size == 0:
            raise ValueError("no held-out error to calibrate the score: give more data")
        q = np.quantile(e, np.linspace(0.0, 1.0, _N_QUANTILES))
        u = float(np.quantile(e, TAIL_FROM))
        excess = e[e > u] - u
        beta = float(excess.mean()) if excess.size else 0.0
        return cls(q, max(beta, float(min_beta)))

    def surprise(self, errors: np.ndarray) -> np.ndarray:
        e = np.asarray(errors, dtype=np.float64)
        probs = np.linspace(0.0, 1.0, _N_QUANTILES)
        u = float(np.interp(TAIL_FROM, probs, self.quantiles))
        # Empirical part: P(E >= e) = 1 - F(e), F interpolated between stored quantiles.
        # np.interp needs increasing x: ties in the quantiles are resolved to the top.
        q = np.maximum.accumulate(self.quantiles)
        cdf = np.interp(e, q, probs, left=0.0, right=1.0)
        surv = np.clip(1.0 - cdf, 1.0 - TAIL_FROM, 1.0)
        tail = (1.0 - TAIL_FROM) * np.exp(-(np.maximum(e - u, 0.0)) / self.beta)
        p = np.where(e > u, tail, surv)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = -np.log10(p)
        return np.where(np.isnan(e), np.nan, out)


@dataclass
class ScoreFrame:
    """Per-point results of :meth:`WaveformDetector.score` (equal-length arrays)."""

    value: np.ndarray
    reconstruction: np.ndarray
    error: np.ndarray
    score: np.ndarray
    anomalous: np.ndarray

    def __len__(self) -> int:
        return len(self.value)

    def events(self, min_gap: int = 0) -> pd.DataFrame:
        """Anomalous intervals: start_idx, end_idx (inclusive), peak, mean score."""
        return events_from_mask(self.anomalous, self.score, min_gap)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "value": self.value,
                "reconstruction": self.reconstruction,
                "error": self.error,
                "score": self.score,
                "anomalous": self.anomalous,
            }
        )


def _as_float_1d(values: Any, what: str) -> np.ndarray:
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    try:
        x = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what} must be numbers (got {np.asarray(values).dtype}): convert them first"
        ) from exc
    if x.ndim != 1:
        raise ValueError(f"{what} must be 1-D (got shape {x.shape})")
    x[np.isinf(x)] = np.nan
    return x


class WaveformDetector:
    """Shape-library anomaly detector for one series with a calibrated 0-100 score."""

    def __init__(self, spec: DetectorSpec | None = None) -> None:
        self.spec = spec or DetectorSpec()

    # ------------------------------------------------------------------ helpers
    @property
    def segment_len(self) -> int:
        return int(self.spec.segment_len)

    def _pieces(self, scaled: np.ndarray) -> list[tuple[int, np.ndarray]]:
        return split_at_gaps(fill_short_gaps(scaled, self.spec.short_gap), self.segment_len)

    def _trailing_error(self, scaled: np.ndarray) -> np.ndarray:
        """Distance of the windowed segment ending at each point to its nearest shape
        (scaled units); NaN where no full segment ends (start of a piece, gaps)."""
        n = self.segment_len
        out = np.full(len(scaled), np.nan)
        w = window(n)
        for start, piece in self._pieces(scaled):
            segs = np.lib.stride_tricks.sliding_window_view(piece, n) * w
            _, dist = self.library_.nearest(segs)
            out[start + n - 1 : start + len(piece)] = dist
        return out

    def _reconstruct(self, scaled: np.ndarray) -> np.ndarray:
        rec = np.full(len(scaled), np.nan)
        for start, piece in self._pieces(scaled):
            rec[start : start + len(piece)] = self.library_.reconstruct(piece)
        return rec

    # ---------------------------------------------------------------------- fit
    def fit(self, values: Any, holdout: Any = None) -> WaveformDetector:
        """Learn the shapes from ``values`` and calibrate the score on held-out data."""
        from cricket.shapes import ShapeLibrary

        x = _as_float_1d(values, "values")
        n = self.segment_len
        if holdout is None:
            cut = int(round(len(x) * (1 - self.spec.holdout_fraction)))
            train, held = x[:cut], x[cut:]
            held_context = x[max(cut - n + 1, 0) : cut]
        else:
            train = x
            held = _as_float_1d(holdout, "holdout")
            held_context = np.empty(0)
        if np.count_nonzero(~np.isnan(train)) < 2 * n:
            raise ValueError(
                f"{np.count_nonzero(~np.isnan(train))} training points are too few for "
                f"segments of {n}: give at least {2 * n + int(2 * n * self.spec.holdout_fraction)}"
                " points of history"
            )
        self.scaler_ = RobustScaler().fit(train)
        scaled = self.scaler_.transform(train)
        pieces = [p for _, p in self._pieces(scaled)]
        if not pieces:
            raise ValueError(
                f"no gap-free stretch of {n} points in the training data: fill gaps or use a "
                "shorter segment_len"
            )
        spec = self.spec
        self.library_ = ShapeLibrary(
            segment_len=n,
            train_slide=spec.train_slide,
            n_clusters=spec.n_clusters,
            n_init=spec.n_init,
            random_state=spec.random_state,
            algorithm=spec.algorithm,
            holdout_fraction=0.0,
        )
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fewer distinct segments than clusters is fine
            self.library_.fit(pieces)
        held_err = self._trailing_error(self.scaler_.transform(np.r_[held_context, held]))[
            len(held_context) :
        ]
        if np.count_nonzero(~np.isnan(held_err)) < 8:
            # Too little held-out data: fall back to the training errors (optimistic).
            held_err = self._trailing_error(scaled)
        self.calibrator_ = TailCalibrator.fit(held_err, min_beta=0.01)
        self.threshold_ = float(surprise_to_score(-math.log10(1.0 - spec.threshold_quantile)))
        self.n_train_ = int(np.count_nonzero(~np.isnan(train)))
        return self

    # -------------------------------------------------------------------- score
    def _check_fitted(self) -> None:
        if not hasattr(self, "library_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "this WaveformDetector is not fitted yet: call fit(values) first, or load one "
                "with WaveformDetector.from_state(meta, arrays)"
            )

    def score(self, values: Any, context: int = 0) -> ScoreFrame:
        """Score ``values[context:]``; the first ``context`` points are history only."""
        self._check_fitted()
        x = _as_float_1d(values, "values")
        if not 0 <= context <= len(x):
            raise ValueError(f"context must be in [0, {len(x)}] (got {context})")
        scaled = self.scaler_.transform(x)
        err = self._trailing_error(scaled)
        surprise = self.calibrator_.surprise(err)
        score = surprise_to_score(surprise)
        score[np.isnan(err)] = np.nan
        rec = self.scaler_.inverse_transform(self._reconstruct(scaled))
        sl = slice(context, None)
        with np.errstate(invalid="ignore"):
            anomalous = score >= self.threshold_
        return ScoreFrame(
            value=x[sl],
            reconstruction=rec[sl],
            error=np.abs(x - rec)[sl],
            score=score[sl],
            anomalous=anomalous[sl] & ~np.isnan(score[sl]),
        )

    # -------------------------------------------------------------------- state
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-safe parameters and scalars, and the arrays (exact round trip)."""
        self._check_fitted()
        lib_meta, lib_arrays = self.library_.get_state()
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "WaveformDetector",
            "spec": self.spec.model_dump(mode="json"),
            "library": lib_meta,
            "scaler": self.scaler_.get_state()[0],
            "calibrator": {"beta": self.calibrator_.beta},
            "threshold": self.threshold_,
            "n_train": self.n_train_,
        }
        arrays = {f"library.{k}": v for k, v in lib_arrays.items()}
        arrays["calibrator.quantiles"] = self.calibrator_.quantiles.copy()
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> WaveformDetector:
        """Inverse of :meth:`get_state`."""
        from cricket.shapes import ShapeLibrary

        if meta.get("kind") != "WaveformDetector":
            raise ValueError(f"state is for a {meta.get('kind')!r}, not a WaveformDetector")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"detector state has format version {meta.get('format_version')!r}; this "
                f"Cricket reads version {FORMAT_VERSION}: retrain the model"
            )
        det = cls(DetectorSpec(**meta["spec"]))
        lib_arrays = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("library.")}
        det.library_ = ShapeLibrary.from_state(meta["library"], lib_arrays)
        det.scaler_ = RobustScaler.from_state(meta["scaler"])
        det.calibrator_ = TailCalibrator(
            np.array(arrays["calibrator.quantiles"], dtype=np.float64), meta["calibrator"]["beta"]
        )
        det.threshold_ = float(meta["threshold"])
        det.n_train_ = int(meta["n_train"])
        return det


def alert_scores(score: np.ndarray, hold: int | None = None) -> np.ndarray:
    """Fire once per anomaly: keep a point's score only where it rises above every
    score of the ``hold`` points before it, else 0 (NaN stays NaN).

    Causal (uses only earlier points) and independent of any threshold: for every
    threshold, a stretch of high scores raises at most one alert per rise, instead of
    one per point. ``hold`` None or 0 returns the scores unchanged.
    """
    s = np.asarray(score, dtype=np.float64)
    if not hold:
        return s.copy()
    filled = np.where(np.isnan(s), -np.inf, s)
    padded = np.concatenate((np.full(int(hold), -np.inf), filled))
    prev_max = np.lib.stride_tricks.sliding_window_view(padded[:-1], int(hold)).max(axis=1)
    out = np.where(filled > prev_max, s, 0.0)
    return np.where(np.isnan(s), np.nan, out)
